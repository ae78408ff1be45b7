"""Validated-candle cache: a file unchanged since the last load is not parsed or validated again,
and a file that only grew by appended rows has only its new rows parsed and validated.

:func:`features.loaders.load_market` with ``cache=`` returns frames equal (``DataFrame.equals``,
dtypes, index, warnings and flags) to the uncached load; everything after the per-file read —
the future-row and as-of cuts, gap reports, the hourly/daily check's verdict — runs as before.

**Which file identity is trusted.** A source is taken as unchanged when its ``os.stat`` size,
``mtime_ns``, ``ctime_ns``, inode and device all equal those recorded when it was cached. Any
write changes ``mtime`` and ``ctime``; restoring ``mtime`` (``touch -d``) changes ``ctime``,
which no ordinary user can set; replacing the file (``rename``, re-download) changes the inode.
Like git's "racy" index entries, a file modified within :data:`RACY_NS` of being cached (a
later write in the same clock tick could leave its stamps unchanged) is re-hashed before it is
trusted. Otherwise the source content is read (gzip decompressed) and its SHA-256 compared:

- same bytes as cached (re-written or re-compressed unchanged): the cached frame is used;
- the cached bytes are an exact prefix, ending at a line end, and the file is CSV (plain or
  gzip): a clean append. Only the new lines are parsed (under the cached header) and checked
  against every rule of :mod:`features.validation` (:mod:`features.candle_tail`); rules
  spanning rows hold across the boundary because the first new stamp must be later than the
  last cached one (sorted and unique). On *any* failure the whole file is re-read by the
  normal loader, so errors name the real file, line and rule exactly as without the cache;
- anything else (edited, truncated, rows inserted, replaced, Parquet changed): full re-read.

Files with columns beyond the documented ones, or that fail, are not cached (read as before).

Hourly/daily consistency (:mod:`features.consistency`) is decided per UTC day, so the cache keeps,
per hourly/daily pair, the compared-day count and the failing days before a boundary day that
no append can change, and computes only the days from there on; the verdict (warning or error,
its counts and first failing day) comes from the same :func:`features.consistency.judge`.

**gzip.** Appending a gzip member is legal but rare; producers usually rewrite the file. Both
cases are handled alike because identity is checked on the *decompressed* content: the file is
decompressed (cheap next to parsing) and only the lines past the cached prefix are parsed.

**Residual risk.** With the default stat check, a file whose bytes were changed while size,
``mtime_ns``, ``ctime_ns``, inode and device all stayed equal (a tampered clock plus raw disk
writes, a file system that does not update stamps) would be served from the cache. Entries
are written atomically but not fsync-ed (~6 ms each, 12 s a day at 2,000 files); the index
is. A damaged entry is refused and rebuilt when it is missing, short, of another shape or its
first or last stamp differs from the index (a file lost or zero-filled by a crash), not when a
bit flips inside a value or a crash loses a page in its middle. ``verify=True`` (config
``data.cache.verify``) hashes every source file whole and every entry on each load, closing
both for the price of reading them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import pandas as pd
import pyarrow.parquet as pq

from features import candle_pairs
from features.candle_store import FORMAT, Store
from features.candle_tail import appended_rows
from features.consistency import check_hourly_against_daily
from features.rawfiles import FILE_ERRORS
from features.validation import SPECS, DataValidationError

__all__ = ["RACY_NS", "CandleCache"]

RACY_NS = 2_000_000_000  # stamps closer than this to the caching time are not trusted alone
_log = logging.getLogger(__name__)


_RECORD = frozenset({"kind", "positive", "stat", "racy", "sha", "consumed", "terminated",
                     "raw_size", "entry", "entry_sha", "offset", "first", "last", "rows",
                     "columns", "lineage"})


@dataclass
class _Used:
    """A cached source as this process loaded it (for the hourly/daily pair state)."""

    lineage: str  # unchanged across clean appends: rows[:n] of one lineage never change
    frame: pd.DataFrame


@dataclass
class _Keep:
    """A source as read for caching: key, stat identity, content (decompressed), rules."""

    key: str
    ident: list[int]
    content: bytes
    kind: str
    positive: bool

    def raw_size(self) -> int:
        """The size ``data.max_file_mb`` is compared with (:func:`features.rawfiles.
        read_table`): content bytes, or for Parquet its row groups' uncompressed size."""
        if not self.key.endswith(".parquet"):
            return len(self.content)
        meta = pq.ParquetFile(io.BytesIO(self.content)).metadata
        return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def _sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


class CandleCache:
    """Validated frames of raw market files, kept under ``directory``.

    Parameters
    ----------
    directory : path
        Cache directory (created on first write); default config: ``outputs/cache/candles``.
    verify : bool
        Hash every source file and cache entry on each load instead of trusting the file's
        stat identity (see the module docstring).

    Attributes
    ----------
    stats : Counter
        How each file was served in this object's lifetime: ``hit``, ``same_content``,
        ``append``, ``full``, ``uncached``; and ``pair_memo``, ``pair_partial``, ``pair_full``
        for the hourly/daily check.
    """

    def __init__(self, directory: Path | str, verify: bool = False) -> None:
        self.store = Store(directory)
        self.verify = verify
        self.stats: Counter[str] = Counter()
        self._index: dict[str, Any] | None = None
        self._files: dict[str, Any] = {}
        self._pairs: dict[str, Any] = {}
        self._used: dict[str, _Used] = {}

    @property
    def index(self) -> dict[str, Any]:
        if self._index is None:
            self._index = self.store.read_index()
        return self._index

    # -- one file ----------------------------------------------------------------------------
    def load(self, path: Path, kind: str, full_read: Callable[[Path], pd.DataFrame],
             max_file_mb: float | None, prices_positive: bool = True) -> pd.DataFrame:
        """The validated frame of ``path``, as ``full_read(path)`` (the normal loader) returns it.

        ``full_read`` runs whenever the cache cannot prove the answer, so its errors and
        results are the reference; ``kind`` and ``prices_positive`` select the rules of the
        appended rows, ``max_file_mb`` the size guard a cached file must still pass.
        """
        key = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError:
            return self._uncached(path, full_read)
        info = self.index["files"].get(key)
        if not (isinstance(info, dict) and info.keys() >= _RECORD
                and (info["kind"], info["positive"]) == (kind, prices_positive)):
            info = None  # absent, damaged, or cached under other rules
        limit = None if max_file_mb is None else int(max_file_mb * 1e6)
        if limit is not None and (st.st_size > limit
                                  or (info is not None and info["raw_size"] > limit)):
            return self._uncached(path, full_read)  # raises file_too_large as without a cache
        ident = _identity(st)
        if (info is not None and info["stat"] == ident and not self.verify
                and not info["racy"]):
            frame = self._entry(info, kind)
            if frame is not None:
                self.stats["hit"] += 1
                self._used[key] = _Used(info["lineage"], frame)
                return frame
        content = self._content(path, limit)
        if content is None:
            return self._uncached(path, full_read)
        keep = _Keep(key, ident, content, kind, prices_positive)
        if info is not None and self._extends(info, content):
            frame = self._entry(info, kind)
            if frame is not None and len(content) == info["consumed"]:
                self.stats["same_content"] += 1
                return self._keep(keep, frame, info)
            if frame is not None and not path.name.endswith(".parquet"):
                grown = self._append(path, frame, content, info["consumed"], kind,
                                     prices_positive)
                if grown is not None and _identity(os.stat(path)) == ident:
                    self.stats["append"] += 1
                    return self._keep(keep, grown, info)
        frame = full_read(path)
        if _identity(os.stat(path)) != ident:  # changed while being read: use, don't keep
            self.stats["uncached"] += 1
            return frame
        self.stats["full"] += 1
        return self._keep(keep, frame, None)

    def _uncached(self, path: Path, full_read: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
        self.stats["uncached"] += 1
        return full_read(path)

    def _content(self, path: Path, limit: int | None) -> bytes | None:
        """The bytes the loader parses (gzip decompressed); None if unreadable or too large
        (the normal loader then raises the right error)."""
        try:
            if path.name.endswith(".gz"):
                with gzip.open(path, "rb") as fh:
                    data = fh.read() if limit is None else fh.read(limit + 1)
            else:
                data = path.read_bytes()
        except FILE_ERRORS:
            return None
        return None if limit is not None and len(data) > limit else data

    def _extends(self, info: dict[str, Any], content: bytes) -> bool:
        """True when the cached bytes are an exact, line-terminated prefix of ``content``."""
        n = info["consumed"]
        if len(content) < n or (len(content) > n and not info["terminated"]):
            return False
        return _sha(memoryview(content)[:n]) == info["sha"]

    def _entry(self, info: dict[str, Any], kind: str) -> pd.DataFrame | None:
        frame = self.store.read_entry(info["entry"], info, _index_name(kind))
        if frame is not None and self.verify:
            try:
                data = (self.store.entries / info["entry"]).read_bytes()
            except OSError:
                return None
            if _sha(data) != info["entry_sha"]:
                return None
        return frame

    def _append(self, path: Path, cached: pd.DataFrame, content: bytes, consumed: int,
                kind: str, prices_positive: bool) -> pd.DataFrame | None:
        """``cached`` plus the validated rows after byte ``consumed``; None on any doubt."""
        try:
            return self._grow(path, cached, content, consumed, kind, prices_positive)
        except Exception:  # any surprise: the normal loader decides instead
            return None

    def _grow(self, path: Path, cached: pd.DataFrame, content: bytes, consumed: int,
              kind: str, prices_positive: bool) -> pd.DataFrame | None:
        header = content[: content.find(b"\n") + 1]
        new = appended_rows(header, content[consumed:], cached, kind, prices_positive)
        return None if new is None else pd.concat([cached, new])

    def _keep(self, keep: _Keep, frame: pd.DataFrame,
              base: dict[str, Any] | None) -> pd.DataFrame:
        """Record ``frame`` as the validated content ``keep.content`` of ``keep.key``; return
        it. ``base``: the cached record it equals or grew from (its lineage goes on)."""
        if not _cacheable(frame, keep.kind):
            self.stats["uncached"] += 1
            return frame
        sha = _sha(keep.content)
        if base is not None and base["sha"] == sha and base["rows"] == len(frame):
            entry = base["entry"]
            written = {k: base[k] for k in ("entry_sha", "offset", "first", "last")}
        else:
            entry = _sha(f"{FORMAT}|{keep.kind}|{keep.positive}|{sha}".encode())[:40] + ".npy"
            try:
                written = self.store.write_entry(entry, frame)
            except OSError as err:
                _log.warning("candle cache: could not write %s (%s); not cached", entry, err)
                return frame
        lineage = base["lineage"] if base is not None else uuid.uuid4().hex
        content = keep.content
        record = {"kind": keep.kind, "positive": keep.positive, "stat": keep.ident,
                  "racy": time.time_ns() - max(keep.ident[1], keep.ident[2]) < RACY_NS,
                  "sha": sha, "consumed": len(content), "terminated": content.endswith(b"\n"),
                  "raw_size": keep.raw_size(), "entry": entry, **written,
                  "rows": len(frame), "columns": list(map(str, frame.columns)),
                  "lineage": lineage}
        self._files[keep.key] = record
        self.index["files"][keep.key] = record
        self._used[keep.key] = _Used(lineage, frame)
        return frame

    # -- hourly against daily ----------------------------------------------------------------
    def check_pair(self, hourly: pd.DataFrame, daily: pd.DataFrame, hourly_path: Path,
                   daily_path: Path) -> str | None:
        """:func:`features.consistency.check_hourly_against_daily`, comparing only the days
        that the pair's stored state does not cover (:mod:`features.candle_pairs`)."""
        h_key, d_key = os.path.abspath(hourly_path), os.path.abspath(daily_path)
        h, d = self._used.get(h_key), self._used.get(d_key)
        if h is None or d is None:
            self.stats["pair_uncached"] += 1
            return check_hourly_against_daily(hourly, daily, hourly_path, daily_path)
        pair = f"{h_key}|{d_key}"
        state = self._pairs.get(pair) or self.index["pairs"].get(pair)
        verdict, state, how = candle_pairs.check(
            state if isinstance(state, dict) else None,
            candle_pairs.Side(h.lineage, h.frame, hourly, hourly_path),
            candle_pairs.Side(d.lineage, d.frame, daily, daily_path))
        if how != "pair_memo":  # a replayed verdict leaves the state as it is
            self._pairs[pair] = state
        self.stats[how] += 1
        if isinstance(verdict, DataValidationError):
            raise verdict
        return verdict

    # -- end of a load -----------------------------------------------------------------------
    def save(self) -> None:
        """Merge what this load learnt into the index on disk (a failure only costs a re-read)."""
        if not (self._files or self._pairs):
            return
        try:
            self.store.merge_index(self._files, self._pairs)
        except (OSError, filelock.Timeout) as err:
            _log.warning("candle cache: index not written (%s); next load re-reads", err)
            return
        self.index["pairs"].update(self._pairs)
        self._files, self._pairs = {}, {}


def _index_name(kind: str) -> str:
    return "timestamp" if kind == "hourly" else "date"


def _cacheable(frame: pd.DataFrame, kind: str) -> bool:
    """Only frames the store rebuilds exactly: float64 columns of the spec, ns stamps."""
    spec = SPECS[kind]
    return (str(frame.index.dtype) == "datetime64[ns]" and frame.index.name == _index_name(kind)
            and len(frame) > 0
            and all(c in (*spec.required, *spec.optional) for c in frame.columns)
            and all(str(t) == "float64" for t in frame.dtypes))

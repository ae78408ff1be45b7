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
trusted. A file whose writer left append receipts (:mod:`features.append_receipts`) that link
the identity it was cached at to its current one is read from its cached length on only
(:meth:`CandleCache.prepare`). Otherwise the source content is read (gzip decompressed) and
its BLAKE3 digest compared (:func:`features.candle_records.digest`):

- same bytes as cached (re-written or re-compressed unchanged): the cached frame is used;
- the cached bytes are an exact prefix, ending at a line end, and the file is CSV (plain or
  gzip): a clean append. Only the new lines are parsed (under the cached header) and checked
  against every rule of :mod:`features.validation` (:mod:`features.candle_tail`); rules
  spanning rows hold across the boundary because the first new stamp must be later than the
  last cached one (sorted and unique). On *any* failure the whole file is re-read by the
  normal loader, so errors name the real file, line and rule exactly as without the cache.
  :meth:`CandleCache.prepare` (called by the loader before the files are loaded) reads and
  hashes every such file (in :data:`READERS` threads), parses the new lines of all files of
  one kind and header in one call, and writes each grown file's new rows into the room of its
  entry (:meth:`features.candle_store.Store.grow_in_place`) or, where there is none, a new
  entry from the old one and the new rows (:meth:`~features.candle_store.Store.write_grown`);
  a file then uses those rows only while its stat identity and index record are still those
  seen there, and otherwise (or when its rows failed) is decided alone as described;
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
are written atomically, and appended rows into an entry's room, but neither is fsync-ed (~6 ms
a file, 12 s a day at 2,000 files); the index is. A damaged entry is refused and rebuilt when
it is missing, short, of another shape or its first or last stamp differs from the index (a
file lost or zero-filled by a crash, appended rows lost), not when a bit flips inside a value
or a crash loses a page in its middle. ``verify=True`` (config
``data.cache.verify``) hashes every source file whole and every entry on each load, closing
both for the price of reading them. Only a verifying load records an entry's hash (a default
load never reads it: hashing a new version of every entry, 1.3 GB at 1,000 assets, cost
~0.8 s of CPU a day with SHA-256, ~0.3 s at BLAKE3's rate), and an entry grown in place has
none; an entry without one is not trusted by a verifying load, which re-reads its source once
and records the hash.
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import blake3
import filelock
import numpy as np
import pandas as pd

from features import candle_pairs
from features.append_receipts import Receipt
from features.append_receipts import chain as receipts_chain
from features.candle_records import Keep, Ready, Used, digest, identity
from features.candle_store import Store
from features.candle_tail import appended_blocks
from features.consistency import check_hourly_against_daily
from features.rawfiles import FILE_ERRORS
from features.validation import SPECS, DataValidationError

__all__ = ["RACY_NS", "CandleCache"]

RACY_NS = 2_000_000_000  # stamps closer than this to the caching time are not trusted alone
# Threads that read and hash grown files and write their rows (prepare), and that write new
# entries behind the load: hashing, reading and writing release the GIL (a 1,000-asset daily
# append: 2,000 grown files, 2 GB re-hashed).
THREADS = max(1, min(4, os.cpu_count() or 1))
# Threads that read and hash the grown files in prepare(): at least 4 whatever the cores, so
# that reads stay in flight while other threads hash (a cold read of 1.8 GiB of sources on a
# 2-core machine: 1.0 GiB/s with 2 readers, 1.3 GiB/s with 4; benchmarks/README.md).
READERS = max(4, THREADS)
_log = logging.getLogger(__name__)


_RECORD = frozenset({"kind", "positive", "stat", "racy", "digest", "consumed", "terminated",
                     "raw_size", "entry", "entry_digest", "offset", "capacity", "first", "last",
                     "rows", "columns", "lineage"})


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
        ``append`` (of which ``prepared``: new rows parsed by :meth:`prepare`; ``in_place``:
        rows written there into the room of the file's entry; ``receipt``: files whose new
        bytes prepare read on the word of their append receipts), ``full``,
        ``uncached``; and ``pair_memo``, ``pair_partial``, ``pair_full``
        for the hourly/daily check.
    """

    def __init__(self, directory: Path | str, verify: bool = False) -> None:
        self.store = Store(directory)
        self.verify = verify
        self.stats: Counter[str] = Counter()
        self._index: dict[str, Any] | None = None
        self._files: dict[str, Any] = {}
        self._pairs: dict[str, Any] = {}
        self._used: dict[str, Used] = {}
        self._ready: dict[str, Ready] = {}
        # entries being written behind the load: source key -> (its record, the write)
        self._pending: dict[str, tuple[dict[str, Any], Future[dict[str, Any]]]] = {}
        self._writer: ThreadPoolExecutor | None = None

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
        ready = self._ready.pop(key, None)
        try:
            st = os.stat(path)
        except OSError:
            return self._uncached(path, full_read)
        info = self._record(key, kind, prices_positive)
        limit = None if max_file_mb is None else int(max_file_mb * 1e6)
        if limit is not None and (st.st_size > limit
                                  or (info is not None and info["raw_size"] > limit)):
            return self._uncached(path, full_read)  # raises file_too_large as without a cache
        ident = identity(st)
        if (info is not None and info["stat"] == ident and not self.verify
                and not info["racy"]):
            block = self._block(info)
            if block is not None:
                frame = self._frame(block, info, kind)
                self.stats["hit"] += 1
                self._used[key] = Used(info["lineage"], frame, block)
                return frame
        if ready is not None and ready.keep.ident == ident and ready.info is info:
            # parsed by prepare(): the file has not changed since
            if ready.grown is not None:  # and its grown entry written there
                name, written, block = ready.grown
                self.stats["append"] += 1
                self.stats["prepared"] += 1
                return self._keep(ready.keep, self._frame(block, info, kind), info, block,
                                  (name, written))
            old = self._block(info)
            if old is not None:
                block = np.concatenate([old, ready.block], axis=1)
                self.stats["append"] += 1
                self.stats["prepared"] += 1
                return self._keep(ready.keep, self._frame(block, info, kind), info, block)
        content = self._content(path, limit)
        if content is None:
            return self._uncached(path, full_read)
        known = self._extends(info, content) if info is not None else None
        keep = Keep.of(key, ident, content, kind, prices_positive, known)
        if known is not None and info is not None:
            old = self._block(info)
            if old is not None and len(content) == info["consumed"]:
                self.stats["same_content"] += 1
                return self._keep(keep, self._frame(old, info, kind), info, old)
            if old is not None and not path.name.endswith(".parquet"):
                new = self._append(content, info, kind, prices_positive)
                if new is not None and identity(os.stat(path)) == ident:
                    block = np.concatenate([old, new], axis=1)
                    self.stats["append"] += 1
                    return self._keep(keep, self._frame(block, info, kind), info, block)
        frame = full_read(path)
        if identity(os.stat(path)) != ident:  # changed while being read: use, don't keep
            self.stats["uncached"] += 1
            return frame
        self.stats["full"] += 1
        return self._keep(keep, frame, None)

    def lineage(self, path: Path, frame: pd.DataFrame) -> str | None:
        """The lineage of ``frame`` as :meth:`load` just returned it for ``path`` (rows
        ``[:n]`` of one lineage never change: :class:`features.candle_records.Used`); None
        when it was not served from or kept in the cache."""
        used = self._used.get(os.path.abspath(path))
        return used.lineage if used is not None and used.frame is frame else None

    def _record(self, key: str, kind: str, positive: bool) -> dict[str, Any] | None:
        """The index record of ``key``; None if absent, damaged, or cached under other rules."""
        if key in self._pending:  # loaded before in this object's life: its entry written first
            self._settle(key)
        info = self.index["files"].get(key)
        if not (isinstance(info, dict) and info.keys() >= _RECORD
                and (info["kind"], info["positive"]) == (kind, positive)):
            return None
        return info

    # -- all files' appended rows at once ----------------------------------------------------
    def prepare(self, files: list[tuple[Path, str, bool]], max_file_mb: float | None,
                receipts: dict[str, list[Receipt]] | None = None) -> None:
        """Parse the rows appended since caching to each of ``files`` (path, kind,
        prices_positive), one parse for all files of one kind and header
        (:func:`features.candle_tail.appended_blocks`). ``receipts``: the data directory's
        append receipts by absolute path (:func:`features.append_receipts.read`); a file
        they prove only grew is read from its cached length on, not read and hashed whole.

        Only a speed-up: :meth:`load` uses a file's prepared rows (and the grown entry written
        here) when its stat identity and index record are still those seen here, and
        otherwise (or when the rows failed a rule or were not prepared) decides alone, as
        without this call.
        """
        limit = None if max_file_mb is None else int(max_file_mb * 1e6)
        _ = self.index  # read once, before the threads look records up

        receipts = {} if receipts is None or self.verify else receipts

        def grown(item: tuple[Path, str, bool]) -> tuple[Ready, bytes, bytes] | None:
            try:
                return self._grown(Path(item[0]), item[1], item[2], limit, receipts)
            except Exception:  # any surprise: load() decides alone
                return None

        with ThreadPoolExecutor(READERS) as pool:  # reading and hashing release the GIL
            found_all = list(pool.map(grown, files))
        groups: dict[tuple[str, bool, bytes, tuple[str, ...]], list[tuple[Ready, bytes]]] = {}
        for found in found_all:
            if found is not None:
                ready, header, tail = found
                self.stats["receipt"] += ready.keep.digest is None
                group = (ready.keep.kind, ready.keep.positive, header,
                         tuple(ready.info["columns"]))
                groups.setdefault(group, []).append((ready, tail))
        for (kind, positive, header, columns), items in groups.items():
            try:
                blocks = appended_blocks(header, [t for _, t in items],
                                         [r.info["last"] for r, _ in items], list(columns),
                                         kind, positive)
            except Exception:  # any surprise: load() decides file by file
                continue
            for (ready, _), block in zip(items, blocks, strict=True):
                if block is not None:
                    ready.block = block
                    self._ready[ready.keep.key] = ready
        # Each grown file's new rows written into its entry's room (in place), else a new
        # entry written by the threads from its mapped old entry and its new rows
        # (Store.write_grown): load() then maps it instead of joining the two in memory. A
        # file that changes before load() leaves what was written here unused (a new entry
        # is collected after its grace period); one that fails is grown by load() as
        # without this step.
        readies = list(self._ready.values())
        if readies and not self.verify:  # a verifying load hashes whole entries: new ones
            self._grow_in_place(readies)
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(self._grow, [r for r in readies if r.grown is None]))

    def _grow_in_place(self, readies: list[Ready]) -> None:
        """Write the new rows of each of ``readies`` into the room of its entry, where the
        room is unused: the index's extent of the entry (read, as the new extents are
        written, under the index lock) is the rows of the record the rows follow."""
        done: list[tuple[Ready, tuple[dict[str, Any], np.ndarray | None] | None]] = []
        try:
            with self.store.locked():
                index = self.store.read_index()
                extents = index["extents"]
                fits = [r for r in readies
                        if extents.get(r.info["entry"], r.info["rows"]) == r.info["rows"]]

                def grow(ready: Ready) -> tuple[dict[str, Any], np.ndarray | None] | None:
                    try:
                        return self.store.grow_in_place(ready.info["entry"], ready.info,
                                                        ready.block)
                    except Exception as err:  # a speed-up: a new entry is written instead
                        _log.debug("candle cache: %s not grown in place (%s)",
                                   ready.keep.key, err)
                        return None

                with ThreadPoolExecutor(THREADS) as pool:
                    done = list(zip(fits, pool.map(grow, fits), strict=True))
                for ready, result in done:
                    if result is not None:  # extents only grow, even if the rows go unused
                        extents[ready.info["entry"]] = ready.info["rows"] + ready.block.shape[1]
                if any(result is not None for _, result in done):
                    self.store.write_index(index)
        except (OSError, filelock.Timeout) as err:  # the rows written stay unused
            _log.warning("candle cache: appended rows not written in place (%s)", err)
            return
        for ready, result in done:
            if result is not None and result[1] is not None:
                ready.grown = (ready.info["entry"], *result)
                self.stats["in_place"] += 1

    def _grow(self, ready: Ready) -> None:
        try:
            old = self._block(ready.info)
            if old is None:
                return
            name = _entry_name(ready.keep)
            written, block = self.store.write_grown(name, old, ready.block, self.verify)
        except Exception as err:  # the cache is a speed-up: load() decides alone
            _log.debug("candle cache: grown entry of %s not written (%s)", ready.keep.key, err)
            return
        if block is not None:
            ready.grown = (name, written, block)

    def _uncached(self, path: Path, full_read: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
        self.stats["uncached"] += 1
        return full_read(path)

    def _grown(self, path: Path, kind: str, positive: bool, limit: int | None,
               receipts: dict[str, list[Receipt]]) -> tuple[Ready, bytes, bytes] | None:
        """For :meth:`prepare`: a cached CSV file that only grew by appended lines, with its
        header and those lines (not yet parsed); None for any other file."""
        key = os.path.abspath(path)
        info = self._record(key, kind, positive)
        if info is None or key.endswith(".parquet") or not info["terminated"]:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        ident = identity(st)
        if limit is not None and (st.st_size > limit or info["raw_size"] > limit):
            return None  # refused: load() decides
        # the entry's pages load() reads first, all files' at once (a daily file: all of it,
        # the features read every row; an hourly one: its first and last stamps)
        self.store.prefetch(info, whole=kind != "hourly")
        if info["stat"] == ident and not self.verify and not info["racy"]:
            return None  # a hit: load() decides
        if key in receipts and not info["racy"]:
            found = self._receipted(path, key, info, ident, receipts[key], limit)
            if found is not None:
                return found
        if path.name.endswith(".gz"):
            content: bytes | bytearray | None = self._content(path, limit)
            size = 0 if content is None else len(content)
        else:  # read into this thread's buffer: a new 2 MB object a file cost its page faults
            content, size = _read_reused(path, limit)
        if content is None or size <= info["consumed"]:
            return None
        view = memoryview(content)[:size]
        try:
            known = self._extends(info, view)
        finally:
            view.release()
        if known is None:
            return None
        keep = Keep(key, ident, kind, positive, known, size, content[size - 1] == ord("\n"), size)
        ready = Ready(keep, info, np.empty((0, 0), dtype="int64"))
        return (ready, bytes(content[: content.find(b"\n", 0, size) + 1]),
                bytes(content[info["consumed"]:size]))

    def _receipted(self, path: Path, key: str, info: dict[str, Any], ident: list[int],
                   receipts: list[Receipt], limit: int | None
                   ) -> tuple[Ready, bytes, bytes] | None:
        """:meth:`_grown` for a file whose append receipts link the identity it was cached at
        to its current one: only the bytes past the cached ones are read (a gzip file is
        decompressed whole, not hashed). None when they do not, or when the file changed
        within :data:`RACY_NS` (its stamps may not tell two writes apart: hashed instead)."""
        added = receipts_chain(receipts, info["stat"], ident)
        if added is None or added <= 0 or time.time_ns() - max(ident[1], ident[2]) < RACY_NS:
            return None
        size = info["consumed"] + added
        if limit is not None and size > limit:
            return None
        if path.name.endswith(".gz"):
            content = self._content(path, limit)
            if content is None or len(content) != size:
                return None
            header = content[: content.find(b"\n") + 1]
            tail = content[info["consumed"]:]
        else:
            if ident[0] != size:
                return None
            try:
                with open(path, "rb") as handle:
                    header = handle.readline()
                    handle.seek(info["consumed"])
                    tail = handle.read(added + 1)
            except OSError:
                return None
            if len(tail) != added:
                return None
        if not header.endswith(b"\n"):
            return None
        keep = Keep(key, ident, info["kind"], info["positive"], None, size,
                    tail.endswith(b"\n"), size)
        return Ready(keep, info, np.empty((0, 0), dtype="int64")), header, tail

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

    def _extends(self, info: dict[str, Any], content: bytes | memoryview) -> str | None:
        """The digest of ``content`` when the cached bytes are an exact, line-terminated
        prefix of it, else None (one pass over the bytes: the prefix's digest goes on)."""
        n = info["consumed"]
        if info["digest"] is None:  # grown by append receipts: its old bytes never hashed
            return None
        if len(content) < n or (len(content) > n and not info["terminated"]):
            return None
        hashed = blake3.blake3(memoryview(content)[:n])
        if hashed.hexdigest() != info["digest"]:
            return None
        hashed.update(memoryview(content)[n:])
        return hashed.hexdigest()

    def _block(self, info: dict[str, Any]) -> np.ndarray | None:
        """The cached entry's block (:meth:`Store.read_block`; with ``verify`` also hashed)."""
        block = self.store.read_block(info["entry"], info)
        if block is not None and self.verify:
            try:
                data = self.store.path(info["entry"]).read_bytes()
            except OSError:
                return None
            if info["entry_digest"] is None or digest(data) != info["entry_digest"]:
                return None
        return block

    def _frame(self, block: np.ndarray, info: dict[str, Any], kind: str) -> pd.DataFrame:
        return self.store.frame(block, info["columns"], _index_name(kind))

    def _append(self, content: bytes, info: dict[str, Any], kind: str,
                prices_positive: bool) -> np.ndarray | None:
        """The validated rows after the cached bytes as a block; None on any doubt."""
        try:
            header = content[: content.find(b"\n") + 1]
            return appended_blocks(header, [content[info["consumed"]:]], [info["last"]],
                                   list(info["columns"]), kind, prices_positive)[0]
        except Exception:  # any surprise: the normal loader decides instead
            return None

    def _keep(self, keep: Keep, frame: pd.DataFrame, base: dict[str, Any] | None,
              block: np.ndarray | None = None,
              written: tuple[str, dict[str, Any]] | None = None) -> pd.DataFrame:
        """Record ``frame`` as the validated content of ``keep.key``; return it. ``base``: the
        cached record it equals or grew from (its lineage goes on); ``block``: its entry
        block when already built (then the frame is over it, cacheable by construction);
        ``written``: its entry's name and what writing it returned, when already written."""
        if block is None and not _cacheable(frame, keep.kind):
            self.stats["uncached"] += 1
            return frame
        lineage = base["lineage"] if base is not None else uuid.uuid4().hex
        record = {"kind": keep.kind, "positive": keep.positive, "stat": keep.ident,
                  "racy": time.time_ns() - max(keep.ident[1], keep.ident[2]) < RACY_NS,
                  "digest": keep.digest, "consumed": keep.size, "terminated": keep.terminated,
                  "raw_size": keep.raw_size, "rows": len(frame),
                  "columns": list(map(str, frame.columns)), "lineage": lineage}
        self._used[keep.key] = Used(lineage, frame, block)
        if (base is not None and keep.digest is not None and base["digest"] == keep.digest
                and base["rows"] == len(frame)):
            record |= {k: base[k]
                       for k in ("entry", "entry_digest", "offset", "capacity", "first", "last")}
            self._files[keep.key] = record
            self.index["files"][keep.key] = record
            return frame
        if written is not None:
            record |= {"entry": written[0], **written[1]}
            self._files[keep.key] = record
            self.index["files"][keep.key] = record
            return frame
        # A new entry: written by a thread behind the load (the frame is already in memory),
        # recorded once written (_settle). The loader never changes a frame it loaded, and
        # load_market's save() waits for every write before it returns the frames, so no
        # caller can change one while its entry is written. A failed write leaves the file
        # uncached (the next load reads it again).
        record["entry"] = _entry_name(keep)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(THREADS, thread_name_prefix="candle-cache")
        self._pending[keep.key] = (record, self._writer.submit(
            self.store.write_entry, record["entry"], frame, block, self.verify))
        return frame

    def _settle(self, key: str) -> None:
        """Wait for the entry of ``key`` being written; record it, or log why not."""
        record, write = self._pending.pop(key)
        try:
            record |= write.result()
        except Exception as err:  # the cache is a speed-up: a failed write never fails a load
            _log.warning("candle cache: could not write %s (%s); not cached", record["entry"],
                         err)
            return
        self._files[key] = record
        self.index["files"][key] = record

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
            candle_pairs.Side(h.lineage, h.frame, hourly, hourly_path, h.block),
            candle_pairs.Side(d.lineage, d.frame, daily, daily_path, d.block))
        if how != "pair_memo":  # a replayed verdict leaves the state as it is
            self._pairs[pair] = state
        self.stats[how] += 1
        if isinstance(verdict, DataValidationError):
            raise verdict
        return verdict

    # -- end of a load -----------------------------------------------------------------------
    def save(self) -> None:
        """Merge what this load learnt into the index on disk (a failure only costs a re-read),
        once the entries being written are."""
        for key in list(self._pending):
            self._settle(key)
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
        if not (self._files or self._pairs):
            return
        try:
            self.store.merge_index(self._files, self._pairs)
        except (OSError, filelock.Timeout) as err:
            _log.warning("candle cache: index not written (%s); next load re-reads", err)
            return
        self.index["pairs"].update(self._pairs)
        self._files, self._pairs = {}, {}


_THREAD = threading.local()


def _read_reused(path: Path, limit: int | None) -> tuple[bytearray | None, int]:
    """(buffer, size): the bytes of the plain file ``path`` in this thread's reused buffer
    (its first ``size`` bytes), or (None, 0) if unreadable or larger than ``limit``."""
    buf: bytearray = getattr(_THREAD, "buffer", None) or bytearray(1 << 20)
    size = 0
    try:
        with open(path, "rb", buffering=0) as fh:
            while True:
                if size == len(buf):
                    buf.extend(bytes(len(buf)))  # no view of it is alive here
                with memoryview(buf) as view:
                    got = fh.readinto(view[size:])
                if not got:
                    break
                size += got
                if limit is not None and size > limit:
                    return None, 0
    except FILE_ERRORS:
        return None, 0
    finally:
        _THREAD.buffer = buf
    return buf, size


def _entry_name(keep: Keep) -> str:
    """A new entry's name: random, never reused (an entry grows in place, so two entries of
    one content may hold different rows later)."""
    return uuid.uuid4().hex + ".npy"


def _index_name(kind: str) -> str:
    return "timestamp" if kind == "hourly" else "date"


def _cacheable(frame: pd.DataFrame, kind: str) -> bool:
    """Only frames the store rebuilds exactly: float64 columns of the spec, ns stamps."""
    spec = SPECS[kind]
    return (str(frame.index.dtype) == "datetime64[ns]" and frame.index.name == _index_name(kind)
            and len(frame) > 0
            and all(c in (*spec.required, *spec.optional) for c in frame.columns)
            and all(str(t) == "float64" for t in frame.dtypes))

r"""Each day's worst hourly losses, kept between serves so that a daily serve computes only the
days it has not seen.

The covered loss of a row (:func:`features.losses.hourly_worst_losses`) is the maximum, over
the :math:`U` days of the update interval, of each day's worst loss over the windows of
:math:`H` hours that end in that day. A day's worst loss reads the hourly closes of that day
and those of the :math:`H` traded candles before its first one, at most :math:`H + B` hours
earlier (:math:`B` = ``features.outage_bridge_hours``), nothing else. The stress floor looks
back ten years of covered losses, so a serve that recomputed every day's worst loss read every
hourly close of every asset each day: at 10,000 assets more candles than the page cache holds,
and most of the serve's features step. Here the per-day values (the worst loss of each loss
column, and the count of valid windows that the ``min_hours_for_rv`` rule reads, and the day's
hourly extremes and gap mark that tell whether its candles account for the daily range) are
stored per hourly source file and reused while they provably hold:

* **lineage.** The validated-candle cache (:mod:`features.candle_cache`) gives every cached
  file a lineage that stays the same while the file only grows by appended rows: rows
  ``[:n]`` of one lineage never change (:class:`features.candle_records.Used`). A day strictly
  before the day of a frame's last candle is final: any later candle of the lineage is
  stamped after that one. So stored days ``< day(last candle)`` are those of any later frame
  of the same lineage, and of an earlier one (a past as-of) up to the day of *its* last
  candle. A file re-read in full (edited, replaced, damaged) gets a new lineage and its days
  are computed again; a load without the cache has no lineage and computes every day.
* **the cut.** The stored values are those of the file's whole history. A serve's tail span
  may start later (:func:`features.window.trailing_market`): its first :math:`\lceil (H +
  B)/24 \rceil` days then see fewer windows (their first hours have no :math:`H` traded
  candles before them), so they are computed, never taken from the table.
* **the config.** A table is kept per liquidation delay :math:`H`, outage hours a window
  may bridge (``features.outage_bridge_hours``) and set of stored rows;
  :math:`U` and ``min_hours_for_rv`` are applied after, to the per-day values, so they are not
  part of the key. :data:`FORMAT` changes with the formula or the layout.
* **the first candle.** A source is named by its lineage *and* its first candle's stamp: a
  frame whose start was trimmed (:func:`features.window.trailing_market`) has other first
  windows than the whole history, so it neither reads nor writes the whole history's days.

A table is rewritten when a source has no usable stored days, or when the days a serve could
add to some source reach :data:`REFRESH_DAYS` (each serve in between computes at most that many
days more: ~1% of a 1,300-day history, against a 300 MB rewrite a day at 10,000 assets).

Storage, under ``directory`` (the candle cache's ``losses/``)::

    index.json            {"format", "tables": {tag: {"file", "total", "sources":
                           {source key: [lineage, first day, days, offset]}}}}
    index.lock            held while the index is read-modified-written
    <tag>-<random>.npy    float64, (stored rows + 1, total): each source's days end to end,
                          the stored rows (features.fast.stored_names: the loss columns,
                          then features.fast.EXTREMES), the last row the window counts

A table file is written whole under a new name (temporary file, fsync, rename), then named by
the index; files no longer named are deleted after :data:`GC_GRACE_S` (a reader may still be
about to map one). A table that is missing, of another shape or unreadable is treated as
absent; like the candle cache's entries, a value changed in place with the shape intact (a
bit flip) is not detected. The table only ever saves time: any failure to read or write it is
logged and the values are computed, never guessed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import numpy as np

from features.candle_store import write_atomic

_log = logging.getLogger(__name__)

FORMAT = 3  # 2: windows bridge outages, the day's hourly extremes; 3: the log of the
# extreme (not the extreme of the logs) and the gap mark
REFRESH_DAYS = 7
GC_GRACE_S = 600.0
LOCK_TIMEOUT_S = 30.0

# (hourly source key: the file's absolute path, "<cache lineage>@<first candle's stamp>")
Source = tuple[str, str]


@dataclass(frozen=True)
class Known:
    """Stored days of one source: ``values[k, i]`` is stored row ``k``'s value on day
    ``first + i`` (a loss column's worst loss, -inf: no window; or one of the day's hourly
    extremes or its gap mark, :data:`features.fast.EXTREMES`), ``counts[i]`` the day's valid
    windows."""

    first: int
    values: np.ndarray  # (columns, n)
    counts: np.ndarray  # (n,) float: whole numbers <= 24

    @property
    def end(self) -> int:
        """The day after the last stored one."""
        return self.first + self.values.shape[1]


def due(known: Mapping[int, Known], ends: Mapping[int, int]) -> bool:
    """Whether a serve should rewrite the table: a source (asset number -> the day after its
    last final day, in ``ends``) has no stored days in ``known``, or would gain at least
    :data:`REFRESH_DAYS`."""
    return any(a not in known or end - known[a].end >= REFRESH_DAYS for a, end in ends.items())


def tag(hours: int, columns: Sequence[str], bridge: int = 0) -> str:
    """The key of the table of liquidation delay ``hours``, bridged outage hours ``bridge``
    and stored rows ``columns``."""
    return f"H{hours}B{bridge}-" + hashlib.sha256(",".join(columns).encode()).hexdigest()[:12]


class LossDays:
    """The stored per-day worst losses under ``directory`` (module docstring)."""

    def __init__(self, directory: Path | str) -> None:
        self.root = Path(directory)
        self.index_path = self.root / "index.json"

    # -- reading ------------------------------------------------------------------------------
    def _index(self) -> dict[str, Any]:
        try:
            index = json.loads(self.index_path.read_bytes())
        except (OSError, ValueError):
            return {"format": FORMAT, "tables": {}}
        if not isinstance(index, dict) or index.get("format") != FORMAT \
                or not isinstance(index.get("tables"), dict):
            return {"format": FORMAT, "tables": {}}
        return index

    def _table(self, table: Any, columns: int) -> np.ndarray | None:
        """The mapped array of ``table`` (an index record), or None if it is not readable or
        not the shape the record says."""
        try:
            data = np.load(self.root / str(table["file"]), mmap_mode="r", allow_pickle=False)
            shape = (columns + 1, int(table["total"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return data if data.dtype == np.float64 and data.shape == shape else None

    def _stored(self, table: Any, columns: int) -> dict[str, tuple[str, Known]]:
        """Each source of ``table`` (an index record) -> (its lineage, its stored days); the
        records that do not fit the mapped array are left out."""
        data = self._table(table, columns) if isinstance(table, dict) else None
        records = table.get("sources") if data is not None else None
        if not isinstance(records, dict):
            return {}
        out: dict[str, tuple[str, Known]] = {}
        for key, record in records.items():
            try:
                lineage, first, n, offset = record
                n, offset = int(n), int(offset)
            except (TypeError, ValueError):
                continue
            if n > 0 and offset >= 0 and offset + n <= data.shape[1]:
                out[key] = (str(lineage), Known(int(first), data[:-1, offset:offset + n],
                                                data[-1, offset:offset + n]))
        return out

    def lookup(self, hours: int, columns: Sequence[str], sources: Mapping[int, Source],
               bridge: int = 0) -> dict[int, Known]:
        """The stored days of each of ``sources`` (asset number -> source) whose lineage is
        the stored one; the others are absent."""
        if not sources:
            return {}
        stored = self._stored(self._index()["tables"].get(tag(hours, columns, bridge)),
                              len(columns))
        return {a: stored[key][1] for a, (key, lineage) in sources.items()
                if key in stored and stored[key][0] == lineage}

    # -- writing ------------------------------------------------------------------------------
    def update(self, hours: int, columns: Sequence[str], sources: Mapping[int, Source],
               now: Mapping[int, Known], bridge: int = 0) -> bool:
        """Store ``now``: each source's final days as this serve has them (what it reused
        included); True if written. Sources of the table that this serve did not see are
        kept as they are."""
        name = tag(hours, columns, bridge)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with filelock.FileLock(self.root / "index.lock", timeout=LOCK_TIMEOUT_S):
                index = self._index()
                kept = self._stored(index["tables"].get(name), len(columns))
                for a, days in now.items():
                    key, lineage = sources[a]
                    kept[key] = (lineage, days)
                self._write(index, name, kept, len(columns))
        except (OSError, ValueError, filelock.Timeout) as err:
            _log.warning("worst-loss days not stored (%s); the next serve computes them", err)
            return False
        return True

    def _write(self, index: dict[str, Any], name: str, kept: dict[str, tuple[str, Known]],
               columns: int) -> None:
        """Write the table ``name`` holding ``kept``, then the index naming it (lock held)."""
        total = sum(days.values.shape[1] for _, days in kept.values())
        block = np.empty((columns + 1, total))
        sources: dict[str, list[Any]] = {}
        at = 0
        for key, (lineage, days) in sorted(kept.items()):
            n = days.values.shape[1]
            block[:-1, at:at + n] = days.values
            block[-1, at:at + n] = days.counts
            sources[key] = [lineage, days.first, n, at]
            at += n
        file = f"{name}-{uuid.uuid4().hex}.npy"
        header = _npy_header(block)
        write_atomic(self.root / file, (header, memoryview(block).cast("B")))
        index["tables"][name] = {"file": file, "total": total, "sources": sources}
        write_atomic(self.index_path, json.dumps(index, separators=(",", ":")).encode())
        self._collect(index)

    def _collect(self, index: dict[str, Any]) -> None:
        """Delete table files no longer named and older than :data:`GC_GRACE_S`."""
        live = {str(t.get("file")) for t in index["tables"].values() if isinstance(t, dict)}
        cutoff = time.time() - GC_GRACE_S
        for path in self.root.iterdir():
            if path.name in live or path.suffix not in {".npy", ".tmp"}:
                continue
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()


def _npy_header(block: np.ndarray) -> bytes:
    """The ``.npy`` header of ``block`` (C-ordered float64), so the table is written in one
    pass from memory."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(block))
    return buf.getvalue()

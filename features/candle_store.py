"""On-disk storage of the validated-candle cache (:mod:`features.candle_cache`).

Layout under the cache directory::

    index.json                 what is known about each source file and hourly/daily pair
    index.lock                 flock()ed while the index is read-modified-written
    entries/<digest>.arrow     one validated frame, Arrow IPC (Feather v2), uncompressed

Entries are *content-addressed*: the name is a digest of the source content they were
validated from (and of the kind, the validation settings and :data:`FORMAT`), so two processes
that cache the same file write the same bytes under the same name, and an entry is never
rewritten in place. Every write goes to a temporary file in the same directory, is flushed and
``os.replace``-d into place: a reader sees a whole file or none. The index is merged under an
exclusive ``flock`` (a second ``run``/``retrain``/``serve`` loading at the same time loses no
update); an unreadable index or entry (crash, full disk, bit rot that breaks the Arrow
framing, another version) is treated as absent and rebuilt from the source, never trusted.

Arrow IPC, memory-mapped, was chosen over Parquet because reading it is a copy out of the page
cache, with no decoding; one file per source over a consolidated dataset because the daily
append rewrites every asset anyway and per-file entries need no coordination between writers
(figures in ``benchmarks/README.md``, "Validated-candle cache").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

FORMAT = 1  # bump when the entry or index layout, or what a cached frame holds, changes
INDEX_COLUMN = "__index__"
# Unreferenced entries younger than this may belong to a process that has not yet written its
# index: they are left alone (deleting one would only cost that process a re-read).
GC_GRACE_S = 600.0


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Store:
    """The files of one cache directory (created on first write)."""

    def __init__(self, directory: Path | str) -> None:
        self.root = Path(directory)
        self.entries = self.root / "entries"
        self.index_path = self.root / "index.json"

    # -- index -------------------------------------------------------------------------------
    def read_index(self) -> dict[str, Any]:
        """The index, or an empty one when it is missing, unreadable or of another format."""
        empty: dict[str, Any] = {"format": FORMAT, "files": {}, "pairs": {}}
        try:
            index = json.loads(self.index_path.read_bytes())
        except (OSError, ValueError):
            return empty
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            return empty
        if not isinstance(index.get("files"), dict) or not isinstance(index.get("pairs"), dict):
            return empty
        return index

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock of the index between processes (released when the block ends)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "index.lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def merge_index(self, files: dict[str, Any], pairs: dict[str, Any]) -> None:
        """Add ``files``/``pairs`` to the index on disk (other keys kept as another process
        left them), write it atomically, then delete unreferenced old entries."""
        with self.locked():
            index = self.read_index()
            index["files"].update(files)
            index["pairs"].update(pairs)
            write_atomic(self.index_path, json.dumps(index, separators=(",", ":")).encode())
            self._collect(index)

    def _collect(self, index: dict[str, Any]) -> None:
        live = {f.get("entry") for f in index["files"].values()}
        cutoff = time.time() - GC_GRACE_S
        with contextlib.suppress(OSError):
            for path in self.entries.iterdir():
                if path.name in live:
                    continue
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()

    # -- entries -----------------------------------------------------------------------------
    def write_entry(self, name: str, frame: pd.DataFrame) -> str:
        """Store ``frame`` (DatetimeIndex, float64 columns) as entry ``name`` (atomic); return
        the SHA-256 of the entry file's bytes."""
        self.entries.mkdir(parents=True, exist_ok=True)
        path = self.entries / name
        arrays = [pa.array(frame.index.to_numpy(dtype="datetime64[ns]"))]
        arrays += [pa.array(frame[c].to_numpy()) for c in frame.columns]
        table = pa.Table.from_arrays(arrays, names=[INDEX_COLUMN, *map(str, frame.columns)])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        data = sink.getvalue().to_pybytes()
        # Content-addressed, so an existing entry of that name holds these bytes unless it is
        # damaged: rewriting it (atomically) costs little and repairs it.
        write_atomic(path, data)
        return hashlib.sha256(data).hexdigest()

    def read_entry(self, name: str, rows: int, columns: list[str],
                   index_name: str) -> pd.DataFrame | None:
        """Entry ``name`` as a frame, or None when it is missing or not what the index says.

        The arrays are copied out of the memory map, so the frame owns writable memory and
        outlives the file (which a concurrent clean-up may delete).
        """
        try:
            with pa.memory_map(str(self.entries / name)) as source:
                table = pa.ipc.open_file(source).read_all()
                if table.num_rows != rows or table.column_names != [INDEX_COLUMN, *columns]:
                    return None
                stamps = np.array(table.column(0).to_numpy(), dtype="datetime64[ns]")
                data = {c: np.array(table.column(i + 1).to_numpy(), dtype="float64")
                        for i, c in enumerate(columns)}
        except (OSError, pa.ArrowException, ValueError):
            return None
        index = pd.DatetimeIndex(stamps, name=index_name)
        return pd.DataFrame(data, index=index, columns=pd.Index(columns, dtype="str"),
                            copy=False)

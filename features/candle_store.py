"""On-disk storage of the validated-candle cache (:mod:`features.candle_cache`).

Layout under the cache directory::

    index.json                 what is known about each source file and hourly/daily pair
    index.lock                 locked while the index is read-modified-written
    entries/<d[:2]>/<d>.npy    one validated frame: stamps and float64 columns, one array

Entries are spread over 256 subdirectories by the first two hex digits of their name, as git
spreads its objects: a daily append writes a new entry for every grown file, and creating a
file in one directory of 2,000-4,000 entries (the live ones and those still in their grace
period) cost ~0.4-0.7 ms on the benchmark machine's ext4 against ~0.07 ms in a small one
(1.4 s of a 1,000-asset append).

Entries are *content-addressed*: the name is a digest of the source content they were
validated from (and of the kind, the validation settings and :data:`FORMAT`), so two processes
that cache the same file write the same bytes under the same name, and an entry is never
rewritten in place. Every write goes to a temporary file in the same directory, is flushed and
``os.replace``-d into place: a reader sees a whole file or none. The index is merged under an
exclusive file lock (a second ``run``/``retrain``/``serve`` loading at the same time loses no
update); an unreadable index or entry (crash, full disk, a short or damaged file, another
version) is treated as absent and rebuilt from the source, never trusted.

Storage: one uncompressed ``.npy`` file per source, memory-mapped copy-on-write. A warm load
then copies nothing: at 1,000 assets the hourly candles alone are 1.3 GB, and copying them out
of the page cache (what reading Arrow IPC or Parquet into writable pandas frames costs) took
longer than everything else of a warm load on the 2-core benchmark machine. Per-file entries
over one consolidated dataset because the daily append rewrites every asset anyway, and
per-file entries need no coordination between writers. The mapping cannot break under a
reader: entries are only ever replaced by rename (the old inode lives on while mapped); an
entry truncated *in place* by hand while a process maps it would fault that process (SIGBUS).
Figures in ``benchmarks/README.md``, "Validated-candle cache".
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import mmap
import os
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import pandas as pd

FORMAT = 3  # bump when the entry or index layout, or what a cached frame holds, changes
# Unreferenced entries younger than this may belong to a process that has not yet written its
# index: they are left alone (deleting one would only cost that process a re-read).
GC_GRACE_S = 600.0
# A merge takes milliseconds; a lock held this long belongs to a stuck process.
LOCK_TIMEOUT_S = 30.0


def write_atomic(path: Path, data: bytes | tuple[bytes | memoryview, ...],
                 durable: bool = True) -> None:
    """Write ``data`` (or its parts, in order) to ``path`` through a temporary file and a
    rename (never half-written); ``durable``: fsync before the rename (survives a power loss,
    ~6 ms a file here)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in (data,) if isinstance(data, bytes) else data:
                fh.write(part)
            if durable:
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
        self._columns: dict[tuple[str, ...], pd.Index] = {}
        self._shards: set[str] = set()

    def path(self, name: str) -> Path:
        """Where entry ``name`` is stored (its two-digit subdirectory)."""
        return self.entries / name[:2] / name

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
        """Exclusive lock of the index between processes (released when the block ends).

        Raises
        ------
        filelock.Timeout
            Another process held it for :data:`LOCK_TIMEOUT_S` (the caller skips its save).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(self.root / "index.lock", timeout=LOCK_TIMEOUT_S):
            yield

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
        """Delete old unreferenced entries, and temporary files a killed writer left."""
        live = {f.get("entry") for f in index["files"].values()}
        cutoff = time.time() - GC_GRACE_S
        stale = [p for p in self.root.iterdir() if p.name.endswith(".tmp")]
        with contextlib.suppress(OSError):
            for path in self.entries.iterdir():
                if path.is_dir():  # a shard: its files not in the index (temporaries too)
                    with contextlib.suppress(OSError):
                        stale += [p for p in path.iterdir() if p.name not in live]
                else:  # an entry of an older format, stored unsharded
                    stale.append(path)
        for path in stale:
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    # -- entries -----------------------------------------------------------------------------
    def write_entry(self, name: str, frame: pd.DataFrame, block: np.ndarray | None = None,
                    digest: bool = True) -> dict[str, Any]:
        """Store ``frame`` (DatetimeIndex, float64 columns) as entry ``name`` (atomic).

        The entry is one ``.npy`` array of int64, shape (1 + columns, rows): row 0 the stamps
        (ns since the epoch), then each column's float64 values bit for bit. Not fsync-ed (a
        crash may lose or shorten it, which :meth:`read_entry` detects); the index is.
        ``block``: that array when the caller already holds it, else built from ``frame``.
        ``digest``: hash the file (only a verifying load reads the hash).

        Returns
        -------
        dict
            ``entry_sha`` (SHA-256 of the file, None without ``digest``), ``offset`` (where
            the array starts), ``first``/``last`` (the first and last stamp, checked on every
            read).
        """
        if block is None:
            block = frame_block(frame)
        block = np.ascontiguousarray(block)
        return self._write(name, block.shape, [memoryview(block).cast("B")], digest,
                           int(block[0, 0]), int(block[0, -1]))

    def write_grown(self, name: str, old: np.ndarray, new: np.ndarray, digest: bool = True
                    ) -> tuple[dict[str, Any], np.ndarray | None]:
        """Entry ``name`` holding ``old``'s rows followed by ``new``'s — the bytes
        :meth:`write_entry` writes for the two joined — written from the two parts (each row
        of the block: its old part, then its new part) without joining them in memory.

        A daily append grows every file by a day: joining each cached block with its new rows
        copied the whole history into this process's memory (1.3 GB at 1,000 assets) before
        writing it out again. Here the old rows go from the mapped entry straight to the new
        file, and the frame is mapped from it.

        Returns
        -------
        (dict, ndarray or None)
            What :meth:`write_entry` returns, and the new entry's block mapped copy-on-write
            (None if it cannot be read back as written).
        """
        if old.shape[0] != new.shape[0] or not (old.shape[1] and new.shape[1]):
            raise ValueError(f"cannot grow a {old.shape} block by a {new.shape} one")
        shape = (old.shape[0], old.shape[1] + new.shape[1])
        parts = [memoryview(np.ascontiguousarray(row)).cast("B")
                 for pair in zip(old, new, strict=True) for row in pair]
        written = self._write(name, shape, parts, digest, int(old[0, 0]), int(new[0, -1]))
        block = self.read_block(name, {"rows": shape[1], "columns": [None] * (shape[0] - 1),
                                       **written})
        return written, block

    def _write(self, name: str, shape: tuple[int, ...], parts: list[memoryview], digest: bool,
               first: int, last: int) -> dict[str, Any]:
        """Write an int64 block of ``shape`` whose bytes are ``parts`` (in order) as entry
        ``name``: the ``.npy`` header, then the bytes, what ``np.save`` writes without its
        copies of the array (~1.3 MB an hourly file)."""
        target = self.path(name)
        if target.parent.name not in self._shards:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._shards.add(target.parent.name)
        sink = io.BytesIO()
        np.lib.format.write_array_header_1_0(sink, {
            "descr": np.lib.format.dtype_to_descr(np.dtype("int64")), "fortran_order": False,
            "shape": tuple(shape)})
        head = sink.getvalue()
        sha = None
        if digest:
            hashed = hashlib.sha256(head)
            for part in parts:
                hashed.update(part)
            sha = hashed.hexdigest()
        # Content-addressed, so an existing entry of that name holds these bytes unless it is
        # damaged: rewriting it (atomically) costs little and repairs it.
        write_atomic(target, (head, *parts), durable=False)
        return {"entry_sha": sha, "offset": len(head), "first": first, "last": last}

    def read_block(self, name: str, record: dict[str, Any]) -> np.ndarray | None:
        """Entry ``name``'s int64 block, mapped copy-on-write (:meth:`read_entry`), or None."""
        rows, columns, offset = record["rows"], record["columns"], record["offset"]
        try:
            with open(self.path(name), "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size != offset + 8 * (1 + len(columns)) * rows:
                    return None
                mapped = map_private(fh.fileno(), size)
        except (OSError, ValueError):
            return None
        block = np.frombuffer(mapped, dtype="int64", offset=offset).reshape(1 + len(columns),
                                                                            rows)
        if rows == 0 or block[0, 0] != record["first"] or block[0, -1] != record["last"]:
            return None
        return block

    def frame(self, block: np.ndarray, columns: list[str], index_name: str) -> pd.DataFrame:
        """The frame over ``block`` (no copy): stamps as index, float64 columns."""
        index = pd.DatetimeIndex(block[0].view("datetime64[ns]"), name=index_name)
        names = tuple(columns)
        if names not in self._columns:  # an Index is immutable: frames may share it
            self._columns[names] = pd.Index(columns, dtype="str")
        return pd.DataFrame(block[1:].view("float64").T, index=index,
                            columns=self._columns[names], copy=False)

    def read_entry(self, name: str, record: dict[str, Any], index_name: str
                   ) -> pd.DataFrame | None:
        """Entry ``name`` as a frame, or None when it is missing or not what ``record`` (the
        index's, from :meth:`write_entry`, plus ``rows`` and ``columns``) says.

        The file is mapped copy-on-write: nothing is copied at load, pages are read from the
        page cache when first touched, and a write to the frame changes a private copy of the
        page, never the file. A short file (partial write, crash) or one whose first or last
        stamp differs from the record (a zero-filled file after a crash) is refused.
        """
        block = self.read_block(name, record)
        return None if block is None else self.frame(block, record["columns"], index_name)


def _libc_mmap() -> Any:
    """libc's ``mmap``/``munmap`` through ctypes (POSIX), or None."""
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int64]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc_mmap()
_MAP_FAILED = ctypes.c_void_p(-1).value


def map_private(fd: int, size: int) -> Any:
    """``size`` bytes of the open file ``fd`` mapped copy-on-write (``MAP_PRIVATE``), as a
    writable buffer that keeps **no file descriptor** open.

    Python's ``mmap.mmap`` keeps a duplicate of ``fd`` for as long as the mapping lives: one
    per entry, so a load of 10,000 assets (20,000 entries) ran out of descriptors
    (``EMFILE``; 1,024 is a common default limit, reached at ~500 assets). A mapping does not
    need its descriptor once made, so this maps through ``trackfd=False`` (Python 3.13+) or
    libc's ``mmap`` directly, and unmaps when the last array over the buffer is collected.
    Elsewhere (no libc), ``mmap.mmap``.
    """
    if size == 0:
        return bytearray()
    if sys.version_info >= (3, 13):
        return mmap.mmap(fd, size, access=mmap.ACCESS_COPY, trackfd=False)
    if _LIBC is None:
        return mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    addr = _LIBC.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    buffer = (ctypes.c_char * size).from_address(addr)
    unmap = weakref.finalize(buffer, _LIBC.munmap, addr, size)
    unmap.atexit = False  # never under a frame still alive at shutdown: the exit unmaps it
    return buffer


def frame_block(frame: pd.DataFrame) -> np.ndarray:
    """``frame`` as an entry's int64 block: stamps (ns), then each column's float64 bits."""
    block = np.empty((1 + frame.shape[1], len(frame)), dtype="int64")
    block[0] = frame.index.to_numpy(dtype="datetime64[ns]").view("int64")
    for i, column in enumerate(frame.columns):
        block[i + 1] = frame[column].to_numpy(dtype="float64").view("int64")
    return block

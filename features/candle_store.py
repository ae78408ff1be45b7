"""On-disk storage of the validated-candle cache (:mod:`features.candle_cache`).

Layout under the cache directory::

    index.json                 what is known about each source file and hourly/daily pair
    index.lock                 locked while the index is read-modified-written
    entries/<d[:2]>/<d>.npy    one validated frame: stamps and float64 columns, one array

Entries are spread over 256 subdirectories by the first two hex digits of their name, as git
spreads its objects: creating a file in one directory of 2,000-4,000 entries (the live ones
and those still in their grace period) cost ~0.4-0.7 ms on the benchmark machine's ext4
against ~0.07 ms in a small one (1.4 s of a 1,000-asset append, when every append wrote a new
entry per grown file).

Every entry is written once under a new name (a random hex name, never reused): to a
temporary file in the same directory, flushed and ``os.replace``-d into place, so a reader
sees a whole file or none. Each entry has room for more rows than it holds (:func:`capacity`):
the rows a daily append adds to a file are written *in place* into that room
(:meth:`Store.grow_in_place`), and a new entry is written only when the room runs out (about
once in a quarter of the file's history). The rows of an entry up to a length some index
record has given are never rewritten: the index's ``extents`` keep, per entry, how many rows
are in use, and rows are only written beyond that extent, with the index lock held from
checking it to recording the new one; a reader maps only the rows its record holds, so
another process's later rows never reach its frames. The index is merged under the same
exclusive file lock (a second ``run``/``retrain``/``serve`` loading at the same time loses no
update); an unreadable index or entry (crash, full disk, a short or damaged file, another
version) is treated as absent and rebuilt from the source, never trusted.

Storage: one uncompressed ``.npy`` file per source, memory-mapped copy-on-write. A warm load
then copies nothing: at 1,000 assets the hourly candles alone are 1.3 GB, and copying them out
of the page cache (what reading Arrow IPC or Parquet into writable pandas frames costs) took
longer than everything else of a warm load on the 2-core benchmark machine. Per-file entries
over one consolidated dataset: a daily append touches every asset anyway. Writing a grown
file's whole entry again (1.3 GB at 1,000 assets each day) was most of a daily serve's load;
in place, an append writes its own rows only. The mapping cannot break under a reader:
entries are never truncated or replaced (a new version is a new file; the old inode lives on
while mapped); an entry truncated by hand while a process maps it would fault that process
(SIGBUS).
Figures in ``benchmarks/README.md``, "Validated-candle cache" and "The daily append and the
fresh CLI".
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

import blake3
import filelock
import numpy as np
import pandas as pd

# The rules a cached frame and its verdicts were judged by: an edit of any of these sources
# (a tolerance, a validation rule, the hourly/daily check) makes a new format, so no entry
# judged by the old rules is replayed under the new ones (a release that changes them pays
# one cold first read).
RULE_SOURCES = ("validation.py", "consistency.py", "candle_tail.py", "candle_pairs.py",
                "rawfiles.py", "loaders.py")


def _rules_digest() -> str:
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in RULE_SOURCES:  # a build without sources (bytecode only): the name alone
        source = here / name
        digest.update(name.encode() + b"\0" + (source.read_bytes() if source.is_file() else b""))
    return digest.hexdigest()[:16]


# the layout's number (bump when the entry or index layout or what a cached frame holds
# changes; 6: percent_units and the last-30-days rule) and the rules' digest
FORMAT = f"6-{_rules_digest()}"
# Unreferenced entries younger than this may belong to a process that has not yet written its
# index: they are left alone (deleting one would only cost that process a re-read).
GC_GRACE_S = 600.0
# A merge takes milliseconds; a lock held this long belongs to a stuck process.
LOCK_TIMEOUT_S = 30.0
# Room an entry is written with, for rows appended later: a share of its rows between ROOM[0]
# and ROOM[1] (drawn from its name), at least MIN_ROOM rows. ~25%: ~9 months of an hourly file
# of 3 years before it is written again, for ~25% more disk; the share varies by entry so that
# files of one universe, appended together, do not all run out of room on the same day.
ROOM = (0.2, 0.3)
MIN_ROOM = 64
# Rows at the end of an hourly entry whose pages a load asks for first (prefetch): two days,
# the days a daily serve's incremental hourly/daily check compares.
TAIL_ROWS = 48


def capacity(rows: int, name: str = "") -> int:
    """Rows the entry ``name`` of ``rows`` rows is written with room for."""
    draw = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") / 2**32
    return rows + max(int(rows * (ROOM[0] + (ROOM[1] - ROOM[0]) * draw)), MIN_ROOM)


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
        empty: dict[str, Any] = {"format": FORMAT, "files": {}, "pairs": {}, "extents": {}}
        try:
            index = json.loads(self.index_path.read_bytes())
        except (OSError, ValueError):
            return empty
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            return empty
        if not all(isinstance(index.get(k), dict) for k in ("files", "pairs", "extents")):
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
            self._collect(index)
            self.write_index(index)

    def write_index(self, index: dict[str, Any]) -> None:
        """Write ``index`` atomically and durably (call with the lock held)."""
        write_atomic(self.index_path, json.dumps(index, separators=(",", ":")).encode())

    def _collect(self, index: dict[str, Any]) -> None:
        """Delete old unreferenced entries (and their extents), and temporary files a killed
        writer left."""
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
                    # an extent goes with its file only: while the file exists, some process
                    # may map its rows, and the extent keeps them from being written again
                    index["extents"].pop(path.name, None)

    # -- entries -----------------------------------------------------------------------------
    def write_entry(self, name: str, frame: pd.DataFrame, block: np.ndarray | None = None,
                    digest: bool = True) -> dict[str, Any]:
        """Store ``frame`` (DatetimeIndex, float64 columns) as the new entry ``name`` (atomic).

        The entry is one ``.npy`` array of int64, shape (1 + columns, :func:`capacity`): row 0
        the stamps (ns since the epoch), then each column's float64 values bit for bit, each
        followed by its room for appended rows (zeros). Not fsync-ed (a crash may lose or
        shorten it, which :meth:`read_block` detects); the index is. ``block``: that array
        when the caller already holds it, else built from ``frame``. ``digest``: hash the file
        (only a verifying load reads the hash).

        Returns
        -------
        dict
            ``entry_digest`` (:func:`~features.candle_records.digest` of the file, None without
            ``digest``), ``offset`` (where the array starts), ``capacity``, ``first``/``last``
            (the first and last stamp, checked on every read).
        """
        if block is None:
            block = frame_block(frame)
        block = np.ascontiguousarray(block)
        return self._write(name, [[row] for row in block], digest,
                           int(block[0, 0]), int(block[0, -1]))

    def write_grown(self, name: str, old: np.ndarray, new: np.ndarray, digest: bool = True
                    ) -> tuple[dict[str, Any], np.ndarray | None]:
        """The new entry ``name`` holding ``old``'s rows followed by ``new``'s — the bytes
        :meth:`write_entry` writes for the two joined — written from the two parts without
        joining them in memory (what a grown file gets when its entry has no room left).

        Returns
        -------
        (dict, ndarray or None)
            What :meth:`write_entry` returns, and the new entry's block mapped copy-on-write
            (None if it cannot be read back as written).
        """
        if old.shape[0] != new.shape[0] or not (old.shape[1] and new.shape[1]):
            raise ValueError(f"cannot grow a {old.shape} block by a {new.shape} one")
        written = self._write(name, [list(pair) for pair in zip(old, new, strict=True)], digest,
                              int(old[0, 0]), int(new[0, -1]))
        rows = old.shape[1] + new.shape[1]
        return written, self.read_block(name, {"rows": rows, "columns": [None] * (len(old) - 1),
                                               **written})

    def grow_in_place(self, name: str, record: dict[str, Any], new: np.ndarray
                      ) -> tuple[dict[str, Any], np.ndarray | None] | None:
        """Write ``new``'s rows into the room of entry ``name`` after the ``record["rows"]``
        rows it holds; None (nothing written) when they do not fit, or the file is not what
        ``record`` says.

        The caller holds the index lock and has checked that no process has used the room:
        the index's extent of the entry is ``record["rows"]`` (see the module docstring).

        Returns
        -------
        (dict, ndarray or None) or None
            The grown entry's record fields (``entry_digest`` None: the file changed) and its
            block mapped copy-on-write.
        """
        rows, room, offset = record["rows"], record["capacity"], record["offset"]
        width = 1 + len(record["columns"])
        if new.shape[0] != width or not new.shape[1] or rows + new.shape[1] > room:
            return None
        written = {"entry_digest": None, "offset": offset, "capacity": room,
                   "first": record["first"], "last": int(new[0, -1])}
        grown = {"rows": rows + new.shape[1], "columns": record["columns"], **written}
        fd = os.open(self.path(name), os.O_RDWR)
        try:
            if (os.fstat(fd).st_size != offset + 8 * width * room
                    or os.pread(fd, 8, offset + 8 * (rows - 1)) != np.int64(
                        record["last"]).tobytes()):
                return None
            for i, values in enumerate(np.ascontiguousarray(new)):
                os.pwrite(fd, values.tobytes(), offset + 8 * (i * room + rows))
            return written, self._mapped(fd, grown)  # mapped through the same descriptor
        finally:
            os.close(fd)

    def _write(self, name: str, rows: list[list[np.ndarray]], digest: bool, first: int,
               last: int) -> dict[str, Any]:
        """Write the new entry ``name``: each of ``rows`` (one block row as consecutive int64
        parts) followed by its room, under an ``.npy`` header of the whole (what ``np.save``
        writes of that array, without its copies of the array: ~1.3 MB an hourly file)."""
        target = self.path(name)
        if target.parent.name not in self._shards:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._shards.add(target.parent.name)
        used = sum(part.shape[0] for part in rows[0])
        room = capacity(used, name)
        sink = io.BytesIO()
        np.lib.format.write_array_header_1_0(sink, {
            "descr": np.lib.format.dtype_to_descr(np.dtype("int64")), "fortran_order": False,
            "shape": (len(rows), room)})
        head = sink.getvalue()
        zeros = memoryview(bytes(8 * (room - used)))
        parts: list[bytes | memoryview] = [head]
        for row in rows:
            parts += [memoryview(np.ascontiguousarray(part)).cast("B") for part in row]
            parts.append(zeros)
        entry_digest = None
        if digest:
            hashed = blake3.blake3()
            for part in parts:
                hashed.update(part)
            entry_digest = hashed.hexdigest()
        write_atomic(target, tuple(parts), durable=False)
        return {"entry_digest": entry_digest, "offset": len(head), "capacity": room,
                "first": first, "last": last}

    def prefetch(self, record: dict[str, Any], whole: bool) -> None:
        """Start reading the pages of ``record``'s entry that a load touches first or, ``whole``,
        the entire entry (``posix_fadvise`` ``WILLNEED``: asynchronous, only a hint).

        Not whole: the header and first stamp and the last stamp (:meth:`read_block` checks
        them), and the last :data:`TAIL_ROWS` rows of every column, which the incremental
        hourly/daily check compares (:mod:`features.candle_pairs`: the days since the last
        serve). A load calls it for every file first, so that the disk reads these scattered
        pages together rather than one fault at a time (~1 ms an entry when they are not in
        the page cache). Measured at 1,000 assets with the page cache dropped: the load after
        the first serve took 2.7-3.2 s with the check's pages left to fault one at a time,
        1.0-1.5 s with these hints and the check's searches kept to the last rows
        (:func:`features.candle_pairs._covers`), 0.6-1.0 s when the check replays its memo;
        either change alone gained nothing (``benchmarks/README.md``)."""
        if not hasattr(os, "posix_fadvise"):
            return
        try:
            fd = os.open(self.path(record["entry"]), os.O_RDONLY)
        except (OSError, KeyError, TypeError):
            return
        try:
            if whole:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            else:
                offset, rows = int(record["offset"]), int(record["rows"])
                room, width = int(record["capacity"]), 1 + len(record["columns"])
                tail = min(rows, TAIL_ROWS)
                os.posix_fadvise(fd, 0, offset + 8, os.POSIX_FADV_WILLNEED)
                for column in range(width):  # the block is stored column after column
                    start = offset + 8 * (column * room + rows - tail)
                    os.posix_fadvise(fd, start, 8 * tail, os.POSIX_FADV_WILLNEED)
        except (OSError, KeyError, TypeError, ValueError):
            pass
        finally:
            os.close(fd)

    def read_block(self, name: str, record: dict[str, Any]) -> np.ndarray | None:
        """Entry ``name``'s int64 block, its first ``record["rows"]`` rows, or None when the
        file is missing or not what ``record`` (the index's: ``rows``, ``columns``,
        ``offset``, ``capacity``, ``first``, ``last``) says.

        The file is mapped copy-on-write: nothing is copied at load, pages are read from the
        page cache when first touched, and a write to a frame over the block changes a private
        copy of the page, never the file. A short file (partial write, crash) or one whose
        first or last stamp differs from the record (a zero-filled file after a crash, lost
        appended rows) is refused.
        """
        try:
            with open(self.path(name), "rb") as fh:
                return self._mapped(fh.fileno(), record)
        except (OSError, ValueError):
            return None

    def _mapped(self, fd: int, record: dict[str, Any]) -> np.ndarray | None:
        """The block of the entry open as ``fd`` (:meth:`read_block`), or None."""
        rows, columns, offset = record["rows"], record["columns"], record["offset"]
        room = record["capacity"]
        size = os.fstat(fd).st_size
        if size != offset + 8 * (1 + len(columns)) * room or not 0 < rows <= room:
            return None
        mapped = map_private(fd, size)
        block = np.frombuffer(mapped, dtype="int64", offset=offset).reshape(1 + len(columns),
                                                                            room)[:, :rows]
        if block[0, 0] != record["first"] or block[0, -1] != record["last"]:
            return None
        return block

    def frame(self, block: np.ndarray, columns: list[str], index_name: str) -> pd.DataFrame:
        """The frame over ``block`` (no copy): stamps as index, float64 columns."""
        # copy=False: pandas 3 copies an ndarray given to an Index by default, which read and
        # duplicated every stamp of every file at each load (0.2 GB at 1,000 assets)
        index = pd.DatetimeIndex(block[0].view("datetime64[ns]"), name=index_name, copy=False)
        names = tuple(columns)
        if names not in self._columns:  # an Index is immutable: frames may share it
            self._columns[names] = pd.Index(columns, dtype="str")
        return pd.DataFrame(block[1:].view("float64").T, index=index,
                            columns=self._columns[names], copy=False)


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
        libc.madvise.restype = ctypes.c_int
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
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


_PAGE = mmap.PAGESIZE
_MADV_WILLNEED = getattr(mmap, "MADV_WILLNEED", 3)


def will_need(arrays: list[np.ndarray]) -> None:
    """Ask the kernel to start reading the pages under each of ``arrays`` (``madvise``
    ``MADV_WILLNEED``: asynchronous readahead of a file mapping, nothing for memory that is
    already resident). Only a hint, for views of mapped entries about to be read: at 10,000
    assets the pages a serve reads are scattered over 20,000 files, and faulting them in one
    at a time waits on the disk once per page (~0.5 ms each on the benchmark machine) where
    asking for all of them first lets the disk serve them together."""
    if _LIBC is None:
        return
    for a in arrays:
        if a.size == 0 or not a.flags.c_contiguous:
            continue
        start = a.__array_interface__["data"][0]
        aligned = start - start % _PAGE
        _LIBC.madvise(aligned, start + a.nbytes - aligned, _MADV_WILLNEED)


def frame_block(frame: pd.DataFrame) -> np.ndarray:
    """``frame`` as an entry's int64 block: stamps (ns), then each column's float64 bits."""
    block = np.empty((1 + frame.shape[1], len(frame)), dtype="int64")
    block[0] = frame.index.to_numpy(dtype="datetime64[ns]").view("int64")
    for i, column in enumerate(frame.columns):
        block[i + 1] = frame[column].to_numpy(dtype="float64").view("int64")
    return block

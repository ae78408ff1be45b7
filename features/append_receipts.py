"""Append receipts: a writer's record that a source file only grew, so that the candle cache
(:mod:`features.candle_cache`) need not read and hash a grown file's old bytes again.

After a daily append the cache proves that each grown file's cached bytes are an unchanged
prefix by reading and hashing the whole file. At 10,000 assets that is 18 GiB a day, more
than the page cache keeps beside the cache's own entries, so the proof is bound by the disk
(``benchmarks/README.md``). A writer that appends *knows* it only appended. It says so in a
receipt, one JSON line in ``DATA_DIR/.receipts/appends.jsonl``::

    {"file": "crypto/hourly/BTC.csv", "before": [size, mtime_ns, ctime_ns, ino, dev],
     "after": [size, mtime_ns, ctime_ns, ino, dev], "added": 1820}

"the file whose stat identity (:func:`features.candle_records.identity`) is ``after`` holds
exactly the content (decompressed) of the file whose identity was ``before``, followed by
``added`` more bytes". Writers: :func:`append` (complete lines appended in place; a new
gzip member for ``.csv.gz``, as a daily feed does) and the ingest's atomic rewrite
(:func:`pipelines.ingest.store.append_page`), each under the data directory's lock.

**What the cache trusts.** A chain of receipts (at most :data:`MAX_CHAIN` long: a serve may
have been skipped on some days) that leads from the identity the cache recorded for a file to
the file's current identity, whose ``added`` bytes sum to the growth of the file, replaces the
proof by hash: only the new bytes are read (for ``.csv.gz``, the file is still decompressed,
but not hashed). This trusts the writer exactly as far as the cache already trusts a stat
identity for a file it serves unchanged: both rest on size, ``mtime_ns``, ``ctime_ns``, inode
and device. Receipts are *not* used

- when the load verifies (``data.cache.verify``: every file hashed whole);
- for a file changed within :data:`features.candle_cache.RACY_NS` of the load, or cached
  that close to a change (its stamps may not tell two writes apart): it is hashed;
- when no chain links the two identities (a writer without receipts, a file edited after
  its append, a receipt lost): the proof by hash, as before.

The cache's record of a file grown by receipt has no content digest (the old bytes were not
read), so the next change of that file *without* a receipt costs a full re-read (parse and
validation of the whole file) instead of the proof by hash, once; the re-read records a
digest again.

**Residual risk.** A receipt that lies (a writer that rewrote old rows and claimed an
append) is believed, as a forged stat identity is. A torn or malformed line (a writer killed
mid-line) is skipped with a warning: a receipt is only ever a shortcut, and without it the
cache proves the file by hash. The journal is compacted by each writer session
(:func:`compact`): only the receipts on the chain ending at each file's current identity are
kept.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from features.candle_records import identity
from features.candle_store import write_atomic

__all__ = ["JOURNAL", "MAX_CHAIN", "Receipt", "append", "chain", "compact", "read", "record"]

JOURNAL = Path(".receipts") / "appends.jsonl"  # under the data directory; loaders skip dot-dirs
MAX_CHAIN = 64  # receipts followed per file: a cache more than 64 appends behind proves by hash
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Receipt:
    """One append to one file: its identity before and after, and the bytes it added."""

    file: str  # POSIX path relative to the data directory
    before: tuple[int, ...]
    after: tuple[int, ...]
    added: int

    def line(self) -> str:
        return json.dumps({"file": self.file, "before": list(self.before),
                           "after": list(self.after), "added": self.added}) + "\n"


def record(root: Path | str, receipts: Iterable[Receipt]) -> None:
    """Append ``receipts`` to the journal of the data directory ``root`` (one write, flushed;
    not fsync-ed: a receipt lost in a crash only costs the proof by hash)."""
    text = "".join(r.line() for r in receipts)
    if not text:
        return
    path = Path(root) / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def append(root: Path | str, path: Path | str, lines: bytes) -> Receipt:
    """Append complete CSV ``lines`` to the source file ``path`` under ``root`` (a new gzip
    member for ``.csv.gz``) and return the receipt, not yet recorded (:func:`record` many at
    once). The caller holds the data directory's lock; ``lines`` end with a newline, and so
    must the file: a plain CSV that does not is refused (the first new line would be glued
    to its last row, and the next load would lose the asset to a format error); a gzip file's
    last byte cannot be read without decompressing all of it, so there it is the caller's
    guarantee (every writer here ends each member with a newline).
    """
    if not lines.endswith(b"\n"):
        raise ValueError(f"{path}: appended bytes must end a line")
    path = Path(path)
    if not path.name.endswith(".gz") and path.stat().st_size:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                raise ValueError(f"{path}: the file does not end a line; appending would "
                                 "join its last row and the first new one")
    data = gzip.compress(lines, compresslevel=1, mtime=0) if path.name.endswith(".gz") else lines
    with open(path, "ab") as handle:
        before = identity(os.fstat(handle.fileno()))
        handle.write(data)
        handle.flush()
        after = identity(os.fstat(handle.fileno()))
    return Receipt(Path(os.path.relpath(path, root)).as_posix(), tuple(before), tuple(after),
                   len(lines))


def read(root: Path | str) -> dict[str, list[Receipt]]:
    """The journal of ``root`` by absolute file path (the cache's keys), in written order;
    empty when there is none. Unreadable lines are skipped with a warning."""
    path = Path(root) / JOURNAL
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        _log.warning("append receipts: %s unreadable (%s); grown files proven by hash",
                     path, err)
        return {}
    base = os.path.abspath(root)
    out: dict[str, list[Receipt]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        try:
            item = json.loads(raw)
            receipt = Receipt(str(item["file"]), _ident(item["before"]), _ident(item["after"]),
                              int(item["added"]))
            if receipt.added < 0 or not receipt.file or os.path.isabs(receipt.file):
                raise ValueError("negative size or absolute path")
        except (ValueError, KeyError, TypeError) as err:
            _log.warning("append receipts: %s line %d skipped (%s)", path, number, err)
            continue
        out.setdefault(os.path.abspath(os.path.join(base, receipt.file)), []).append(receipt)
    return out


def chain(receipts: Iterable[Receipt], start: Iterable[int], end: Iterable[int]) -> int | None:
    """Bytes added between identities ``start`` and ``end`` when ``receipts`` link them (at
    most :data:`MAX_CHAIN` of them), else None."""
    by_before = {r.before: r for r in receipts}  # a later receipt from one identity wins
    here, goal, added = tuple(start), tuple(end), 0
    for _ in range(MAX_CHAIN):
        step = by_before.get(here)
        if step is None:
            return None
        here, added = step.after, added + step.added
        if here == goal:
            return added
    return None


def compact(root: Path | str) -> int:
    """Keep in the journal only the receipts on the chain ending at each file's current
    identity; rewrite it atomically. The caller holds the data directory's lock. Returns the
    receipts kept."""
    root = Path(root)
    journal = read(root)
    if not journal:
        return 0
    kept: list[Receipt] = []
    for key, receipts in journal.items():
        try:
            here = tuple(identity(os.stat(key)))
        except OSError:
            continue
        by_after = {r.after: r for r in receipts}
        tail: list[Receipt] = []
        while here in by_after and len(tail) < MAX_CHAIN:
            step = by_after.pop(here)
            tail.append(step)
            here = step.before
        kept.extend(reversed(tail))
    # not fsync-ed: a journal lost in a crash only costs the proof by hash
    write_atomic(root / JOURNAL, "".join(r.line() for r in kept).encode(), durable=False)
    return len(kept)


def _ident(value: object) -> tuple[int, ...]:
    if not (isinstance(value, list) and len(value) == 5
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"not a stat identity: {value!r}")
    return tuple(value)

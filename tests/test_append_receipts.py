"""Append receipts let the candle cache read only a grown file's new bytes, and only where a
chain of receipts links the identity it cached to the file's current one; otherwise the cache
proves the file by hash, or reads it again, exactly as without receipts.

Every load is compared with the uncached ``load_market`` on real slices of the embedded data.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

import pytest
from conftest import write_slice
from test_candle_cache import assert_same

from features import append_receipts, candle_cache
from features.append_receipts import JOURNAL, MAX_CHAIN, Receipt, chain, compact, read
from features.candle_cache import CandleCache
from features.candle_records import identity
from features.loaders import load_market
from pipelines.ingest import ingest
from tests.replay.fake_api import FakeApis
from tests.replay.harness import daily_market, settings_for

FILES = 7  # BTC and ETH daily, hourly and DVOL, and SPX


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BTC and ETH (daily, hourly, DVOL) and SPX, spring 2021; BTC's daily file plain CSV."""
    root = write_slice(tmp_path_factory.mktemp("src"), ["BTC", "ETH"], "2021-03-24",
                       "2021-05-15", macro=("SPX",))
    gz = root / "crypto" / "daily" / "BTC.csv.gz"
    (root / "crypto" / "daily" / "BTC.csv").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    return root


@pytest.fixture
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by a test are loaded at once; in production a serve runs long after its
    feed. The racy window itself is tested below with its real value."""
    monkeypatch.setattr(candle_cache, "RACY_NS", 0)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes the cache hashes to prove a prefix (features.candle_cache._extends)."""
    seen: list[int] = []
    real = candle_cache.blake3.blake3

    class Counting:
        @staticmethod
        def blake3(data: bytes | memoryview = b"") -> object:
            seen.append(len(data))
            return real(data)

    monkeypatch.setattr(candle_cache, "blake3", Counting)
    return seen


def _text(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


def _split(src: Path, dest: Path, cuts: list[str]) -> list[dict[Path, bytes]]:
    """Copy ``src`` to ``dest`` with the rows stamped before ``cuts[0]``; return, per cut,
    each file's lines from it to the next cut (the last: to the end): the later appends."""
    parts: list[dict[Path, bytes]] = [{} for _ in cuts]
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dest / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = _text(path).splitlines(keepends=True)
        bounds = [1 + sum(x[:19].decode() < cut for x in lines[1:]) for cut in cuts]
        data = b"".join(lines[: bounds[0]])
        out.write_bytes(gzip.compress(data) if out.name.endswith(".gz") else data)
        for k, (lo, hi) in enumerate(zip(bounds, [*bounds[1:], len(lines)], strict=True)):
            parts[k][out] = b"".join(lines[lo:hi])
    return parts


def _feed(root: Path, rows: dict[Path, bytes], receipts: bool = True) -> None:
    """Append each file's rows, as a daily feed does (with or without receipts)."""
    written = [append_receipts.append(root, path, data) for path, data in rows.items()]
    if receipts:
        append_receipts.record(root, written)


@pytest.mark.usefixtures("no_racy_window")
def test_receipted_appends_are_read_from_the_cached_length_on(
        source: Path, tmp_path: Path, hashes: list[int]) -> None:
    data = tmp_path / "data"
    first, second = _split(source, data, ["2021-05-01T11:00:00", "2021-05-08"])
    load_market(data, cache=tmp_path / "cache")
    _feed(data, first)
    hashes.clear()
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=cache), load_market(data))
    assert cache.stats["receipt"] == FILES and cache.stats["append"] == FILES
    assert cache.stats["full"] == 0 and hashes == []  # no byte of the old content hashed
    _feed(data, second)  # the next day chains on the record the receipts left
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=cache), load_market(data))
    assert cache.stats["receipt"] == FILES and cache.stats["pair_partial"] == 2
    cache = CandleCache(tmp_path / "cache")  # unchanged since: served from the entries
    assert_same(load_market(data, cache=cache), load_market(data))
    assert cache.stats["hit"] == FILES


@pytest.mark.usefixtures("no_racy_window")
def test_a_chain_of_receipts_covers_days_without_a_load(source: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    days = _split(source, data, ["2021-05-01", "2021-05-04", "2021-05-08", "2021-05-12"])
    load_market(data, cache=tmp_path / "cache")
    for rows in days:  # four appends, no load between them
        _feed(data, rows)
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=cache), load_market(data))
    assert cache.stats["receipt"] == FILES and cache.stats["full"] == 0


@pytest.mark.usefixtures("no_racy_window")
def test_a_file_edited_around_its_receipt_is_proven_by_hash_or_read_again(
        source: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows, = _split(source, data, ["2021-05-01"])
    load_market(data, cache=tmp_path / "cache")
    daily = data / "crypto" / "daily" / "BTC.csv"  # plain CSV: edited in place
    text = daily.read_bytes()
    daily.write_bytes(text.replace(b"\n2021-04-", b"\n2021-04-", 1))  # same bytes, new stamps
    spx = data / "macro" / "SPX.csv.gz"
    lines = _text(spx).splitlines(keepends=True)
    lines[1] = lines[1].rstrip(b"\n") + b"1\n"  # an old row's value changed
    edited = b"".join(lines)
    _feed(data, rows)  # receipts from identities the cache never saw, or ...
    spx.write_bytes(gzip.compress(edited + rows[spx]))  # ... made stale by an edit after
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=cache), load_market(data))
    assert cache.stats["receipt"] == FILES - 2
    assert cache.stats["append"] == FILES - 1  # BTC daily proven an append by hash ...
    assert cache.stats["full"] == 1  # ... SPX's changed rows read again


@pytest.mark.usefixtures("no_racy_window")
def test_a_file_grown_by_receipt_then_changed_without_one_is_read_whole(
        source: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, second, third = _split(source, data, ["2021-05-01", "2021-05-05", "2021-05-10"])
    load_market(data, cache=tmp_path / "cache")
    _feed(data, first)
    load_market(data, cache=tmp_path / "cache")  # grown by receipt: no digest recorded
    _feed(data, second, receipts=False)  # a feed that writes none
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=cache), load_market(data))
    assert cache.stats["full"] == FILES and cache.stats["receipt"] == 0
    _feed(data, third, receipts=False)  # the re-read recorded a digest: proven by hash again
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=cache), load_market(data))
    assert cache.stats["append"] == FILES and cache.stats["full"] == 0


def test_receipts_are_not_used_for_a_racy_file_nor_by_a_verifying_load(
        source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    rows, = _split(source, data, ["2021-05-01"])
    monkeypatch.setattr(candle_cache, "RACY_NS", 0)
    load_market(data, cache=tmp_path / "cache")
    _feed(data, rows)
    monkeypatch.setattr(candle_cache, "RACY_NS", 60 * 10**9)  # written within the window
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=cache), load_market(data))
    assert cache.stats["receipt"] == 0 and cache.stats["append"] == FILES  # proven by hash
    monkeypatch.setattr(candle_cache, "RACY_NS", 0)
    data2 = tmp_path / "data2"
    rows, = _split(source, data2, ["2021-05-01"])
    load_market(data2, cache=tmp_path / "cache2")
    _feed(data2, rows)
    cache = CandleCache(tmp_path / "cache2", verify=True)
    assert_same(load_market(data2, cache=cache), load_market(data2))
    assert cache.stats["receipt"] == 0  # every file hashed whole
    assert cache.stats["append"] + cache.stats["full"] == FILES


@pytest.mark.usefixtures("no_racy_window")
def test_the_ingest_writes_receipts_the_cache_uses(api: FakeApis, tmp_path: Path) -> None:
    market = daily_market(tmp_path / "market")
    load_market(market, cache=tmp_path / "cache")
    report = ingest(market, ["binance"], "2025-07-06T12:00:00Z",
                    settings=settings_for(api.url))
    grown = [f for f in report.files if f.appended]
    assert grown, "the fake API offered new rows"
    journal = read(market)
    assert sorted(os.path.relpath(k, market) for k in journal) == sorted(f.file for f in grown)
    for key, receipts in journal.items():
        assert receipts[-1].after == tuple(identity(os.stat(key)))
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(market, cache=cache), load_market(market))
    assert cache.stats["receipt"] == len(grown) and cache.stats["full"] == 0


def test_chain_follows_receipts_from_one_identity_to_another() -> None:
    ids = [(100 + k, k, k, 7, 1) for k in range(MAX_CHAIN + 2)]
    steps = [Receipt("f.csv", ids[k], ids[k + 1], 1) for k in range(MAX_CHAIN + 1)]
    assert chain(steps, ids[0], ids[3]) == 3
    assert chain(steps[::-1], ids[2], ids[MAX_CHAIN + 1]) == MAX_CHAIN - 1
    assert chain(steps, ids[0], ids[MAX_CHAIN + 1]) is None  # longer than MAX_CHAIN
    assert chain(steps[:1] + steps[2:], ids[0], ids[3]) is None  # a link missing
    assert chain(steps, ids[3], ids[0]) is None  # never backwards


def test_compaction_keeps_the_chain_to_each_files_current_identity(
        source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    days = _split(source, data, ["2021-05-01", "2021-05-08"])
    _feed(data, days[0])
    spx = data / "macro" / "SPX.csv.gz"
    spx.write_bytes(gzip.compress(_text(spx)))  # rewritten: its receipt leads nowhere now
    _feed(data, days[1])
    (data / "crypto" / "hourly" / "ETH.csv.gz").unlink()
    with open(data / JOURNAL, "a", encoding="utf-8") as handle:
        handle.write('{"file": "crypto/daily/BTC.csv", "before": [1, 2]')  # torn by a crash
    with caplog.at_level(logging.WARNING, logger="features.append_receipts"):
        kept = compact(data)
    assert "line 15 skipped" in caplog.text
    journal = read(data)
    assert kept == 2 * (FILES - 2) + 1 == sum(len(r) for r in journal.values())
    assert len(journal[os.path.abspath(spx)]) == 1  # the receipt after the rewrite only
    assert os.path.abspath(data / "crypto" / "hourly" / "ETH.csv.gz") not in journal
    lines = (data / JOURNAL).read_text().splitlines()
    assert all(json.loads(line)["file"] for line in lines) and len(lines) == kept


def test_appending_to_a_plain_file_without_a_final_newline_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "BTC.csv"
    path.write_bytes(b"timestamp,open,high,low,close,volume\n2025-01-04,1,2,0.5,1.5,100")
    with pytest.raises(ValueError, match="does not end a line"):
        append_receipts.append(tmp_path, path, b"2025-01-05,1.5,2,1,1.8,90\n")
    assert path.read_bytes().endswith(b",100")  # untouched
    path.write_bytes(path.read_bytes() + b"\n")
    receipt = append_receipts.append(tmp_path, path, b"2025-01-05,1.5,2,1,1.8,90\n")
    assert receipt.added == 26
    assert path.read_bytes().endswith(b",100\n2025-01-05,1.5,2,1,1.8,90\n")

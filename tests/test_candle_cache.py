"""The validated-candle cache returns what the uncached loader returns, and never hides bad data.

Every test compares ``load_market(..., cache=...)`` with ``load_market(...)`` on real slices of
the embedded data: cold, warm, after clean appends (plain CSV, gzip rewritten, gzip member
appended), after edits that are not appends, and with a damaged cache.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import MARKET, write_slice

from configs.schema import Config
from features import candle_pairs, candle_tail, loaders
from features.candle_cache import CandleCache, _read_reused
from features.candle_store import GC_GRACE_S, MIN_ROOM, ROOM, Store, capacity
from features.consistency import mismatches
from features.loaders import DataValidationError, load_market
from features.validation import RULE_ORDER
from serving.market import candle_cache, load_as_of

KINDS = ("daily", "hourly", "dvol", "macro")


def assert_same(cached: loaders.MarketData, plain: loaders.MarketData) -> None:
    for kind in KINDS:
        a, b = getattr(cached, kind), getattr(plain, kind)
        assert list(a) == list(b), kind
        for name in a:
            pd.testing.assert_frame_equal(a[name], b[name])
            assert a[name].equals(b[name])
    pd.testing.assert_frame_equal(cached.gaps, plain.gaps)
    for attr in ("files", "failures", "hourly_problems", "warnings", "future_rows"):
        assert getattr(cached, attr) == getattr(plain, attr), attr


def served(cache: CandleCache) -> int:
    """Files served from the cache (a file written within the last 2 s is re-hashed first)."""
    return cache.stats["hit"] + cache.stats["same_content"]


def _text(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BTC and ETH (daily, hourly, DVOL) and SPX, spring 2021 (7 files). BTC's daily file is
    plain CSV, to cover both formats."""
    root = write_slice(tmp_path_factory.mktemp("src"), ["BTC", "ETH"], "2021-03-24",
                       "2021-05-15", macro=("SPX",))
    gz = root / "crypto" / "daily" / "BTC.csv.gz"
    (root / "crypto" / "daily" / "BTC.csv").write_bytes(_text(gz))
    gz.unlink()
    return root


def _split(src: Path, dest: Path, cut: str) -> dict[Path, bytes]:
    """Copy ``src`` to ``dest`` keeping only rows stamped before ``cut``; return each file's
    remaining lines (what a later append adds)."""
    rest = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dest / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = _text(path).splitlines(keepends=True)
        keep = [lines[0]] + [x for x in lines[1:] if x[:19].decode() < cut]
        _write(out, b"".join(keep))
        rest[out] = b"".join(lines[len(keep):])
    return rest


def _append(path: Path, data: bytes, how: str = "rewrite") -> None:
    if how == "member":  # a second gzip member: a legal, if rare, gzip append
        with open(path, "ab") as fh:
            fh.write(gzip.compress(data))
    elif path.name.endswith(".gz"):
        _write(path, _text(path) + data)
    else:
        with open(path, "ab") as fh:
            fh.write(data)


def test_cold_and_warm_loads_equal_the_uncached_load(source: Path, tmp_path: Path) -> None:
    plain = load_market(source, as_of=dt.date(2021, 5, 10))
    for expected in ("full", "hit"):
        cache = CandleCache(tmp_path / "cache")
        assert_same(load_market(source, as_of=dt.date(2021, 5, 10), cache=cache), plain)
        assert (cache.stats["full"] if expected == "full" else served(cache)) == 7
        assert cache.stats["full"] + served(cache) == 7
    cache = CandleCache(tmp_path / "cache")  # another as-of: same entries, check recomputed
    assert_same(load_market(source, as_of=dt.date(2021, 4, 20), cache=cache),
                load_market(source, as_of=dt.date(2021, 4, 20)))
    assert served(cache) == 7 and cache.stats["pair_memo"] == 0


@pytest.mark.parametrize("how", ["rewrite", "member"])
def test_appended_rows_are_the_only_ones_parsed(source: Path, tmp_path: Path, how: str) -> None:
    data = tmp_path / "data"
    rest = _split(source, data, "2021-05-01T11:00:00")  # mid-day: the boundary day grows
    load_market(data, cache=tmp_path / "cache")
    for path, lines in rest.items():
        _append(path, lines, how if path.name.endswith(".gz") else "plain")
    cache = CandleCache(tmp_path / "cache")
    plain = load_market(data)
    assert_same(load_market(data, cache=cache), plain)
    assert cache.stats["append"] == 7 and cache.stats["full"] == 0
    assert cache.stats["prepared"] == 7  # grown entries written by prepare(), then mapped
    assert cache.stats["pair_partial"] == 2  # the hourly check only ran on the new days
    for kind in KINDS:  # and the grown files hold the whole source again
        for name, frame in getattr(load_market(source), kind).items():
            assert frame.equals(getattr(plain, kind)[name])
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=cache), plain)
    assert served(cache) == 7 and cache.stats["pair_memo"] == 2


def test_entries_are_written_behind_the_load_and_a_failed_write_costs_only_a_reread(
        source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    plain = load_market(source)
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(source, cache=cache), plain)
    assert not cache._pending and cache.stats["full"] == 7  # all written before the return
    assert len(list((tmp_path / "cache" / "entries").glob("*/*.npy"))) == 7
    assert_same(load_market(source, cache=cache), plain)  # the same object: from the entries
    assert served(cache) == 7

    cache = CandleCache(tmp_path / "full")
    write, calls, lock = cache.store.write_entry, [], threading.Lock()

    def full_disk(*args: object) -> dict[str, object]:  # the first three writes fail
        with lock:
            calls.append(args[0])
            if len(calls) <= 3:
                raise OSError(28, "No space left on device")
        return write(*args)

    monkeypatch.setattr(cache.store, "write_entry", full_disk)
    with caplog.at_level("WARNING", logger="features.candle_cache"):
        assert_same(load_market(source, cache=cache), plain)
    assert len(calls) == 7 and caplog.text.count("No space left on device") == 3
    again = CandleCache(tmp_path / "full")  # only the written ones were recorded
    assert_same(load_market(source, cache=again), plain)
    assert again.stats["full"] == 3 and served(again) == 4


def test_a_grown_entry_is_the_entry_of_the_joined_block_byte_for_byte(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    rng = np.random.default_rng(3)
    old = rng.integers(-2**62, 2**62, size=(7, 1000))
    old[0] = np.arange(1000) * 3_600_000_000_000
    new = rng.integers(-2**62, 2**62, size=(7, 24))
    new[0] = (1000 + np.arange(24)) * 3_600_000_000_000
    joined = np.concatenate([old, new], axis=1)
    frame = pd.DataFrame(joined[1:].view("float64").T,
                         index=pd.DatetimeIndex(joined[0].view("datetime64[ns]")))
    for digest in (True, False):
        expected = store.write_entry("aa-joined.npy", frame, None, digest)
        assert (expected["entry_digest"] is not None) == digest
        joined_bytes = store.path("aa-joined.npy").read_bytes()
        mapped_old = store.read_block("aa-joined.npy", {"rows": 1024, "columns": [0] * 6,
                                                         **expected})[:, :1000]
        written, block = store.write_grown("aa-joined.npy", mapped_old, new, digest)
        assert written == expected
        assert store.path("aa-joined.npy").read_bytes() == joined_bytes
        assert block is not None and np.array_equal(block, joined)
        stored = np.load(store.path("aa-joined.npy"))  # a plain .npy: rows, then their room
        assert stored.shape == (7, capacity(1024, "aa-joined.npy")) and not stored[:, 1024:].any()
        assert np.array_equal(stored[:, :1024], joined)
    with pytest.raises(ValueError, match="cannot grow"):
        store.write_grown("ac.npy", old, new[:, :0])


def test_entries_have_room_for_a_varying_share_of_their_rows() -> None:
    rooms = [capacity(26_000, f"{i:032x}.npy") - 26_000 for i in range(400)]
    assert all(ROOM[0] * 26_000 <= r < ROOM[1] * 26_000 for r in rooms)
    assert max(rooms) - min(rooms) > 0.08 * 26_000  # spread: not all full on the same day
    assert capacity(10, "x") == 10 + MIN_ROOM and capacity(10, "x") == capacity(10, "x")


def test_grown_files_are_read_into_a_reused_buffer_whatever_their_size(tmp_path: Path
                                                                         ) -> None:
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    small.write_bytes(b"a,b\n1,2\n")
    big.write_bytes(bytes(range(256)) * 20_000)  # 5 MB: the 1 MiB buffer grows
    for path in (small, big, small):
        buf, size = _read_reused(path, None)
        assert buf is not None and bytes(buf[:size]) == path.read_bytes()
    assert _read_reused(big, 1_000_000) == (None, 0)  # over the size limit
    assert _read_reused(tmp_path / "missing.csv", None) == (None, 0)


def test_appended_rows_go_into_the_entry_room_and_never_under_a_reader(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    hours = np.arange(200) * 3_600_000_000_000
    block = np.vstack([hours, np.arange(6 * 200).reshape(6, 200)])
    record = {"rows": 120, "columns": list("abcdef"),
              **store.write_entry("cd.npy", pd.DataFrame(), block[:, :120], digest=False)}
    assert record["capacity"] == 120 + 64  # at least MIN_ROOM rows of room
    reader = store.read_block("cd.npy", record)  # another process's frame, mapped
    grown = store.grow_in_place("cd.npy", record, block[:, 120:180])
    assert grown is not None
    written, mapped = grown
    assert written == {**{k: record[k] for k in ("offset", "capacity", "first")},
                       "entry_digest": None, "last": int(hours[179])}
    assert mapped is not None and np.array_equal(mapped, block[:, :180])
    assert reader is not None and np.array_equal(reader, block[:, :120])  # its rows only
    assert store.grow_in_place("cd.npy", record | written | {"rows": 180},
                               block[:, 180:]) is None  # 20 rows do not fit in 4
    stale = record | {"last": int(hours[100])}  # not what the file holds at its row 120
    assert store.grow_in_place("cd.npy", stale, block[:, 120:121]) is None
    assert np.array_equal(store.read_block("cd.npy", record | written | {"rows": 180}),
                          block[:, :180])


def test_a_second_append_grows_the_entry_the_first_one_grew(source: Path,
                                                             tmp_path: Path) -> None:
    data = tmp_path / "data"
    rest = _split(source, data, "2021-05-01")
    load_market(data, cache=tmp_path / "cache")
    entries = sorted(p.name for p in (tmp_path / "cache" / "entries").glob("*/*.npy"))
    # two appends; SPX has no row on the first (a weekend), so 6 files grow, then all 7
    for start, cut, grown in (("", "2021-05-03", 6), ("2021-05-03", "2021-05-05", 7)):
        for path, lines in rest.items():
            _append(path, b"".join(x for x in lines.splitlines(keepends=True)
                                   if start <= x[:10].decode() < cut))
        cache = CandleCache(tmp_path / "cache")
        assert_same(load_market(data, cache=cache), load_market(data))
        assert cache.stats["in_place"] == cache.stats["append"] == grown
        assert cache.stats["full"] == 0
    index = json.loads((tmp_path / "cache" / "index.json").read_bytes())
    assert sorted(p.name for p in (tmp_path / "cache" / "entries").glob("*/*.npy")) == entries
    assert sorted(index["extents"]) == entries  # every entry grew in place, none was written
    again = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=again), load_market(data))
    assert served(again) == 7
    for path, lines in rest.items():  # 11 more days: more hours than the hourly entries' room
        _append(path, b"".join(x for x in lines.splitlines(keepends=True)
                               if x[:10].decode() >= "2021-05-05"))
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=cache), load_market(data))
    assert cache.stats["append"] == 7 and cache.stats["in_place"] == 5  # 2 new entries
    now = {p.name for p in (tmp_path / "cache" / "entries").glob("*/*.npy")}
    assert len(now - set(entries)) == 2 and set(entries) <= now  # the old ones: grace period


def _bad_append(tmp: Path, source: Path, edit) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    data = tmp / "data"
    rest = _split(source, data, "2021-05-01")
    load_market(data, cache=tmp / "cache")
    path = data / "crypto" / "hourly" / "ETH.csv.gz"
    _append(path, edit(_text(path), rest[path]))
    return data, path


def _low_high(old: bytes, new: bytes) -> bytes:
    """The third new row with its high set below its low."""
    rows = new.splitlines(keepends=True)
    fields = rows[2].split(b",")
    fields[2] = b"0.5"
    rows[2] = b",".join(fields)
    return b"".join(rows)


@pytest.mark.parametrize("edit, rule", [
    (_low_high, "high_ge_low"),
    # the first new row repeats the last cached stamp
    (lambda old, new: old.splitlines(keepends=True)[-1] + new, "unique_timestamps"),
    # the first two new rows swapped
    (lambda old, new: b"".join([*(r := new.splitlines(keepends=True))[1::-1], *r[2:]]),
     "sorted_timestamps"),
])
def test_a_bad_appended_row_fails_with_its_real_line(source: Path, tmp_path: Path, edit,  # type: ignore[no-untyped-def]
                                                     rule: str) -> None:
    data, path = _bad_append(tmp_path, source, edit)
    with pytest.raises(DataValidationError) as plain:
        load_market(data)
    with pytest.raises(DataValidationError) as cached:
        load_market(data, cache=tmp_path / "cache")
    assert cached.value.rule == plain.value.rule == rule
    assert (cached.value.path, cached.value.row) == (path, plain.value.row)
    assert str(cached.value) == str(plain.value) and plain.value.row > 800  # past the cut


def test_appended_hours_shifted_off_the_daily_candles_are_refused(
    source: Path, tmp_path: Path,
) -> None:
    """The hourly/daily check spans the boundary: new hours one hour late fail it."""
    data = tmp_path / "data"
    rest = _split(source, data, "2021-04-20")
    load_market(data, cache=tmp_path / "cache")
    for path, lines in rest.items():
        if path.parent.name == "hourly":  # stamps shifted by +1 h, prices unchanged
            rows = [x.split(b",", 1) for x in lines.splitlines(keepends=True)]
            lines = b"".join((pd.Timestamp(s.decode()) + pd.Timedelta(hours=1))
                             .strftime("%Y-%m-%dT%H:%M:%SZ").encode() + b"," + r
                             for s, r in rows)
        _append(path, lines)
    with pytest.raises(DataValidationError) as plain:
        load_market(data)
    with pytest.raises(DataValidationError) as cached:
        load_market(data, cache=tmp_path / "cache")
    assert cached.value.rule == "hourly_daily_consistency"
    assert str(cached.value) == str(plain.value)


@pytest.mark.parametrize("change", ["edit_same_size", "truncate", "insert", "replace"])
def test_a_file_changed_otherwise_than_by_append_is_read_again(
    source: Path, tmp_path: Path, change: str,
) -> None:
    data = tmp_path / "data"
    _split(source, data, "2099")
    load_market(data, cache=tmp_path / "cache")
    path = data / "crypto" / "daily" / "BTC.csv"
    text, st = path.read_bytes(), path.stat()
    lines = text.splitlines(keepends=True)
    if change == "edit_same_size":  # one digit of a close changed, mtime put back
        i = text.index(b"\n", len(text) // 2) - 1
        text = text[:i] + (b"1" if text[i:i + 1] != b"1" else b"2") + text[i + 1:]
        path.write_bytes(text)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "truncate":
        path.write_bytes(b"".join(lines[:-5]))
    elif change == "insert":
        path.write_bytes(b"".join([*lines[:10], lines[10], *lines[10:]]))
    else:  # a new file renamed over the old one, same content but one line fewer at the head
        (data / "new.tmp").write_bytes(b"".join([lines[0], *lines[2:]]))
        os.replace(data / "new.tmp", path)
    cache = CandleCache(tmp_path / "cache")
    if change == "insert":
        with pytest.raises(DataValidationError) as plain:
            load_market(data)
        with pytest.raises(DataValidationError) as cached:
            load_market(data, cache=cache)
        assert str(cached.value) == str(plain.value) and cached.value.row == 12
        return
    assert_same(load_market(data, cache=cache), load_market(data))
    assert cache.stats["full"] == 1 and served(cache) == 6


def test_a_damaged_cache_is_rebuilt_never_trusted(source: Path, tmp_path: Path) -> None:
    plain = load_market(source)
    load_market(source, cache=tmp_path / "cache")
    entries = sorted((tmp_path / "cache" / "entries").glob("*/*.npy"))
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # a partial write
    entries[1].unlink()
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(source, cache=cache), plain)
    assert cache.stats["full"] == 2 and served(cache) == 5
    (tmp_path / "cache" / "index.json").write_text('{"format": 1, "files": [')  # torn index
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(source, cache=cache), plain)
    assert cache.stats["full"] == 7


def test_verify_catches_a_value_changed_inside_an_entry(source: Path, tmp_path: Path) -> None:
    plain = load_market(source)
    load_market(source, cache=tmp_path / "cache")  # a default load records no entry hash
    cache = CandleCache(tmp_path / "cache", verify=True)
    assert_same(load_market(source, cache=cache), plain)
    assert cache.stats["full"] == 7  # so a verifying load re-reads each source once
    cache = CandleCache(tmp_path / "cache", verify=True)
    assert_same(load_market(source, cache=cache), plain)
    assert served(cache) == 7  # and then trusts the entries it hashed
    for entry in (tmp_path / "cache" / "entries").glob("*/*.npy"):  # bit rot inside the values
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0xFF
        entry.write_bytes(bytes(data))
    cache = CandleCache(tmp_path / "cache", verify=True)
    assert_same(load_market(source, cache=cache), plain)
    assert served(cache) == 0 and cache.stats["full"] == 7


def test_future_rows_and_size_limit_behave_as_without_cache(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_market(source, cache=tmp_path / "cache")
    monkeypatch.setattr(loaders, "_utcnow", lambda: pd.Timestamp("2021-05-12 12:30"))
    plain = load_market(source)
    assert plain.future_rows
    assert_same(load_market(source, cache=tmp_path / "cache"), plain)
    with pytest.raises(DataValidationError) as cached:  # a lower limit refuses a cached file
        load_market(source, max_file_mb=0.05, cache=tmp_path / "cache")
    with pytest.raises(DataValidationError) as uncached:
        load_market(source, max_file_mb=0.05)
    assert str(cached.value) == str(uncached.value)
    assert cached.value.rule == "file_too_large"


def test_an_isolated_disagreement_is_warned_alike_after_an_append(tmp_path: Path) -> None:
    """ETH 2017-09-19: hours and day disagree (one day): the warning, with its counts and first
    day, comes back the same when that day lies in the pair's stored state."""
    source = write_slice(tmp_path / "src", ["ETH"], "2017-08-17", "2017-10-31", macro=())
    for path in (source / "iv").iterdir():  # DVOL starts in 2021
        path.unlink()
    data = tmp_path / "data"
    rest = _split(source, data, "2017-10-05T07:00:00")
    load_market(data, cache=tmp_path / "cache")
    for path, lines in rest.items():
        _append(path, lines)
    plain = load_market(data)
    # besides the absent macro series and market DVOL, which this slice leaves out
    days = [w for w in plain.warnings if "UTC days disagree" in w]
    assert len(plain.warnings) == 3 and len(days) == 1 and "2017-09-19" in days[0]
    for expected in ("pair_partial", "pair_memo"):
        cache = CandleCache(tmp_path / "cache")
        assert_same(load_market(data, cache=cache), plain)
        assert cache.stats[expected] == 1


def _load_and_compare(data: str, cache: str) -> None:
    assert_same(load_market(data, cache=cache), load_market(data))


def _at_once(n: int, data: Path, cache: Path) -> None:
    """``n`` processes loading ``data`` through ``cache`` at the same time; each checks that
    its frames are the uncached load's (a failed check is a non-zero exit code)."""
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_load_and_compare, args=(str(data), str(cache)))
             for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0


def test_two_processes_filling_one_cache_leave_it_whole(source: Path, tmp_path: Path) -> None:
    _at_once(2, source, tmp_path / "c")
    cache = CandleCache(tmp_path / "c")
    assert_same(load_market(source, cache=cache), load_market(source))
    assert served(cache) == 7


def test_processes_growing_one_cache_at_once_each_load_the_truth(source: Path,
                                                                  tmp_path: Path) -> None:
    data = tmp_path / "data"
    rest = _split(source, data, "2021-05-01")
    load_market(data, cache=tmp_path / "c")
    for path, lines in rest.items():
        _append(path, b"".join(x for x in lines.splitlines(keepends=True)
                               if x[:10].decode() < "2021-05-04"))
    _at_once(4, data, tmp_path / "c")  # each process's frames are the uncached load's
    cache = CandleCache(tmp_path / "c")
    assert_same(load_market(data, cache=cache), load_market(data))
    assert served(cache) == 7
    index = json.loads((tmp_path / "c" / "index.json").read_bytes())
    for record in index["files"].values():  # no entry holds fewer rows than a record says
        assert index["extents"].get(record["entry"], record["rows"]) >= record["rows"]


@pytest.mark.slow
def test_embedded_data_cold_and_warm(tmp_path: Path, embedded_market: loaders.MarketData
                                     ) -> None:
    for _ in range(2):
        assert_same(load_market(MARKET, cache=tmp_path / "cache"), embedded_market)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_a_warm_load_keeps_no_file_descriptor_per_entry(tmp_path: Path) -> None:
    """Every entry of a warm load is mapped, and the frames over them stay usable, without a
    descriptor each (``mmap.mmap`` kept one per mapping: 20,000 at 10,000 assets, past the
    process limit)."""
    load_market(MARKET, cache=tmp_path / "cache")
    before = len(os.listdir("/proc/self/fd"))
    market = load_market(MARKET, cache=tmp_path / "cache")
    mapped = sum(len(getattr(market, kind)) for kind in KINDS)
    assert mapped > 25 and len(os.listdir("/proc/self/fd")) - before < 5
    assert market.hourly["BTC"]["close"].notna().all()


def test_load_as_of_through_the_configured_cache(source: Path, tmp_path: Path) -> None:
    cfg = Config.model_validate({"paths": {"outputs_dir": str(tmp_path / "out")}})
    assert candle_cache(cfg).store.root == tmp_path / "out" / "cache" / "candles"  # type: ignore[union-attr]
    off = Config.model_validate({"data": {"cache": {"enabled": False}}})
    assert candle_cache(off) is None
    today = dt.date(2021, 5, 12)
    for as_of in (dt.date(2021, 5, 10), None, None):  # None: cut at yesterday, warned
        plain = load_as_of(source, None, as_of, today=today)
        cached = load_as_of(source, None, as_of, today=today, cache=candle_cache(cfg))
        assert_same(cached.market, plain.market)
        assert (cached.as_of, cached.warnings) == (plain.as_of, plain.warnings)
    assert plain.warnings and plain.as_of == dt.date(2021, 5, 11)


def test_a_cached_frame_is_writable_and_writing_it_leaves_the_cache_alone(
    source: Path, tmp_path: Path,
) -> None:
    load_market(source, cache=tmp_path / "cache")
    frame = load_market(source, cache=tmp_path / "cache").hourly["BTC"]
    first = frame.iloc[0, 0]
    frame.iloc[0, 0] = -1.0  # entries are mapped copy-on-write: this page becomes private
    frame["close"] *= 2
    again = load_market(source, cache=tmp_path / "cache").hourly["BTC"]
    assert again.iloc[0, 0] == first and again.equals(load_market(source).hourly["BTC"])


def test_a_cached_frame_reads_its_stamps_from_the_mapped_entry_without_a_copy(
    source: Path, tmp_path: Path,
) -> None:
    load_market(source, cache=tmp_path / "cache")
    cached = load_market(source, cache=tmp_path / "cache")
    plain = load_market(source)
    def buffer(a: np.ndarray) -> object:  # the object that owns an array's memory
        while isinstance(a.base, np.ndarray):
            a = a.base
        return a if a.base is None else a.base

    for asset, frame in cached.hourly.items():
        # the stamps are a view of the mapped entry, as the prices are (pandas copies an
        # Index's ndarray by default)
        assert buffer(frame.index.asi8) is buffer(frame["close"].to_numpy())
        assert frame.index.equals(plain.hourly[asset].index)


def test_the_append_path_applies_every_validation_rule() -> None:
    assert frozenset(RULE_ORDER) == candle_tail.RULES


def _field(line: bytes, i: int, value: bytes) -> bytes:
    fields = line.rstrip(b"\n").split(b",")
    fields[i] = value
    return b",".join(fields) + b"\n"


DEFECTS = {  # rule -> how to break the second new line (timestamp,open,high,low,close,volume)
    "numeric_values": lambda x: _field(x, 4, b"abc"),
    "timestamp_format": lambda x: x.replace(b"T", b" ", 1).replace(b"Z", b"", 1),
    "parseable_timestamp": lambda x: b"2021-13" + x[7:],
    "finite_values": lambda x: _field(x, 4, b"inf"),
    "unique_timestamps": lambda x: x,  # becomes a copy of the first new line, below
    "hour_grid": lambda x: x.replace(b":00:00Z", b":30:00Z", 1),
    "positive_prices": lambda x: _field(_field(_field(_field(x, 1, b"-1"), 2, b"-1"), 3, b"-1"),
                                        4, b"-1"),
    "non_negative_volume": lambda x: _field(x, 5, b"-5"),
    "high_ge_low": lambda x: x,  # set below: high under low, both under open and close
    "high_ge_open_close": lambda x: _field(x, 2, x.split(b",")[3]),  # high = low
    "low_le_open_close": lambda x: _field(x, 3, x.split(b",")[2]),  # low = high
    "empty_line": lambda x: b"\n",
}


@pytest.mark.parametrize("rule", sorted(DEFECTS))
def test_the_append_path_refuses_what_the_validator_refuses(source: Path, tmp_path: Path,
                                                            rule: str) -> None:
    lines = _text(source / "crypto" / "hourly" / "BTC.csv.gz").splitlines(keepends=True)
    header, old, new = lines[0], lines[:500], lines[500:503]
    cached = loaders.load_hourly(_file(tmp_path / "old.csv", b"".join(old)))
    clean = candle_tail.appended_rows(header, b"".join(new), cached, "hourly", True)
    assert clean is not None and pd.concat([cached, clean]).equals(
        loaders.load_hourly(_file(tmp_path / "all.csv", b"".join(lines[:503]))))
    bad = [new[0], new[0] if rule == "unique_timestamps" else DEFECTS[rule](new[1]), new[2]]
    if rule == "high_ge_low":  # high below low, low still under open and close
        low = float(new[1].split(b",")[3])
        bad[1] = _field(_field(new[1], 3, b"%r" % (low / 2)), 2, b"%r" % (low / 3))
    assert candle_tail.appended_rows(header, b"".join(bad), cached, "hourly", True) is None
    with pytest.raises(DataValidationError):
        loaders.load_hourly(_file(tmp_path / "bad.csv", b"".join(old + bad)))


def test_the_append_path_refuses_dvol_in_decimal_units(tmp_path: Path) -> None:
    """percent_units is a DVOL rule (the hourly defects above cannot break it)."""
    path = MARKET / "iv" / "DVOL_BTC.csv.gz"
    lines = _text(path).splitlines(keepends=True)
    header, old, new = lines[0], lines[:300], lines[300:303]
    cached = loaders.load_dvol(_file(tmp_path / "old.csv", b"".join(old)))
    clean = candle_tail.appended_rows(header, b"".join(new), cached, "dvol", True)
    assert clean is not None and len(clean) == 3
    at = header.rstrip(b"\n").split(b",").index(b"value")
    value = float(new[1].rstrip(b"\n").split(b",")[at])
    bad = [new[0], _field(new[1], at, b"%r" % (value / 100)), new[2]]
    assert candle_tail.appended_rows(header, b"".join(bad), cached, "dvol", True) is None
    with pytest.raises(DataValidationError, match="percent_units"):
        loaders.load_dvol(_file(tmp_path / "bad.csv", b"".join(old + bad)))


def test_the_append_path_refuses_a_value_other_than_the_close(tmp_path: Path) -> None:
    """value_equals_close is a DVOL/macro rule (the hourly defects above cannot break it)."""
    path = MARKET / "iv" / "DVOL_BTC.csv.gz"
    lines = _text(path).splitlines(keepends=True)
    header, old, new = lines[0], lines[:300], lines[300:303]
    cached = loaders.load_dvol(_file(tmp_path / "old.csv", b"".join(old)))
    at = header.rstrip(b"\n").split(b",").index(b"value")
    value = float(new[1].rstrip(b"\n").split(b",")[at])
    bad = [new[0], _field(new[1], at, b"%r" % (value * 1.01)), new[2]]
    assert candle_tail.appended_rows(header, b"".join(bad), cached, "dvol", True) is None
    with pytest.raises(DataValidationError, match="value_equals_close"):
        loaders.load_dvol(_file(tmp_path / "bad.csv", b"".join(old + bad)))


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_keep_going_records_the_same_failures_through_the_cache(source: Path,
                                                                tmp_path: Path) -> None:
    data = tmp_path / "data"
    _split(source, data, "2099")
    load_market(data, cache=tmp_path / "cache")
    path = data / "crypto" / "hourly" / "ETH.csv.gz"
    lines = _text(path).splitlines(keepends=True)
    lines[40] = _field(lines[40], 5, b"-5")  # a negative volume: ETH is not built
    _write(path, b"".join(lines))
    plain = load_market(data, keep_going=True)
    assert list(plain.daily) == ["BTC"] and "non_negative_volume" in str(plain.failures)
    for _ in range(2):
        assert_same(load_market(data, keep_going=True, cache=tmp_path / "cache"), plain)


def test_old_entries_and_leftover_temporary_files_are_collected(source: Path,
                                                                tmp_path: Path) -> None:
    data = tmp_path / "data"
    _split(source, data, "2099")
    load_market(data, cache=tmp_path / "cache")
    entries = tmp_path / "cache" / "entries"
    kept = sorted(p.relative_to(entries) for p in entries.glob("*/*"))
    assert kept and all(p.parent.name == p.name[:2] for p in kept)  # sharded by name
    old = time.time() - 2 * GC_GRACE_S
    (entries / "01").mkdir(exist_ok=True)
    leftovers = [entries / "01" / "0123.npy", entries / "01" / ".0123.npy.abc.tmp",
                 entries / "89ab.npy",  # unsharded: an older format's entry
                 tmp_path / "cache" / ".index.json.abc.tmp"]
    for path in leftovers:
        path.write_bytes(b"left by a killed writer")
        os.utime(path, (old, old))
    (entries / "45").mkdir(exist_ok=True)
    young = entries / "45" / "4567.npy"  # maybe another process's, not yet in the index
    young.write_bytes(b"")
    os.utime(data / "macro" / "SPX.csv.gz")  # touched: its record changes, the index is saved
    load_market(data, cache=tmp_path / "cache")
    assert not any(p.exists() for p in leftovers) and young.exists()
    assert sorted(p.relative_to(entries) for p in entries.glob("*/*")) == sorted(
        [*kept, young.relative_to(entries)])


def test_the_day_check_reads_a_cached_prefix_from_its_block_as_from_its_frame(
        source: Path, tmp_path: Path) -> None:
    load_market(source, cache=tmp_path / "cache")
    cache = CandleCache(tmp_path / "cache")
    load_market(source, cache=cache)
    used = [u for u in cache._used.values() if u.block is not None]
    assert len(used) == 7  # every file served from its entry keeps its block
    for u in used:
        for cut in (u.frame, u.frame.iloc[:-3]):
            side = candle_pairs.Side(u.lineage, u.frame, cut, Path("x"), u.block)
            names = tuple(c for c in ("open", "high", "low", "close") if c in u.frame)
            stamps, values = candle_pairs._side_arrays(side, names)
            plain_stamps, plain_values = candle_pairs._arrays(cut, names)
            assert np.array_equal(stamps, plain_stamps)
            assert all(np.array_equal(values[c], plain_values[c], equal_nan=True)
                       for c in names)


def test_the_day_check_finds_its_rows_as_a_binary_search_over_every_stamp_does(
        source: Path, tmp_path: Path) -> None:
    """``_covers`` reads one stamp and ``_from`` searches the last rows first (a search over
    every stamp of a mapped entry reads its pages from disk one probe at a time): the same
    answers as the plain searches, from the block and from the frame, at every bound."""
    load_market(source, cache=tmp_path / "cache")
    cache = CandleCache(tmp_path / "cache")
    load_market(source, cache=cache)
    used = [u for u in cache._used.values() if u.block is not None]
    assert used
    for u in used:
        stamps = u.frame.index.to_numpy(dtype="datetime64[ns]").view("int64")
        day = 86_400 * 10**9
        bounds = [int(stamps[0]) - day, int(stamps[0]), *stamps[-100:].tolist(),
                  int(stamps[len(stamps) // 2]), int(stamps[-1]) + 1, int(stamps[-1]) + day]
        for n in (len(stamps), len(stamps) - 1, len(stamps) - 30, len(stamps) // 2, 1):
            cut = u.frame.iloc[:n]
            for block in (u.block, None):
                side = candle_pairs.Side(u.lineage, u.frame, cut, Path("x"), block)
                for bound in bounds:
                    plain = int(np.searchsorted(stamps, bound, side="left")) <= n
                    assert candle_pairs._covers(side, int(bound)) == plain
            arrays = candle_pairs._arrays(cut, ("close",))
            for start in bounds:
                got, cols = candle_pairs._from(arrays, int(start))
                i = int(np.searchsorted(arrays[0], start, side="left"))
                assert np.array_equal(got, arrays[0][i:])
                assert np.array_equal(cols["close"], arrays[1]["close"][i:], equal_nan=True)


def _same_as_pandas(hourly: pd.DataFrame, daily: pd.DataFrame) -> int:
    compared, failing = mismatches(hourly, daily)
    days, rows = candle_pairs.mismatch_days(hourly, daily)
    assert len(days) == compared
    assert rows == [(int(pd.Timestamp(r.day).value), r.field, float(r.hourly), float(r.daily))
                    for r in failing.itertuples(index=False)]
    return len(rows)


def test_the_numpy_day_check_equals_mismatches(source: Path, tmp_path: Path) -> None:
    eth = write_slice(tmp_path / "eth", ["ETH"], "2017-08-17", "2017-10-31", macro=())
    hourly = loaders.load_hourly(eth / "crypto" / "hourly" / "ETH.csv.gz")
    daily = loaders.load_daily(eth / "crypto" / "daily" / "ETH.csv.gz")
    assert _same_as_pandas(hourly, daily) == 1  # 2017-09-19's open
    late = hourly.set_axis(hourly.index + pd.Timedelta(hours=1))
    assert _same_as_pandas(late, daily) > 100  # shifted an hour: most days fail
    assert _same_as_pandas(hourly.iloc[5:40], daily.iloc[1:]) == 0  # partial first/last days
    for asset in ("BTC", "ETH"):
        h = loaders.load_hourly(source / "crypto" / "hourly" / f"{asset}.csv.gz")
        d = loaders.load_daily(next((source / "crypto" / "daily").glob(f"{asset}.csv*")))
        _same_as_pandas(h, d)
        _same_as_pandas(h.iloc[-30:], d.iloc[-2:])


@pytest.mark.slow
def test_the_numpy_day_check_equals_mismatches_on_the_embedded_data(
    embedded_market: loaders.MarketData,
) -> None:
    for asset, hourly in embedded_market.hourly.items():
        _same_as_pandas(hourly, embedded_market.daily[asset])


def test_files_validated_before_a_failing_one_stay_cached(source: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _split(source, data, "2099")
    path = data / "macro" / "SPX.csv.gz"  # read last
    good = path.read_bytes()
    path.write_bytes(gzip.compress(_text(path).replace(b",", b";", 3)))  # a broken header
    with pytest.raises(DataValidationError):
        load_market(data, cache=tmp_path / "cache")
    path.write_bytes(good)
    cache = CandleCache(tmp_path / "cache")
    assert_same(load_market(data, cache=cache), load_market(data))
    assert served(cache) == 6 and cache.stats["full"] == 1


def test_entries_judged_by_other_rules_are_not_replayed(source: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache's format carries a digest of the sources of the rules a cached frame and its
    verdicts were judged by: under another digest (an edited rule) every file is read and
    judged again."""
    from features import candle_store

    as_of = dt.date(2021, 5, 10)
    load_market(source, as_of=as_of, cache=CandleCache(tmp_path / "cache"))
    warm = CandleCache(tmp_path / "cache")
    load_market(source, as_of=as_of, cache=warm)
    assert warm.stats["full"] == 0 and served(warm) == 7
    assert f"6-{candle_store._rules_digest()}" == candle_store.FORMAT
    real = Path.read_bytes  # an edited rule (one byte of consistency.py): another digest

    def edited(self: Path) -> bytes:
        data = real(self)
        return data + b"#" if self.name == "consistency.py" else data

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "read_bytes", edited)
        assert candle_store._rules_digest() != candle_store.FORMAT[2:]
    monkeypatch.setattr(candle_store, "FORMAT", "6-" + "0" * 16)  # the rules were edited
    edited = CandleCache(tmp_path / "cache")
    assert_same(load_market(source, as_of=as_of, cache=edited), load_market(source, as_of=as_of))
    assert edited.stats["full"] == 7 and served(edited) == 0

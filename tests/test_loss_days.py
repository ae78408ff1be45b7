"""Stored per-day worst losses (features/loss_days.py): a serve that reads them builds the same
panel, bit for bit, as one that computes every day, and reads only the hourly candles of the
days it has not seen; an edited file, a trimmed frame or a damaged table is computed again."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_slice

from configs.schema import Config
from features import fast
from features.candle_cache import CandleCache
from features.fast import fast_columns, fast_panel, stored_names
from features.loaders import MarketData, load_market
from features.loss_days import REFRESH_DAYS, Known, LossDays, due, tag
from features.losses import LOSS_COLUMNS
from features.window import trailing_market

CFG = Config().features
# the stored rows of a full serve: every loss column, then the day's hourly extremes
NAMES = stored_names(list(range(len(LOSS_COLUMNS))))
# days a window reaches back: the delay and the outage hours it may bridge
WARM = -(-(CFG.liquidation_delay_hours + CFG.outage_bridge_hours) // 24)


def _lookup(store: LossDays, sources: dict[int, tuple[str, str]]) -> dict[int, Known]:
    return store.lookup(CFG.liquidation_delay_hours, NAMES, sources, CFG.outage_bridge_hours)
# BTC and SOL hourly, AAVE daily only (no hourly lineage: the range proxy)
ASSETS = ["AAVE", "BTC", "SOL"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three assets' real candles, 2021-01-01 to 2021-09-30, as plain CSV (appendable)."""
    root = write_slice(tmp_path_factory.mktemp("src"), ASSETS, "2021-01-01", "2021-09-30")
    for gz in (root / "crypto").rglob("*.csv.gz"):
        gz.with_name(gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    return root


def _split(src: Path, dest: Path, cut: str) -> dict[Path, bytes]:
    """``src`` copied to ``dest`` with the rows stamped from ``cut`` on held back; returns the
    lines each file's later append adds."""
    rest = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dest / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") \
            else path.read_bytes()
        lines = raw.splitlines(keepends=True)
        keep = [lines[0]] + [x for x in lines[1:] if x[:19].decode() < cut]
        data = b"".join(keep)
        out.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
        rest[out] = b"".join(lines[len(keep):])
    return rest


def _append(rest: dict[Path, bytes], through: str) -> None:
    """Append to each file its held-back lines stamped up to ``through`` (inclusive day)."""
    for path, lines in rest.items():
        now = [x for x in lines.splitlines(keepends=True) if x[:10].decode() <= through]
        if path.name.endswith(".gz"):
            old = gzip.decompress(path.read_bytes())
            path.write_bytes(gzip.compress(old + b"".join(now)))
        else:
            with open(path, "ab") as fh:
                fh.write(b"".join(now))
        rest[path] = lines[sum(len(x) for x in now):]


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Hourly candles each fast_panel call computed worst losses from (one entry a call)."""
    seen: list[int] = []
    original = fast._day_losses

    def counting(parts, H, which, bridge):  # type: ignore[no-untyped-def]
        seen.append(sum(len(p.hour_ns) for p in parts))
        return original(parts, H, which, bridge)

    monkeypatch.setattr(fast, "_day_losses", counting)
    return seen


def _panel(market: MarketData, as_of: dt.date, tail_days: int | None,
           store: LossDays | None) -> pd.DataFrame:
    return fast_panel(market, CFG, as_of, 40, tail_days, fast_columns(CFG), store)


def _hours(market: MarketData) -> int:
    return sum(len(f) for f in market.hourly.values())


@pytest.mark.parametrize("tail_days", [3652, 120])  # the whole history; a tail cut
def test_stored_days_give_the_same_panel_and_only_new_hours_are_read(
        source: Path, tmp_path: Path, computed: list[int], tail_days: int) -> None:
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    store = LossDays(cache_dir / "losses")
    rest = _split(source, data, "2021-08-01T11:00:00")  # mid-day: that day grows later
    day = dt.date(2021, 8, 1)
    market = load_market(data, ASSETS, day, cache=CandleCache(cache_dir))
    assert sorted(market.hourly_lineage) == ["BTC", "SOL"]  # AAVE has no hourly file
    first = _panel(market, day, tail_days, store)
    pd.testing.assert_frame_equal(first, _panel(market, day, tail_days, None), check_exact=True)
    assert computed[0] == computed[1]  # nothing stored yet: every day computed
    key, lineage = market.hourly_lineage["BTC"]  # stored under the lineage and first candle
    origin = f"{lineage}@{market.hourly['BTC'].index[0].value}"
    stored = _lookup(store, {0: (key, origin)})[0]
    assert stored.end == pd.Timestamp(day).value // 86_400_000_000_000  # days before the last
    assert _lookup(store, {0: (key, lineage)}) == {}

    # daily appends: each serve computes only the days after the stored ones
    for through in ("2021-08-02", "2021-08-05", "2021-08-20", "2021-08-23"):
        stored_end = _lookup(store,
                                  {0: (key, origin)})[0].end
        _append(rest, through)
        day = dt.date.fromisoformat(through)
        market = load_market(data, ASSETS, day, cache=CandleCache(cache_dir))
        got = _panel(market, day, tail_days, store)
        want = _panel(market, day, tail_days, None)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        reused, full = computed[-2], computed[-1]
        assert full == _hours(market) if tail_days == 3652 else full < _hours(market)
        # per asset: the days from the stored end through the as-of, the warm-up days before
        # them and (a tail cut) the span's first days, whose windows the cut shortens
        lag = day.toordinal() - dt.date(1970, 1, 1).toordinal() - stored_end + 1
        bound = 2 * 24 * (lag + WARM + WARM * (tail_days != 3652))
        assert reused <= bound < full, (through, reused, full)
        if lag < REFRESH_DAYS:  # not rewritten: the next serve starts from the same days
            assert _lookup(store,
                                {0: (key, origin)})[0].end == stored_end

    # an earlier as-of than the stored days (a replay): same panel, stored days reused
    early = dt.date(2021, 8, 12)
    market = load_market(data, ASSETS, early, cache=CandleCache(cache_dir))
    pd.testing.assert_frame_equal(_panel(market, early, tail_days, store),
                                  _panel(market, early, tail_days, None), check_exact=True)
    # per asset: the as-of's day and a day's slack, the warm-up days before it and (a tail
    # cut) the span's first days
    assert computed[-2] <= 2 * 24 * (2 + 2 * WARM) < computed[-1] / 10


def _served(source: Path, tmp_path: Path) -> tuple[Path, Path, LossDays, dt.date, MarketData]:
    """The data through 2021-09-30 loaded through a fresh cache, its panel built once with a
    fresh store (every day computed and stored): data dir, cache dir, store, as-of, market."""
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    store = LossDays(cache_dir / "losses")
    _split(source, data, "2021-10-01")
    day = dt.date(2021, 9, 30)
    market = load_market(data, ASSETS, day, cache=CandleCache(cache_dir))
    _panel(market, day, 3652, store)
    return data, cache_dir, store, day, market


def test_an_edited_file_is_computed_again_and_a_trimmed_frame_is_not_reused(
        source: Path, tmp_path: Path, computed: list[int]) -> None:
    data, cache_dir, store, day, market = _served(source, tmp_path)
    # a close of 2021-03-10 changed: not an append, the file is re-read under a new lineage
    path = data / "crypto" / "hourly" / "SOL.csv"
    lines = path.read_bytes().splitlines(keepends=True)
    k = next(i for i, x in enumerate(lines) if x.startswith(b"2021-03-10T05"))
    fields = lines[k].split(b",")
    fields[4] = str(float(fields[4]) * 0.5).encode()  # close, inside the high/low range
    fields[3] = fields[4]  # low
    lines[k] = b",".join(fields)
    path.write_bytes(b"".join(lines))
    edited = load_market(data, ASSETS, day, cache=CandleCache(cache_dir))
    assert edited.hourly_lineage["SOL"] != market.hourly_lineage["SOL"]
    assert edited.hourly_lineage["BTC"] == market.hourly_lineage["BTC"]
    got = _panel(edited, day, 3652, store)
    pd.testing.assert_frame_equal(got, _panel(edited, day, 3652, None), check_exact=True)
    sol = len(edited.hourly["SOL"])
    # SOL all, BTC its last day and the warm-up days before it
    assert sol < computed[-2] <= sol + 24 * (1 + WARM)
    worst = got.xs("SOL", level="asset").loc["2021-03-10", "worst_loss_long"]
    assert worst != _panel(market, day, 3652, None).xs("SOL", level="asset").loc[
        "2021-03-10", "worst_loss_long"]
    # the same lineage trimmed at its start (trailing_market): its first windows differ from
    # the whole history's, so nothing stored is reused for it
    trimmed = trailing_market(edited, day, 100)
    got = _panel(trimmed, day, 3652, store)
    pd.testing.assert_frame_equal(got, _panel(trimmed, day, 3652, None), check_exact=True)
    assert computed[-2] == computed[-1] == _hours(trimmed)


def test_a_damaged_or_missing_table_is_computed_not_trusted(
        source: Path, tmp_path: Path, computed: list[int]) -> None:
    _, cache_dir, store, day, market = _served(source, tmp_path)
    want = _panel(market, day, 3652, None)
    table = next((cache_dir / "losses").glob("H*.npy"))
    table.write_bytes(table.read_bytes()[:-800])  # short: another shape
    pd.testing.assert_frame_equal(_panel(market, day, 3652, store), want, check_exact=True)
    assert computed[-1] == _hours(market)  # computed in full, and stored again
    (cache_dir / "losses" / "index.json").write_text("{not json")
    pd.testing.assert_frame_equal(_panel(market, day, 3652, store), want, check_exact=True)
    assert computed[-1] == _hours(market)
    for table in (cache_dir / "losses").glob("H*.npy"):
        table.unlink()
    pd.testing.assert_frame_equal(_panel(market, day, 3652, store), want, check_exact=True)
    assert computed[-1] == _hours(market)
    # and the stored values are the ones read: a changed value changes the panel
    pd.testing.assert_frame_equal(_panel(market, day, 3652, store), want, check_exact=True)
    assert computed[-1] < _hours(market) / 10
    index = store._index()["tables"][tag(CFG.liquidation_delay_hours, NAMES,
                                           CFG.outage_bridge_hours)]
    path = cache_dir / "losses" / index["file"]
    values = np.load(path)
    key = market.hourly_lineage["BTC"][0]
    _, first, _, offset = index["sources"][key]
    at = offset + (pd.Timestamp("2021-06-15").value // 86_400_000_000_000 - first)
    values[0, at] = 0.5  # a long loss of 39% that day
    np.save(path, values)
    poisoned = _panel(market, day, 3652, store)
    btc = poisoned.xs("BTC", level="asset")["worst_loss_long"]
    assert btc.loc["2021-06-15"] == 0.5 != want.xs("BTC", level="asset").loc[
        "2021-06-15", "worst_loss_long"]


def test_a_table_is_rewritten_only_when_due() -> None:
    days = Known(100, np.zeros((2, 50)), np.zeros(50))
    assert due({}, {0: 150})  # nothing stored
    assert not due({0: days}, {0: 150 + REFRESH_DAYS - 1})
    assert due({0: days}, {0: 150 + REFRESH_DAYS})
    assert due({0: days}, {0: 150, 1: 120})  # a new source
    assert not due({0: days}, {})


def _outage_asset(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """30 days of one asset's hourly random walk, starting at a random hour, with six
    outages of 1-40 hours (some across midnight, some longer than any bridge tried); the
    daily candles are those of every hour, so a day's extremes may lie in its missing ones."""
    start = pd.Timestamp("2024-01-01") + pd.Timedelta(hours=int(rng.integers(0, 20)))
    idx = pd.date_range(start, "2024-01-30 23:00", freq="h", name="timestamp")
    c = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, len(idx))))
    o = np.r_[100.0, c[:-1]]
    frame = pd.DataFrame({"open": o, "high": np.maximum(o, c) * 1.001,
                          "low": np.minimum(o, c) / 1.001, "close": c, "volume": 1.0},
                         index=idx)
    daily = frame.groupby(frame.index.floor("D")).agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    daily.index.name = "date"
    keep = np.ones(len(frame), dtype=bool)
    for _ in range(6):
        at, hours = int(rng.integers(0, len(frame))), int(rng.choice([1, 3, 8, 20, 26, 40]))
        keep[at:at + hours] = False
    return daily, frame[keep]


@pytest.mark.parametrize("seed", range(12))
def test_outages_of_any_length_give_the_full_builds_losses_with_and_without_stored_days(
        seed: int, tmp_path: Path) -> None:
    """Random outages, delays, bridges and intervals; three serves of growing files, each
    cut mid-outage or not: the vectorised build with stored days, without them, and the
    per-asset build of the same trimmed frames agree bit for bit, for every loss column
    and for the proxy flag asked for alone (the covered loss ``close_to_close`` serves)."""
    from configs.schema import FeaturesConfig
    from features.build import TAIL_COLUMNS, tail_features
    from features.losses import PROXY_FLAG

    rng = np.random.default_rng(seed)
    cfg = FeaturesConfig(liquidation_delay_hours=int(rng.choice([1, 2, 5])),
                         outage_bridge_hours=int(rng.choice([0, 3, 24, 30])),
                         update_interval_days=int(rng.choice([1, 2])))
    daily, hourly = _outage_asset(rng)
    store = LossDays(tmp_path / "losses")
    flagged = 0
    for n in sorted(rng.integers(24 * 5, len(hourly), 3)):
        hours = hourly.iloc[:n]
        last = hours.index[-1].floor("D")
        market = MarketData(daily={"A": daily.loc[:last]}, hourly={"A": hours}, dvol={},
                            macro={}, gaps=pd.DataFrame(), data_dir=tmp_path,
                            hourly_lineage={"A": (str(tmp_path / "A.csv"), "L1")})
        tail = int(rng.choice([10, 15, 1000]))
        trimmed = trailing_market(market, last.date(), tail)
        want = tail_features(trimmed.daily["A"], trimmed.hourly["A"], cfg)
        for columns in (list(TAIL_COLUMNS), [PROXY_FLAG, "ret_1d"]):
            stored = fast_panel(market, cfg, last.date(), tail, tail, columns, store)
            plain = fast_panel(market, cfg, last.date(), tail, tail, columns, None)
            pd.testing.assert_frame_equal(stored, plain, check_exact=True)
            got = stored.xs("A", level="asset")
            pd.testing.assert_frame_equal(got, want[list(got.columns)].rename_axis("date"),
                                          check_exact=True, check_freq=False)
        flagged += int(want[PROXY_FLAG].sum())
    assert flagged > 0  # the outages left some days to the proxy

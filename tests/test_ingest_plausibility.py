"""Implausible rows are held back and reported, never appended; real history is never held."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.loaders import TIMESTAMP_FORMAT, load_daily, load_dvol, load_macro
from pipelines.ingest import ingest
from pipelines.ingest.plausibility import PlausibilitySettings, screen
from tests.conftest import MARKET, write_slice
from tests.replay.fake_api import FakeApis
from tests.replay.harness import daily_market, settings_for, small_market, text

UNTIL = "2025-07-06T12:00:00Z"
DAILY = "crypto/daily/BTC.csv.gz"
QUARANTINE = ".quarantine/held.jsonl"


@pytest.fixture
def market(tmp_path: Path) -> Path:
    return daily_market(tmp_path / "market")


def _quarantine(market: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (market / QUARANTINE).read_text().splitlines()]


def test_a_btc_candle_at_1_2e12_is_held_with_everything_after_it(
    api: FakeApis, market: Path
) -> None:
    api.klines[("BTCUSDT", "1d")][3][2] = "1200000000000.00000000"  # 2025-07-03 high
    api.klines[("BTCUSDT", "1d")][3][4] = "1200000000000.00000000"  # ... and close
    before = load_daily(market / DAILY)
    report = ingest(market, ["binance"], UNTIL, settings=settings_for(api.url))
    daily = report.file(DAILY)
    assert (daily.appended, daily.last_timestamp) == (2, "2025-07-02T00:00:00Z")
    assert [(h.timestamp, h.rule) for h in daily.held] == [
        ("2025-07-03T00:00:00Z", "close_jump"), ("2025-07-04T00:00:00Z", "after_held"),
        ("2025-07-05T00:00:00Z", "after_held")]
    # Known answer: |ln(1.2e12 / 108849.6)| over the median ln(high/low) of the 30 rows before.
    stored = load_daily(market / DAILY)
    assert stored.index[-1] == pd.Timestamp("2025-07-02") and len(stored) == len(before) + 2
    scale = float(np.median(np.log(stored["high"] / stored["low"]).iloc[-30:]))
    assert daily.held[0].value == pytest.approx(np.log(1.2e12 / 108849.6) / scale)
    assert daily.held[0].value > 500 and daily.held[0].limit == 25.0
    assert not daily.ok and report.to_frame().set_index("file").loc[DAILY, "status"] == "held"
    assert report.problems() == [
        f"{DAILY}: held back, not appended (implausible): {daily.held[0]}; 2 later row(s) "
        "held after it"]
    logged = _quarantine(market)
    assert [(e["file"], e["timestamp"], e["rule"]) for e in logged] == [
        (DAILY, h.timestamp, h.rule) for h in daily.held]
    assert logged[0]["row"]["close"] == 1.2e12 and logged[0]["limit"] == 25.0


def test_a_held_row_is_held_again_until_the_provider_corrects_it(
    api: FakeApis, market: Path, tmp_path: Path
) -> None:
    reference = small_market(tmp_path / "reference")
    shutil.rmtree(reference / "crypto" / "hourly")
    ingest(reference, ["binance"], UNTIL, settings=settings_for(api.url))
    good = list(api.klines[("BTCUSDT", "1d")][3])
    api.klines[("BTCUSDT", "1d")][3][2] = api.klines[("BTCUSDT", "1d")][3][4] = "1.2e12"
    ingest(market, ["binance"], UNTIL, settings=settings_for(api.url))
    after_first = text(market / DAILY)
    again = ingest(market, ["binance"], UNTIL, settings=settings_for(api.url)).file(DAILY)
    assert (again.appended, len(again.held)) == (0, 3) and text(market / DAILY) == after_first
    api.klines[("BTCUSDT", "1d")][3] = good  # the provider fixed its candle
    fixed = ingest(market, ["binance"], UNTIL, settings=settings_for(api.url)).file(DAILY)
    assert (fixed.appended, fixed.held, fixed.ok) == (3, [], True)
    assert text(market / DAILY) == text(reference / DAILY)


def test_a_larger_k_lets_the_operator_accept_a_real_move(api: FakeApis, market: Path) -> None:
    api.klines[("BTCUSDT", "1d")][3][2] = api.klines[("BTCUSDT", "1d")][3][4] = "1.2e12"
    loose = PlausibilitySettings(k_daily=1000.0)
    report = ingest(market, ["binance"], UNTIL,
                    settings=settings_for(api.url, plausibility=loose)).file(DAILY)
    assert (report.appended, report.held) == (5, [])


def test_a_dvol_quoted_in_the_wrong_unit_is_held(api: FakeApis, market: Path) -> None:
    api.dvol["BTC"]["result"]["data"][3][2] = 3612.0  # 2025-07-03 high, x100
    api.dvol["BTC"]["result"]["data"][3][4] = 3612.0  # close
    report = ingest(market, ["deribit"], UNTIL, settings=settings_for(api.url))
    dvol = report.file("iv/DVOL_BTC.csv.gz")
    assert dvol.appended == 2 and [h.rule for h in dvol.held] == [
        "close_jump", "after_held", "after_held"]
    assert dvol.held[0].timestamp == "2025-07-03T00:00:00Z" and dvol.held[0].value > 25
    assert load_dvol(market / "iv/DVOL_BTC.csv.gz").index[-1] == pd.Timestamp("2025-07-02")
    assert [e["file"] for e in _quarantine(market)] == ["iv/DVOL_BTC.csv.gz"] * 3


def test_a_fred_yield_with_a_shifted_decimal_is_held(api: FakeApis, market: Path) -> None:
    for obs in api.fred["DGS10"]["observations"]:
        if obs["date"] == "2025-07-03":
            obs["value"] = "43.5"  # 4.35 with the decimal point shifted
    report = ingest(market, ["fred"], "2025-07-09", settings=settings_for(api.url))
    us10y = report.file("macro/US10Y.csv.gz")
    assert us10y.appended == 2 and us10y.held[0].rule == "value_jump"
    # Yields may be <= 0: the move is measured in levels (percentage points), not logs.
    assert "vs previous value 4.3: move 39.2 = 980.0 x" in us10y.held[0].detail
    assert us10y.held[0].value == pytest.approx((43.5 - 4.3) / 0.04)  # median |change| 4 bp
    assert [h.timestamp for h in us10y.held] == [
        "2025-07-03T00:00:00Z", "2025-07-07T00:00:00Z", "2025-07-08T00:00:00Z"]
    assert load_macro(market / "macro/US10Y.csv.gz").index[-1] == pd.Timestamp("2025-07-02")


@pytest.mark.parametrize(("relpath", "day"), [
    ("crypto/daily/BTC.csv.gz", "2020-03-12"),   # largest daily ratio before 2021 (11.0)
    ("crypto/daily/TRX.csv.gz", "2024-12-03"),   # largest daily ratio of all (18.4)
    ("crypto/daily/LINK.csv.gz", "2020-03-12"),  # flash-crash low 0.0001: a real wick
    ("iv/DVOL_ETH.csv.gz", "2025-02-03"),        # largest DVOL ratio (13.0)
    ("macro/VIX.csv.gz", "2018-02-05"),          # largest macro ratio (25.6)
])
def test_the_most_extreme_stored_days_are_not_held(relpath: str, day: str) -> None:
    loader = {"crypto": load_daily, "iv": load_dvol, "macro": load_macro}[relpath.split("/")[0]]
    stored = loader(MARKET / relpath)
    kind = {"crypto": "daily", "iv": "dvol", "macro": "macro"}[relpath.split("/")[0]]
    history = stored.loc[: pd.Timestamp(day) - pd.Timedelta(days=1)]
    new = stored.loc[[pd.Timestamp(day)]].reset_index(names="timestamp")
    if kind == "macro":
        new, history = new[["timestamp", "value"]], history[["value"]]
    kept, held = screen(history, new, kind, True, PlausibilitySettings(), TIMESTAMP_FORMAT)
    assert held == [] and len(kept) == 1
    wrong_unit = new.assign(**{c: new[c] * 100 for c in new.columns if c != "timestamp"})
    assert screen(history, wrong_unit, kind, True, PlausibilitySettings(),
                  TIMESTAMP_FORMAT)[1][0].rule in ("close_jump", "value_jump")


def _candles(closes: list[float]) -> pd.DataFrame:
    stamps = pd.date_range("2025-01-01", periods=len(closes), freq="D")
    close = np.asarray(closes, dtype=float)
    return pd.DataFrame({"timestamp": stamps, "open": close, "high": close * 1.02,
                         "low": close * 0.98, "close": close, "volume": 1.0})


def test_non_finite_prices_are_held_and_short_histories_skip_the_jump_rules() -> None:
    history = _candles([100.0] * 5).set_index("timestamp")
    new = _candles([100.0] * 7).iloc[5:].reset_index(drop=True)
    new.loc[0, "close"] = 1e9  # a jump, but 5 rows are too few to measure one against
    settings = PlausibilitySettings()
    assert len(screen(history, new, "daily", True, settings, TIMESTAMP_FORMAT)[0]) == 2
    new.loc[1, "high"] = np.inf
    kept, held = screen(history, new, "daily", True, settings, TIMESTAMP_FORMAT)
    assert len(kept) == 1 and held[0].rule == "finite_positive" and "high inf" in held[0].detail
    off = replace(settings, enabled=False)
    assert len(screen(history, new, "daily", True, off, TIMESTAMP_FORMAT)[0]) == 2


def test_accepted_rows_of_a_page_extend_the_history_of_later_ones() -> None:
    history = _candles([100.0] * 30).set_index("timestamp")
    # A +5% close each day: 1.2x the 4% range, never a jump; then one day at x3 (27x).
    closes = [100.0 * 1.05 ** i for i in range(1, 6)] + [100.0 * 1.05 ** 5 * 3]
    new = _candles([100.0] * 30 + closes).iloc[30:].reset_index(drop=True)
    kept, held = screen(history, new, "daily", True, PlausibilitySettings(), TIMESTAMP_FORMAT)
    assert len(kept) == 5 and held[0].rule == "close_jump"
    assert held[0].value == pytest.approx(np.log(3) / np.log(1.02 / 0.98))


def test_the_scan_reproduces_the_screens_ratio_and_the_documented_maximum(
    tmp_path: Path,
) -> None:
    from pipelines.ingest.plausibility_scan import scan

    root = write_slice(tmp_path, ["BTC"], "2020-01-01", "2020-06-30", macro=("US10Y",))
    shutil.rmtree(root / "crypto" / "hourly")
    shutil.rmtree(root / "iv")  # DVOL starts in 2021: empty in this slice
    table = scan(root, before="2021-01-01")
    top = table.iloc[0]
    assert (top["file"], top["rule"], top["timestamp"]) == (
        "crypto/daily/BTC.csv.gz", "close_jump", pd.Timestamp("2020-03-12"))
    assert top["ratio"] == pytest.approx(11.04, abs=0.005)  # as in the module docstring
    # The screen holds that day exactly when k is below the scanned ratio.
    stored = load_daily(root / DAILY)
    history = stored.loc[:"2020-03-11"]
    day = stored.loc[["2020-03-12"]].reset_index(names="timestamp")
    for k, held in ((11.0, True), (11.1, False)):
        _, found = screen(history, day, "daily", True, PlausibilitySettings(k_daily=k),
                          TIMESTAMP_FORMAT)
        assert bool(found) is held
        if held:
            assert found[0].value == pytest.approx(top["ratio"])


def test_an_hourly_candle_is_screened_with_the_hourly_k(api: FakeApis, tmp_path: Path) -> None:
    market = small_market(tmp_path / "hourly")
    kline = api.klines[("BTCUSDT", "1h")][4]  # 2025-07-01T03:00
    kline[2] = kline[4] = str(float(kline[4]) * 10)  # high and close x10
    report = ingest(market, ["binance"], "2025-07-01T06:30:00Z", settings=settings_for(api.url))
    hourly = report.file("crypto/hourly/BTC.csv.gz")
    assert (hourly.appended, hourly.last_timestamp) == (3, "2025-07-01T02:00:00Z")
    assert [h.rule for h in hourly.held] == ["close_jump", "after_held", "after_held"]
    assert hourly.held[0].timestamp == "2025-07-01T03:00:00Z" and hourly.held[0].limit == 100.0

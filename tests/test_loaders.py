"""Loaders: real embedded data loads unchanged; malformed files fail on the right line and rule."""

from __future__ import annotations

import datetime
import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.loaders import (
    DataValidationError,
    MarketData,
    discover_assets,
    gap_report,
    load_daily,
    load_dvol,
    load_hourly,
    load_macro,
    load_market,
)
from features.rawfiles import RESERVED_NAMES

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "market"

# kind -> (loader, real file to slice, price column to corrupt)
KINDS: dict[str, tuple[Callable[[Path], pd.DataFrame], str, str]] = {
    "daily": (load_daily, "crypto/daily/BTC.csv.gz", "close"),
    "hourly": (load_hourly, "crypto/hourly/BTC.csv.gz", "close"),
    "dvol": (load_dvol, "iv/DVOL_BTC.csv.gz", "value"),
    "macro": (load_macro, "macro/SPX.csv.gz", "value"),
}

Rows = list[list[str]]


def read_rows(relative: str, n: int) -> Rows:
    """Header plus the first ``n`` data rows of a real file, as lists of fields."""
    with gzip.open(DATA_DIR / relative, "rt") as fh:
        return [next(fh).rstrip("\n").split(",") for _ in range(n + 1)]


def write_rows(path: Path, rows: Rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        fh.write("".join(",".join(row) + "\n" for row in rows))
    return path


def set_field(rows: Rows, data_row: int, column: str, value: str) -> Rows:
    rows = [list(r) for r in rows]
    rows[data_row + 1][rows[0].index(column)] = value
    return rows


@pytest.fixture(scope="module")
def market() -> MarketData:
    return load_market(DATA_DIR)


# ---------------------------------------------------------------- real embedded data


def test_btc_daily_matches_readme(market: MarketData) -> None:
    btc = market.daily["BTC"]
    assert len(btc) == 2875
    assert btc.index.name == "date"
    assert btc.index[0] == pd.Timestamp("2017-08-17")
    assert btc.index[-1] == pd.Timestamp("2025-06-30")
    assert btc.index.tz is None and str(btc.index.dtype) == "datetime64[ns]"
    assert list(btc.columns) == ["open", "high", "low", "close", "volume"]
    assert (btc.dtypes == "float64").all()
    assert btc["open"].iloc[0] == 4261.48


def test_values_are_loaded_unchanged(market: MarketData) -> None:
    raw = pd.read_csv(DATA_DIR / "crypto/hourly/ETH.csv.gz")
    hourly = market.hourly["ETH"]
    assert len(hourly) == len(raw) == 68854
    np.testing.assert_array_equal(hourly["close"].to_numpy(), raw["close"].to_numpy())
    assert hourly.index[0] == pd.Timestamp("2017-08-17 04:00")


def test_market_has_every_embedded_file(market: MarketData) -> None:
    assert sorted(market.daily) == discover_assets(DATA_DIR)
    assert len(market.daily) == 12
    # Every asset but AAVE has hourly candles (README: no hourly AAVE history was found).
    assert sorted(market.hourly) == sorted(set(market.daily) - {"AAVE"})
    assert sorted(market.dvol) == ["BTC", "ETH"]
    macro = ["DXY", "GLD", "GOLD", "NDX", "QQQ", "SPX", "SPY", "US10Y", "VIX"]
    assert sorted(market.macro) == macro
    assert len(market.files) == 12 + 11 + 2 + 9 and all(p.is_file() for p in market.files)
    assert list(market.dvol["BTC"].columns) == ["value", "open", "high", "low", "close"]
    assert list(market.macro["NDX"].columns) == ["value"]
    assert market.macro["US10Y"].index.name == "date"


def test_hourly_outage_gaps_are_reported(market: MarketData) -> None:
    gaps = market.gaps
    btc = gaps[gaps["source"] == "crypto/hourly/BTC.csv.gz"]
    eth = gaps[gaps["source"] == "crypto/hourly/ETH.csv.gz"]
    # README: BTC 28 gaps / 170 missing hours, ETH 34 / 142; daily files have none.
    assert (len(btc), btc["missing"].sum()) == (28, 170)
    assert (len(eth), eth["missing"].sum()) == (34, 142)
    assert not gaps["source"].str.startswith("crypto/daily/").any()
    largest = btc.loc[btc["missing"].idxmax()]
    assert largest["gap_start"] == pd.Timestamp("2018-02-08 01:00")
    assert largest["gap_end"] == pd.Timestamp("2018-02-11 03:00")
    assert largest["missing"] == 75
    # Gaps are reported, never filled.
    assert pd.Timestamp("2018-02-09 12:00") not in market.hourly["BTC"].index


def test_as_of_cuts_every_series_point_in_time() -> None:
    as_of = datetime.date(2021, 6, 30)
    cut = load_market(DATA_DIR, assets=["BTC", "AAVE"], as_of=as_of)
    day = pd.Timestamp(as_of)
    assert sorted(cut.daily) == ["AAVE", "BTC"] and sorted(cut.hourly) == ["BTC"]
    assert cut.daily["BTC"].index[-1] == day
    assert cut.hourly["BTC"].index[-1] == pd.Timestamp("2021-06-30 23:00")
    assert cut.dvol["ETH"].index[-1] == day
    for frame in [*cut.daily.values(), *cut.dvol.values(), *cut.macro.values()]:
        assert frame.index.max() <= day
    assert cut.macro["SPX"].index[-1] == pd.Timestamp("2021-06-30")
    assert (cut.gaps["gap_end"] <= pd.Timestamp("2021-06-30 23:00")).all()
    # BTC daily from 2017-08-17 through 2021-06-30 inclusive, no missing days.
    assert len(cut.daily["BTC"]) == (day - pd.Timestamp("2017-08-17")).days + 1


# ---------------------------------------------------------------- directory handling


def copy_assets(tmp_path: Path, symbols: list[str]) -> Path:
    daily = tmp_path / "crypto" / "daily"
    daily.mkdir(parents=True)
    for sym in symbols:
        shutil.copy(DATA_DIR / "crypto" / "daily" / f"{sym}.csv.gz", daily)
    return tmp_path


def test_discover_assets_on_partial_copy(tmp_path: Path) -> None:
    root = copy_assets(tmp_path, ["SOL", "BTC", "LINK"])
    (root / "crypto" / "daily" / "README.md").write_text("not data")
    (root / "crypto" / "daily" / ".BTC.csv.gz.swp").write_text("editor junk")
    assert discover_assets(root) == ["BTC", "LINK", "SOL"]
    data = load_market(root)
    assert sorted(data.daily) == ["BTC", "LINK", "SOL"]
    assert data.hourly == {} and data.dvol == {} and data.macro == {}
    assert data.gaps.empty
    assert list(data.gaps.columns) == ["source", "gap_start", "gap_end", "missing"]


def test_absent_macro_and_market_dvol_are_said_not_silent(tmp_path: Path) -> None:
    """A data directory without macro series or the market's DVOL loads (their features are
    NaN), but each absence is a warning naming the directory, the series and what reads it."""
    root = copy_assets(tmp_path, ["SOL", "ETH"])
    (root / "macro").mkdir()
    shutil.copy(DATA_DIR / "macro" / "SPX.csv.gz", root / "macro")
    (root / "iv").mkdir()
    shutil.copy(DATA_DIR / "iv" / "DVOL_ETH.csv.gz", root / "iv")
    data = load_market(root)
    assert sorted(data.macro) == ["SPX"] and sorted(data.dvol) == ["ETH"]
    macro, dvol = (w for w in data.warnings if "macro" in w or "DVOL" in w)
    assert macro.startswith(f"{root / 'macro'}: no file for macro series NDX, DXY, GOLD, VIX, "
                            "US10Y (NAME.csv.gz)")
    assert "VIX level and regime are unknown" in macro and "SPX" not in macro
    # SOL has no DVOL of its own and would read BTC's; ETH has its own, so it is not named
    assert dvol.startswith(f"{root / 'iv'}: no DVOL_BTC.csv.gz") and "(SOL)" in dvol
    # the market DVOL is not asked for when every asset loaded has its own
    assert not any("DVOL" in w for w in load_market(root, assets=["ETH"]).warnings)


def test_embedded_data_has_every_feature_input(market: MarketData) -> None:
    assert not [w for w in market.warnings if "no file for" in w or "no DVOL_" in w]


def test_requested_asset_without_file_is_an_error(tmp_path: Path) -> None:
    root = copy_assets(tmp_path, ["BTC"])
    with pytest.raises(DataValidationError) as exc:
        load_market(root, assets=["BTC", "DOGE"])
    assert exc.value.rule == "asset_missing" and exc.value.row is None
    assert "DOGE" in str(exc.value) and str(root / "crypto" / "daily") in str(exc.value)


def test_two_files_for_one_asset_are_refused(tmp_path: Path) -> None:
    root = copy_assets(tmp_path, ["BTC"])
    load_daily(root / "crypto/daily/BTC.csv.gz").reset_index().rename(
        columns={"date": "timestamp"}
    ).to_parquet(root / "crypto/daily/BTC.parquet")
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert exc.value.rule == "duplicate_source"


@pytest.mark.parametrize("name", ["ALL", "pooled"])
def test_a_symbol_the_outputs_use_for_their_own_rows_is_refused(tmp_path: Path,
                                                              name: str) -> None:
    """An asset named ``ALL`` would be read as a stress scenario's total row, one named
    ``pooled`` as the pooled frontier: refused by rule, naming the file; with --keep-going
    that asset alone is skipped and listed."""
    from pipelines.policy_eval.frontier import POOLED
    from pipelines.stress.report import TOTAL

    assert {TOTAL, POOLED} == set(RESERVED_NAMES)
    root = copy_assets(tmp_path, ["BTC", "ETH"])
    (root / "crypto/daily/ETH.csv.gz").rename(root / f"crypto/daily/{name}.csv.gz")
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert exc.value.rule == "reserved_name" and exc.value.path.name == f"{name}.csv.gz"
    kept = load_market(root, keep_going=True)
    assert list(kept.daily) == ["BTC"] and any(name in f for f in kept.failures)


def test_two_symbols_that_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    """``btc`` beside ``BTC``: two assets here, one file on a case-insensitive filesystem; both
    refused by rule rather than one silently standing for the other elsewhere."""
    root = copy_assets(tmp_path, ["BTC", "ETH"])
    shutil.copy(root / "crypto/daily/BTC.csv.gz", root / "crypto/daily/btc.csv.gz")
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert exc.value.rule == "case_duplicate" and "BTC.csv.gz and btc.csv.gz" in str(exc.value)
    kept = load_market(root, keep_going=True)
    assert list(kept.daily) == ["ETH"] and len(kept.failures) == 2


def test_parquet_with_datetime_stamps_loads_like_csv(tmp_path: Path) -> None:
    csv = DATA_DIR / "iv" / "DVOL_ETH.csv.gz"
    frame = pd.read_csv(csv)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame.to_parquet(tmp_path / "DVOL_ETH.parquet")
    pd.testing.assert_frame_equal(load_dvol(tmp_path / "DVOL_ETH.parquet"), load_dvol(csv))


def test_daily_gap_is_reported_not_filled(tmp_path: Path) -> None:
    rows = read_rows("crypto/daily/BTC.csv.gz", 30)
    del rows[11:14]  # data rows 10..12: 2017-08-27 .. 2017-08-29
    write_rows(tmp_path / "crypto" / "daily" / "BTC.csv.gz", rows)
    data = load_market(tmp_path)
    assert len(data.daily["BTC"]) == 27
    assert data.gaps.to_dict("records") == [
        {
            "source": "crypto/daily/BTC.csv.gz",
            "gap_start": pd.Timestamp("2017-08-27"),
            "gap_end": pd.Timestamp("2017-08-29"),
            "missing": 3,
        }
    ]


def test_gap_report_on_complete_grid_is_empty() -> None:
    index = pd.date_range("2024-01-01", periods=48, freq="1h")
    report = gap_report(index, "1h", "x")
    assert report.empty and list(report.columns) == ["source", "gap_start", "gap_end", "missing"]
    holed = index.delete([5, 6, 20])
    report = gap_report(holed, "1h", "x")
    assert report["missing"].tolist() == [2, 1]
    assert report["gap_start"].tolist() == [index[5], index[20]]
    assert report["gap_end"].tolist() == [index[6], index[20]]


# ---------------------------------------------------------------- malformed files, every kind


def swap_rows(rows: Rows) -> Rows:
    rows = [list(r) for r in rows]
    rows[4], rows[5] = rows[5], rows[4]  # data rows 3, 4: line 6 goes back in time
    return rows


def duplicate_stamp(rows: Rows) -> Rows:
    return set_field(rows, 4, "timestamp", rows[4][0])  # data row 4 repeats data row 3


def drop_column(rows: Rows, column: str) -> Rows:
    at = rows[0].index(column)
    return [r[:at] + r[at + 1 :] for r in rows]


def bad_stamp(rows: Rows) -> Rows:
    return set_field(rows, 2, "timestamp", "2020-13-45")


CORRUPTIONS = [
    pytest.param(lambda rows, price: swap_rows(rows), "sorted_timestamps", 6, id="unsorted"),
    pytest.param(lambda rows, price: duplicate_stamp(rows), "unique_timestamps", 6, id="dup"),
    pytest.param(
        lambda rows, price: set_field(rows, 2, price, "-1.5"), "positive_prices", 4, id="negative"
    ),
    pytest.param(
        lambda rows, price: set_field(rows, 1, price, "0"), "positive_prices", 3, id="zero"
    ),
    pytest.param(lambda rows, price: set_field(rows, 3, price, ""), "finite_values", 5, id="empty"),
    pytest.param(
        lambda rows, price: set_field(rows, 3, price, "inf"), "finite_values", 5, id="inf"
    ),
    pytest.param(
        lambda rows, price: drop_column(rows, price), "required_columns", 1, id="missing_price"
    ),
    pytest.param(
        lambda rows, price: drop_column(rows, "timestamp"),
        "required_columns",
        1,
        id="missing_timestamp",
    ),
    pytest.param(lambda rows, price: bad_stamp(rows), "parseable_timestamp", 4, id="bad_timestamp"),
    pytest.param(
        lambda rows, price: set_field(rows, 1, price, "abc"), "numeric_values", 3, id="text_price"
    ),
]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(("corrupt", "rule", "line"), CORRUPTIONS)
def test_malformed_file_fails_on_first_bad_line(
    tmp_path: Path, kind: str, corrupt: Callable[[Rows, str], Rows], rule: str, line: int
) -> None:
    loader, source, price = KINDS[kind]
    path = write_rows(tmp_path / Path(source).name, corrupt(read_rows(source, 8), price))
    with pytest.raises(DataValidationError) as exc:
        loader(path)
    assert (exc.value.rule, exc.value.row) == (rule, line)
    assert exc.value.path == path
    assert f"{path} line {line}: rule {rule} failed" in str(exc.value)
    assert "nothing was loaded" in str(exc.value)


@pytest.mark.parametrize("kind", ["dvol", "macro"])
def test_a_value_other_than_the_close_is_refused(tmp_path: Path, kind: str) -> None:
    """The features read ``value``; a file that also carries ``close`` states them equal (an
    adjusted close in one of them would be read through the other without a word)."""
    loader, source, _ = KINDS[kind]
    rows = read_rows(source, 8)
    close = float(rows[4][rows[0].index("close")])
    rows = set_field(rows, 3, "value", repr(close * 1.01))
    with pytest.raises(DataValidationError) as exc:
        loader(write_rows(tmp_path / Path(source).name, rows))
    assert (exc.value.rule, exc.value.row) == ("value_equals_close", 5)
    rows = set_field(rows, 3, "value", repr(close))  # equal again: read
    assert len(loader(write_rows(tmp_path / Path(source).name, rows))) == 8


@pytest.mark.parametrize("kind", ["daily", "hourly", "dvol", "macro"])
def test_high_below_low_names_values_and_stamp(tmp_path: Path, kind: str) -> None:
    loader, source, _ = KINDS[kind]
    rows = read_rows(source, 8)
    rows = set_field(rows, 5, "high", "1.0")
    rows = set_field(rows, 5, "low", "2.0")
    path = write_rows(tmp_path / Path(source).name, rows)
    with pytest.raises(DataValidationError) as exc:
        loader(path)
    assert (exc.value.rule, exc.value.row) == ("high_ge_low", 7)
    assert f"line 7: rule high_ge_low failed: high 1.0 < low 2.0 (timestamp {rows[6][0]})" in str(
        exc.value
    )


def test_earliest_line_wins_over_rule_order(tmp_path: Path) -> None:
    rows = read_rows("crypto/daily/ETH.csv.gz", 8)
    rows = set_field(rows, 6, "volume", "-3")  # line 8
    low, open_ = (float(rows[5][rows[0].index(c)]) for c in ("low", "open"))
    assert low < open_
    rows = set_field(rows, 4, "high", str((low + open_) / 2))  # line 6: low < high < open
    path = write_rows(tmp_path / "ETH.csv.gz", rows)
    with pytest.raises(DataValidationError) as exc:
        load_daily(path)
    assert (exc.value.rule, exc.value.row) == ("high_ge_open_close", 6)


@pytest.mark.parametrize(
    ("loader", "source", "stamp", "rule"),
    [
        (load_daily, "crypto/daily/BTC.csv.gz", "2017-08-19T12:00:00Z", "day_grid"),
        (load_hourly, "crypto/hourly/BTC.csv.gz", "2017-08-17T06:30:00Z", "hour_grid"),
        (load_macro, "macro/SPX.csv.gz", "2015-01-06T21:00:00Z", "day_grid"),
    ],
)
def test_off_grid_stamp_is_rejected(
    tmp_path: Path, loader: Callable[[Path], pd.DataFrame], source: str, stamp: str, rule: str
) -> None:
    rows = set_field(read_rows(source, 5), 2, "timestamp", stamp)
    path = write_rows(tmp_path / Path(source).name, rows)
    with pytest.raises(DataValidationError) as exc:
        loader(path)
    assert (exc.value.rule, exc.value.row) == (rule, 4)


def test_negative_volume_is_rejected(tmp_path: Path) -> None:
    rows = set_field(read_rows("crypto/hourly/ETH.csv.gz", 5), 0, "volume", "-0.5")
    with pytest.raises(DataValidationError) as exc:
        load_hourly(write_rows(tmp_path / "ETH.csv.gz", rows))
    assert (exc.value.rule, exc.value.row) == ("non_negative_volume", 2)


def test_offset_stamps_are_refused_not_converted(tmp_path: Path) -> None:
    # 07:00+02:00 is 05:00 UTC and would fit the grid: it must still be refused, because the
    # data README fixes the spelling (ISO 8601 UTC, Z) and a writer using offsets is suspect.
    rows = read_rows("crypto/hourly/BTC.csv.gz", 3)
    rows = set_field(rows, 1, "timestamp", "2017-08-17T07:00:00+02:00")
    with pytest.raises(DataValidationError) as exc:
        load_hourly(write_rows(tmp_path / "BTC.csv.gz", rows))
    assert (exc.value.rule, exc.value.row) == ("timestamp_format", 3)
    assert "'2017-08-17T07:00:00+02:00' is not written as YYYY-MM-DDTHH:MM:SSZ" in str(exc.value)


def test_yields_may_be_negative_but_prices_may_not(tmp_path: Path) -> None:
    rows = read_rows("macro/US10Y.csv.gz", 5)
    rows = set_field(set_field(rows, 1, "value", "-0.12"), 2, "value", "0")
    us10y = load_macro(write_rows(tmp_path / "US10Y.csv.gz", rows))
    assert us10y["value"].iloc[1:3].tolist() == [-0.12, 0.0]
    with pytest.raises(DataValidationError) as exc:
        load_macro(write_rows(tmp_path / "NDX.csv.gz", rows))
    assert (exc.value.rule, exc.value.row) == ("positive_prices", 3)


def test_dvol_in_decimal_units_is_refused_naming_the_line(tmp_path: Path) -> None:
    """DVOL delivered as a decimal (0.475 for 47.5%) passes every price rule and would give
    an implied variance 10^4 times too small: rule percent_units."""
    rows = read_rows("iv/DVOL_BTC.csv.gz", 5)
    header = rows[0]
    real = float(rows[3][header.index("value")])
    assert 20 < real < 200  # the embedded file is in percent
    dvol = load_dvol(write_rows(tmp_path / "DVOL_BTC.csv.gz", rows))
    assert dvol["value"].iloc[2] == real
    decimal = set_field(rows, 2, "value", f"{real / 100:.4f}")
    with pytest.raises(DataValidationError) as exc:
        load_dvol(write_rows(tmp_path / "DVOL_ETH.csv.gz", decimal))
    assert (exc.value.rule, exc.value.row) == ("percent_units", 4)
    assert "is not an annualised volatility in percent" in str(exc.value)


def test_blank_line_keeps_line_numbers_and_fails(tmp_path: Path) -> None:
    rows = read_rows("crypto/daily/BTC.csv.gz", 6)
    rows.insert(3, [""])  # line 4 is blank; the file's line numbers must not shift
    with pytest.raises(DataValidationError) as exc:
        load_daily(write_rows(tmp_path / "BTC.csv.gz", rows))
    assert (exc.value.rule, exc.value.row) == ("parseable_timestamp", 4)


def test_repeated_stamp_out_of_order_is_reported_as_duplicate(tmp_path: Path) -> None:
    rows = read_rows("crypto/daily/BTC.csv.gz", 6)
    rows = set_field(rows, 4, "timestamp", rows[2][0])  # line 6 repeats line 3: both rules fail
    with pytest.raises(DataValidationError) as exc:
        load_daily(write_rows(tmp_path / "BTC.csv.gz", rows))
    assert (exc.value.rule, exc.value.row) == ("unique_timestamps", 6)
    assert "already on line 3" in str(exc.value)


def test_ragged_csv_row_is_a_format_error(tmp_path: Path) -> None:
    rows = read_rows("crypto/daily/BTC.csv.gz", 6)
    rows[4].append("7")  # line 5 has one field too many
    with pytest.raises(DataValidationError) as exc:
        load_daily(write_rows(tmp_path / "BTC.csv.gz", rows))
    assert (exc.value.rule, exc.value.row) == ("csv_format", 5)


@pytest.mark.parametrize("suffix", ["csv.gz", "csv"])
def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path, suffix: str) -> None:
    """pandas reads a second 'close' as 'close.1' and every reader takes the first: which
    column holds the closes is unknown, so the file is refused on line 1."""
    rows = read_rows("crypto/daily/BTC.csv.gz", 6)
    close = rows[0].index("close")
    rows = [[*r, r[close]] for r in rows]
    rows[0][-1] = "close"
    path = write_rows(tmp_path / f"BTC.{suffix}", rows)
    if suffix == "csv":  # write_rows gzips whatever the name: the same text, plain
        path.write_bytes(gzip.decompress(path.read_bytes()))
    with pytest.raises(DataValidationError) as exc:
        load_daily(path)
    assert (exc.value.rule, exc.value.row) == ("duplicate_columns", 1)
    assert "names column 'close' twice" in str(exc.value) and str(path) in str(exc.value)


def test_the_gap_report_is_built_when_first_read_and_stays_deferred_through_cuts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A serve never reads the gap report (every stamp of every file): it is built on first
    read, once, equal to the eager report; the serving and trailing cuts keep it deferred."""
    import dataclasses

    from features import loaders
    from features.gaps import gap_reports
    from features.window import trailing_market
    from serving.market import cut_market

    calls: list[int] = []

    def counted(series):  # type: ignore[no-untyped-def]
        calls.append(len(series))
        return gap_reports(series)

    monkeypatch.setattr(loaders, "gap_reports", counted)
    market = load_market(DATA_DIR, assets=["BTC", "ETH"])
    cut, _ = cut_market(market, datetime.date(2021, 6, 30))
    trailing = trailing_market(cut, datetime.date(2021, 6, 30), 400)
    again = dataclasses.replace(trailing, gaps=trailing.deferred("gaps"))
    assert calls == []  # loaded, cut twice, replaced: nothing built yet
    full = market.gaps
    assert calls == [4] and market.gaps is full  # built once (2 daily, 2 hourly), kept
    series = [(f.index, "1D", f"crypto/daily/{a}.csv.gz") for a, f in market.daily.items()]
    series += [(f.index, "1h", f"crypto/hourly/{a}.csv.gz") for a, f in market.hourly.items()]
    pd.testing.assert_frame_equal(full, gap_reports(series))
    early = full[full["gap_start"] < pd.Timestamp("2021-07-01")].reset_index(drop=True)
    pd.testing.assert_frame_equal(again.gaps, early)  # the serving cut's rule, unchanged
    assert len(early) < len(full) and calls == [4, 4]

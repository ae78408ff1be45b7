"""Each source appends the right rows, in the project's format, to a copy of real files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.loaders import load_daily, load_dvol, load_hourly, load_macro, load_market
from pipelines.ingest import ingest
from pipelines.ingest.base import FRED_CLOSE_ONLY
from pipelines.ingest.binance import parse_klines
from pipelines.ingest.deribit import parse_dvol
from pipelines.ingest.errors import PayloadError
from pipelines.ingest.fred import parse_observations
from tests.replay.fake_api import FakeApis
from tests.replay.harness import rows, settings_for, small_market, text

UNTIL = "2025-07-06T12:00:00Z"  # the 2025-07-06 daily candle is still open


@pytest.fixture
def market(tmp_path: Path) -> Path:
    return small_market(tmp_path / "market")


def test_binance_daily_appends_closed_candles_after_the_last_row(
    api: FakeApis, market: Path
) -> None:
    path = market / "crypto/daily/BTC.csv.gz"
    before = text(path)
    report = ingest(market, ["binance"], UNTIL, settings=settings_for(api.url))
    daily = report.file("crypto/daily/BTC.csv.gz")
    assert (daily.appended, daily.duplicates, daily.ok) == (5, 1, True)
    assert daily.last_timestamp == "2025-07-05T00:00:00Z"
    assert text(path).startswith(before)  # history kept byte for byte
    added = text(path)[len(before):].decode().splitlines()
    assert added[0] == "2025-07-01T00:00:00Z,107146.51,107540.0,105250.85,105681.14,10390.3293"
    assert added[-1].startswith("2025-07-05T00:00:00Z,")  # 07-06 still open: not stored
    frame = load_daily(path)
    assert frame.index[-1] == pd.Timestamp("2025-07-05")
    assert frame.loc["2025-07-04", "close"] == 107984.24


def test_binance_hourly_keeps_only_candles_closed_before_until(
    api: FakeApis, market: Path
) -> None:
    report = ingest(market, ["binance"], "2025-07-01T06:30:00Z", settings=settings_for(api.url))
    hourly = report.file("crypto/hourly/BTC.csv.gz")
    assert (hourly.appended, hourly.last_timestamp) == (6, "2025-07-01T05:00:00Z")
    frame = load_hourly(market / "crypto/hourly/BTC.csv.gz")
    assert list(frame.index[-6:].hour) == [0, 1, 2, 3, 4, 5]
    assert frame["volume"].iloc[-1] == 205.33318
    # The daily candle of 2025-07-01 has not closed by 06:30 either.
    assert report.file("crypto/daily/BTC.csv.gz").appended == 0


def test_binance_pages_through_limit(api: FakeApis, market: Path) -> None:
    settings = settings_for(api.url, binance_limit=2)
    report = ingest(market, ["binance"], UNTIL, settings=settings)
    assert report.file("crypto/daily/BTC.csv.gz").appended == 5
    starts = [q["startTime"] for _, p, q in api.requests if q.get("interval") == "1d"]
    assert len(starts) == 4 and starts == sorted(starts)  # 3 full pages + the open candle


def test_deribit_dvol_value_is_close_and_open_day_is_skipped(api: FakeApis, market: Path) -> None:
    report = ingest(market, ["deribit"], UNTIL, settings=settings_for(api.url))
    dvol = report.file("iv/DVOL_BTC.csv.gz")
    assert (dvol.appended, dvol.duplicates, dvol.ok) == (5, 1, True)
    frame = load_dvol(market / "iv/DVOL_BTC.csv.gz")
    assert frame.index[-1] == pd.Timestamp("2025-07-05")
    assert frame.loc["2025-07-03"].tolist() == [36.12, 37.35, 37.88, 35.92, 36.12]
    assert (frame["value"] == frame["close"]).all()


def test_deribit_follows_continuations_backwards(api: FakeApis, market: Path) -> None:
    api.deribit_max_points = 2
    report = ingest(market, ["deribit"], UNTIL, settings=settings_for(api.url))
    assert report.file("iv/DVOL_BTC.csv.gz").appended == 5
    ends = [int(q["end_timestamp"]) for _, p, q in api.requests]
    assert len(ends) == 4 and ends == sorted(ends, reverse=True)


def test_fred_us10y_skips_and_reports_missing_sessions(api: FakeApis, market: Path) -> None:
    report = ingest(market, ["fred"], "2025-07-09", settings=settings_for(api.url))
    us10y = report.file("macro/US10Y.csv.gz")
    assert (us10y.appended, us10y.duplicates, us10y.ok) == (5, 1, True)
    assert us10y.missing == ["2025-07-04: value '.' (no observation; skipped, not filled)"]
    frame = load_macro(market / "macro/US10Y.csv.gz")
    assert frame.loc["2025-07-01":, "value"].tolist() == [4.26, 4.3, 4.35, 4.4, 4.42]
    assert pd.Timestamp("2025-07-04") not in frame.index


def test_fred_refuses_files_with_columns_it_cannot_supply(api: FakeApis, market: Path) -> None:
    before = {name: text(market / f"macro/{name}.csv.gz") for name in ("VIX", "SPX")}
    settings = settings_for(api.url, fred_series=dict(FRED_CLOSE_ONLY))
    report = ingest(market, ["fred"], "2025-07-09", settings=settings)
    for name, series in (("VIX", "VIXCLS"), ("SPX", "SP500")):
        file_report = report.file(f"macro/{name}.csv.gz")
        assert file_report.rejected and f"fred {series} provides only timestamp, value" in \
            file_report.rejected
        assert text(market / f"macro/{name}.csv.gz") == before[name]
    assert {q["series_id"] for _, _, q in api.requests} == {"DGS10"}  # nothing requested
    assert not report.ok


def test_fred_creates_a_value_only_file_from_start(api: FakeApis, tmp_path: Path) -> None:
    settings = settings_for(api.url, fred_series={"SPX": "SP500"})
    report = ingest(tmp_path, ["fred"], "2025-07-09", start="2025-07-01", settings=settings)
    assert report.file("macro/SPX.csv.gz").appended == 5
    stored = rows(tmp_path / "macro/SPX.csv.gz")
    assert list(stored.columns) == ["timestamp", "value"]
    assert stored.iloc[0].tolist() == ["2025-07-01T00:00:00Z", "6198.01"]


def test_missing_file_without_start_is_not_created(api: FakeApis, tmp_path: Path) -> None:
    report = ingest(tmp_path, ["binance"], UNTIL, assets=["BTC"], settings=settings_for(api.url))
    assert "pass start=" in (report.file("crypto/daily/BTC.csv.gz").rejected or "")
    assert not (tmp_path / "crypto").exists() and api.requests == []


def test_fred_without_api_key_requests_nothing(
    api: FakeApis, market: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRED_API_KEY")
    report = ingest(market, ["fred"], "2025-07-09", settings=settings_for(api.url))
    assert "FRED_API_KEY is not set" in (report.file("macro/US10Y.csv.gz").error or "")
    assert api.requests == []


def test_full_run_leaves_a_loadable_market_directory(api: FakeApis, market: Path) -> None:
    report = ingest(market, until=UNTIL, settings=settings_for(api.url))
    table = report.to_frame().set_index("file")
    assert table.loc["crypto/daily/BTC.csv.gz", "appended"] == 5
    assert "macro/VIX.csv.gz" not in table.index  # not in the default FRED mapping
    assert report.ok
    loaded = load_market(market)
    assert loaded.daily["BTC"].index[-1] == pd.Timestamp("2025-07-05")
    assert loaded.dvol["BTC"].index[-1] == pd.Timestamp("2025-07-05")
    assert loaded.macro["US10Y"].index[-1] == pd.Timestamp("2025-07-03")
    assert loaded.gaps.empty
    # One request per file and page, nothing else.
    assert len(api.requests) == 4


def test_a_provider_payload_a_parser_cannot_read_is_a_payload_error() -> None:
    """Out-of-range stamps, a non-integer continuation and a FRED row without a date are
    unusable payloads naming the source and the request, never another exception that
    would stop the run (or, for the date, a row dropped without a word)."""
    far = 10**17  # year 3,170,843
    with pytest.raises(PayloadError, match=r"binance: GET u returned .*timestamp out of range"):
        parse_klines([[far, "1", "1", "1", "1", "1", far + 86_399_999]], "u")
    good = {"result": {"data": [[1751328000000, 40.0, 41.0, 39.0, 40.5]], "continuation": "x"}}
    with pytest.raises(PayloadError, match="continuation 'x' is not an integer timestamp"):
        parse_dvol(good, "u")
    frame, continuation = parse_dvol({"result": {**good["result"], "continuation": None}}, "u")
    assert continuation is None and frame["value"].tolist() == [40.5]
    with pytest.raises(PayloadError, match=r"observation 0: no date \(''\)"):
        parse_observations({"observations": [{"date": "", "value": "4.2"}], "count": 1}, "u")


def test_one_file_that_fails_leaves_the_others_fetched(
        api: FakeApis, market: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Parquet file (read by the loaders, never appended to) is refused, and a parser's
    unexpected error is that file's error: the other files are still extended."""
    daily = market / "crypto/daily/BTC.csv.gz"
    load_daily(daily).reset_index().rename(columns={"date": "timestamp"}).to_parquet(
        market / "crypto/daily/BTC.parquet")
    daily.unlink()
    report = ingest(market, ["binance", "deribit"], UNTIL, settings=settings_for(api.url))
    parquet = report.file("crypto/daily/BTC.parquet")
    assert "appending to Parquet is not supported" in parquet.rejected
    assert report.file("crypto/hourly/BTC.csv.gz").appended > 0
    assert report.file("iv/DVOL_BTC.csv.gz").appended > 0

    import pipelines.ingest.deribit as deribit

    def broken(payload: object, where: str) -> None:
        raise RuntimeError("unexpected shape")

    monkeypatch.setattr(deribit, "parse_dvol", broken)
    again = ingest(market, ["deribit", "fred"], "2025-07-09T12:00:00Z",
                   settings=settings_for(api.url))
    assert again.file("iv/DVOL_BTC.csv.gz").error == "RuntimeError: unexpected shape"
    assert not again.ok and any(f.appended for f in again.files if f.file.startswith("macro/"))


def test_deribit_pages_that_disagree_on_a_shared_point_write_nothing(api: FakeApis,
                                                                     market: Path) -> None:
    """Continuation pages overlap at their boundary: the same point twice is one point, two
    different values for one stamp are a payload error, never resolved by keeping one."""
    real = api.deribit_dvol
    api.deribit_max_points = 2
    calls: list[int] = []

    def overlapping(q: dict[str, str]) -> tuple[int, object]:
        status, body = real(q)
        calls.append(1)
        data = body["result"]["data"]
        if body["result"]["continuation"] is not None:
            body["result"]["continuation"] += 1  # the next page repeats this page's first point
        if len(calls) == 2 and data:
            data[-1] = [data[-1][0], *[x + 1.0 for x in data[-1][1:]]]  # ... with other values
        return status, body

    before = (market / "iv/DVOL_BTC.csv.gz").read_bytes()
    api.deribit_dvol = overlapping  # type: ignore[method-assign]
    report = ingest(market, ["deribit"], UNTIL, settings=settings_for(api.url))
    dvol = report.file("iv/DVOL_BTC.csv.gz")
    assert not dvol.ok and dvol.appended == 0 and "two different points for" in dvol.error
    assert (market / "iv/DVOL_BTC.csv.gz").read_bytes() == before


def test_deribit_pages_that_repeat_a_point_identically_are_one_point(api: FakeApis,
                                                                     market: Path) -> None:
    """The boundary point that continuation pages share, the same on both, is appended once."""
    real = api.deribit_dvol
    api.deribit_max_points = 2

    def overlapping(q: dict[str, str]) -> tuple[int, object]:
        status, body = real(q)
        if body["result"]["continuation"] is not None:
            body["result"]["continuation"] += 1  # the next page repeats this page's first point
        return status, body

    api.deribit_dvol = overlapping  # type: ignore[method-assign]
    report = ingest(market, ["deribit"], UNTIL, settings=settings_for(api.url))
    dvol = report.file("iv/DVOL_BTC.csv.gz")
    assert dvol.ok and dvol.appended == 5
    frame = load_dvol(market / "iv/DVOL_BTC.csv.gz")
    assert frame.index.is_unique and frame.index[-1] == pd.Timestamp("2025-07-05")

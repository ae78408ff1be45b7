"""History is never rewritten: bad batches, conflicts, reruns, interruptions and crashes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from features.loaders import load_daily
from pipelines.ingest import ingest, store
from pipelines.ingest.binance import Binance
from pipelines.ingest.report import Conflict, FileReport
from tests.replay.fake_api import FakeApis
from tests.replay.harness import daily_market, settings_for, small_market, text

UNTIL = "2025-07-06T12:00:00Z"
DAILY = "crypto/daily/BTC.csv.gz"


@pytest.fixture
def market(tmp_path: Path) -> Path:
    return daily_market(tmp_path / "market")


def _daily(market: Path, api: FakeApis, **settings: object) -> FileReport:
    """Run the Binance source and return the daily file's report."""
    return ingest(market, ["binance"], UNTIL, settings=settings_for(api.url, **settings)).file(
        DAILY)


def _daily_requests(api: FakeApis) -> int:
    return sum(q.get("interval") == "1d" for _, _, q in api.requests)


def test_non_positive_price_rejects_the_whole_batch(api: FakeApis, market: Path) -> None:
    api.klines[("BTCUSDT", "1d")][3][3] = "0.00000000"  # low of 2025-07-03
    before = text(market / DAILY)
    report = _daily(market, api)
    assert report.rejected and "rule positive_prices failed: low 0.0 <= 0" in report.rejected
    assert "2025-07-03T00:00:00Z" in report.rejected and "nothing written" in report.rejected
    assert (report.appended, report.last_timestamp) == (0, "2025-06-30T00:00:00Z")
    assert text(market / DAILY) == before


def test_high_below_low_rejects_the_batch(api: FakeApis, market: Path) -> None:
    api.klines[("BTCUSDT", "1d")][2][2] = "100000.00000000"  # high of 2025-07-02 < its low
    report = _daily(market, api)
    assert report.rejected and "rule high_ge_low failed" in report.rejected
    assert load_daily(market / DAILY).index[-1] == pd.Timestamp("2025-06-30")


def test_malformed_json_writes_nothing(api: FakeApis, market: Path) -> None:
    api.faults.append("malformed")
    before = text(market / DAILY)
    report = _daily(market, api)
    assert report.error and "unusable payload: not JSON" in report.error
    assert text(market / DAILY) == before


def test_give_up_after_max_attempts_writes_nothing(api: FakeApis, market: Path) -> None:
    api.faults.extend(["500"] * 3)
    before = text(market / DAILY)
    report = _daily(market, api)
    assert report.error and report.error.startswith(f"binance: GET {api.url}/api/v3/klines?")
    assert "failed after 3 attempt(s) (HTTP 500)" in report.error
    assert text(market / DAILY) == before and _daily_requests(api) == 3


def test_retry_then_success_appends_once(api: FakeApis, market: Path) -> None:
    api.faults.extend(["500", "drop"])
    report = _daily(market, api)
    assert (report.appended, report.ok, _daily_requests(api)) == (5, True, 3)


def test_conflicting_row_is_reported_and_stored_value_kept(api: FakeApis, market: Path) -> None:
    api.klines[("BTCUSDT", "1d")][0][4] = "107150.00000000"  # close of 2025-06-30, revised
    report = _daily(market, api)
    assert report.conflicts == [Conflict("2025-06-30T00:00:00Z", "close", 107146.5, 107150.0)]
    assert not report.ok and report.appended == 5  # newer rows do not contradict anything
    assert load_daily(market / DAILY).loc["2025-06-30", "close"] == 107146.5


def test_tiny_float_differences_are_not_conflicts(api: FakeApis, market: Path) -> None:
    api.klines[("BTCUSDT", "1d")][0][4] = "107146.50000000001"
    assert _daily(market, api).conflicts == []


def test_rerun_is_idempotent(api: FakeApis, market: Path) -> None:
    first = _daily(market, api)
    after_first = (market / DAILY).read_bytes()
    second = _daily(market, api)
    assert (first.appended, second.appended, second.duplicates) == (5, 0, 1)
    assert (market / DAILY).read_bytes() == after_first  # not even rewritten


def test_interrupted_download_resumes_without_duplicates(
    api: FakeApis, market: Path, tmp_path: Path
) -> None:
    reference = small_market(tmp_path / "reference")
    shutil.rmtree(reference / "crypto" / "hourly")
    _daily(reference, api, binance_limit=2)
    api.requests.clear()
    api.answered, api.fail_after, api.fail_mode = 0, 1, "drop"  # dies after page 1 of 3
    first = _daily(market, api, binance_limit=2)
    assert first.appended == 1 and first.error and "connection error" in first.error
    assert load_daily(market / DAILY).index[-1] == pd.Timestamp("2025-07-01")
    api.fail_after = None
    second = _daily(market, api, binance_limit=2)
    assert (second.appended, second.duplicates, second.ok) == (4, 1, True)
    assert text(market / DAILY) == text(reference / DAILY)


def test_crash_before_rename_leaves_the_file_intact(
    api: FakeApis, market: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = text(market / DAILY)

    real_replace = os.replace

    def crash(src: str, dst: str) -> None:
        if Path(dst) == market / DAILY:
            raise KeyboardInterrupt("killed between write and rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _daily(market, api)
    assert text(market / DAILY) == before
    monkeypatch.setattr(os, "replace", real_replace)
    stale = market / "crypto/daily/.BTC.csv.gz.left-over.tmp"
    stale.write_bytes(b"partial")  # as if the process had been SIGKILLed
    assert _daily(market, api).appended == 5
    assert not stale.exists()
    assert [p.name for p in (market / "crypto/daily").iterdir()] == ["BTC.csv.gz"]


def _page(*stamps_and_closes: tuple[str, float]) -> pd.DataFrame:
    stamps = [pd.Timestamp(s) for s, _ in stamps_and_closes]
    closes = [c for _, c in stamps_and_closes]
    return pd.DataFrame({"timestamp": pd.Series(stamps, dtype="datetime64[ns]"),
                         "open": closes, "high": closes, "low": closes, "close": closes,
                         "volume": 1.0})


def test_gap_fill_candidates_are_refused_and_reported(market: Path) -> None:
    path = market / DAILY
    full = text(path).decode().splitlines(keepends=True)
    holed = "".join(line for line in full if not line.startswith("2025-06-20"))
    store._write_atomic(path, holed.encode())
    target = Binance().targets(market, ["BTC"], settings_for("http://127.0.0.1:9"))[0]
    result = store.append_page(path, target, _page(("2025-06-20", 101000.0),
                                                   ("2025-07-01", 107000.0)), rtol=1e-9)
    assert result.gap_candidates == ["2025-06-20T00:00:00Z"] and result.appended == 1
    assert pd.Timestamp("2025-06-20") not in load_daily(path).index


def test_invalid_stored_file_is_not_extended(api: FakeApis, market: Path) -> None:
    path = market / DAILY
    lines = text(path).decode().splitlines(keepends=True)
    store._write_atomic(path, "".join([lines[0], lines[2], lines[1], *lines[3:]]).encode())
    before = text(path)
    report = _daily(market, api)
    assert report.rejected and "stored file is invalid" in report.rejected
    assert "sorted_timestamps" in report.rejected and text(path) == before
    assert _daily_requests(api) == 0


def test_report_summarises_every_file(api: FakeApis, market: Path) -> None:
    api.klines[("BTCUSDT", "1d")][0][1] = "108000.00000000"
    report = ingest(market, ["binance"], UNTIL, settings=settings_for(api.url))
    frame = report.to_frame()
    assert frame.set_index("file")["status"].to_dict() == {DAILY: "conflict"}
    assert report.problems() == [
        f"{DAILY}: conflict (stored value kept): 2025-06-30T00:00:00Z open: stored "
        "108356.93, provider 108000.0"]
    json.dumps(frame.to_dict("records"))  # serialisable for logs / MLflow


def test_concurrent_run_waits_for_the_lock_then_gives_up(api: FakeApis, market: Path) -> None:
    before = text(market / DAILY)
    with store.data_dir_lock(market), pytest.raises(TimeoutError, match=r"\.ingest\.lock"):
        ingest(market, ["binance"], UNTIL, settings=settings_for(api.url, lock_timeout_s=0.2))
    assert text(market / DAILY) == before and api.requests == []


def test_a_bar_closed_a_moment_ago_waits_for_the_settle_time(api: FakeApis,
                                                              market: Path) -> None:
    """Only bars closed ``settle_s`` before now are appended: a provider may revise the bar it
    just closed, and a stored row is never replaced. Here the settle time reaches back to
    2025-07-03 12:00: the daily bars of 07-03 and later wait."""
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    settle = (now - pd.Timestamp("2025-07-03T12:00:00")).total_seconds()
    report = ingest(market, ["binance"], UNTIL, settings=settings_for(api.url, settle_s=settle))
    assert report.until <= "2025-07-03T12:00:01Z"
    daily = report.file(DAILY)
    assert daily.last_timestamp == "2025-07-02T00:00:00Z"
    full = _daily(market, api)  # without it: the bars through 07-05 come in
    assert full.last_timestamp == "2025-07-05T00:00:00Z"

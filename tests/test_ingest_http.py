"""The HTTP client: retries what can succeed later, gives up clearly, never leaks the key."""

from __future__ import annotations

import email.utils
import itertools
from collections.abc import Iterator

import pytest

from pipelines.ingest.http import (
    FetchError,
    HttpClient,
    PayloadError,
    RetryPolicy,
    redact,
    retry_after_seconds,
)
from tests.replay.fake_api import DUMMY_FRED_KEY, FakeApis
from tests.replay.harness import FAST_RETRY, serving

KLINES = "/api/v3/klines"
DAILY = {"symbol": "BTCUSDT", "interval": "1d", "startTime": 1751328000000, "limit": 2}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApis]:
    with serving(monkeypatch) as apis:
        yield apis


class RecordedSleep:
    """Records requested waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_timeout_is_retried_then_succeeds(api: FakeApis) -> None:
    api.slow_s = 0.4  # > timeout_s below
    api.faults.extend(["timeout"])
    client = HttpClient(RetryPolicy(timeout_s=0.15, max_attempts=3, backoff_base_s=0.01,
                                    min_interval_s=0.0))
    body = client.get_json("binance", api.url, KLINES, DAILY)
    assert [row[0] for row in body] == [1751328000000, 1751414400000]
    assert client.requests_sent == 2


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_server_error_and_dropped_connection_are_retried(api: FakeApis, fault: str) -> None:
    api.faults.extend([fault, fault])
    client = HttpClient(FAST_RETRY)
    assert len(client.get_json("binance", api.url, KLINES, DAILY)) == 2
    assert client.requests_sent == 3


def test_429_waits_at_least_retry_after(api: FakeApis) -> None:
    api.retry_after = "2"
    api.faults.append("429")
    sleep = RecordedSleep()
    client = HttpClient(FAST_RETRY, sleep=sleep)
    assert len(client.get_json("binance", api.url, KLINES, DAILY)) == 2
    assert sleep.waits == [2.0]  # backoff alone would have been <= 0.01 s


def test_retry_after_beyond_the_cap_gives_up_at_once(api: FakeApis) -> None:
    api.retry_after = "600"
    api.faults.append("429")
    sleep = RecordedSleep()
    with pytest.raises(FetchError, match=r"HTTP 429.*Retry-After 600 s exceeds") as info:
        HttpClient(FAST_RETRY, sleep=sleep).get_json("binance", api.url, KLINES, DAILY)
    assert info.value.attempts == 1 and sleep.waits == []


def test_gives_up_after_max_attempts_naming_source_url_and_status(api: FakeApis) -> None:
    api.faults.extend(["500"] * 10)
    with pytest.raises(FetchError) as info:
        HttpClient(FAST_RETRY).get_json("binance", api.url, KLINES, DAILY)
    message = str(info.value)
    assert message.startswith(f"binance: GET {api.url}{KLINES}?symbol=BTCUSDT")
    assert "after 3 attempt(s) (HTTP 500)" in message and "max_attempts=3" in message
    assert len(api.requests) == 3


def test_client_errors_are_not_retried(api: FakeApis) -> None:
    params = {**DAILY, "symbol": "NOPEUSDT"}
    with pytest.raises(FetchError, match=r"HTTP 400\): 400 Bad Request: .*Invalid symbol"):
        HttpClient(FAST_RETRY).get_json("binance", api.url, KLINES, params)
    assert len(api.requests) == 1


def test_malformed_json_is_a_payload_error_not_retried(api: FakeApis) -> None:
    api.faults.append("malformed")
    with pytest.raises(PayloadError, match="not JSON"):
        HttpClient(FAST_RETRY).get_json("binance", api.url, KLINES, DAILY)
    assert len(api.requests) == 1


def test_api_key_never_appears_in_errors(api: FakeApis) -> None:
    api.faults.extend(["500"] * 3)
    params = {"series_id": "DGS10", "api_key": DUMMY_FRED_KEY, "file_type": "json"}
    with pytest.raises(FetchError) as info:
        HttpClient(FAST_RETRY).get_json("fred", api.url, "/fred/series/observations", params)
    assert DUMMY_FRED_KEY not in str(info.value) and "api_key=%2A%2A%2A" in str(info.value)
    wrong = {**params, "api_key": "not-the-key-abcdef"}
    with pytest.raises(FetchError, match="HTTP 400") as info:
        HttpClient(FAST_RETRY).get_json("fred", api.url, "/fred/series/observations", wrong)
    assert "not-the-key-abcdef" not in str(info.value)


def test_requests_are_spaced_by_the_minimum_interval(api: FakeApis) -> None:
    client = HttpClient(RetryPolicy(min_interval_s=0.05))
    for _ in range(3):
        client.get_json("binance", api.url, KLINES, DAILY)
    starts = [t for t, _, _ in api.requests]
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.045


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    client = HttpClient(RetryPolicy(backoff_base_s=1.0, backoff_max_s=5.0), seed=7)
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        draws = [client._backoff(attempt) for _ in range(50)]
        assert cap / 2 <= min(draws) and max(draws) <= cap
        assert max(draws) - min(draws) > 0.1 * cap  # jittered, not a fixed delay


def test_deadline_caps_total_time(api: FakeApis) -> None:
    api.retry_after = "3"
    api.faults.extend(["429"] * 5)
    policy = RetryPolicy(max_attempts=10, max_retry_after_s=5, deadline_s=2.0, min_interval_s=0)
    with pytest.raises(FetchError, match=r"deadline_s=2 reached"):
        HttpClient(policy, sleep=RecordedSleep()).get_json("binance", api.url, KLINES, DAILY)
    assert len(api.requests) == 1


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_seconds(date, now=1_000_000) == pytest.approx(30.0)


def test_redact_hides_secret_parameters_only() -> None:
    url = "https://api.stlouisfed.org/fred/series/observations?series_id=DGS10&api_key=abc"
    assert redact(url).endswith("series_id=DGS10&api_key=%2A%2A%2A")

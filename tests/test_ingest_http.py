"""The HTTP client: retries what can succeed later, gives up clearly, never leaks the key."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.ingest.http import (
    CHUNK_BYTES,
    DeadlineExceededError,
    FetchError,
    HttpClient,
    InsecureUrlError,
    PayloadError,
    ResponseTooLargeError,
    RetryPolicy,
    redact,
)
from tests.replay.fake_api import DUMMY_FRED_KEY, FakeApis, FakeServer
from tests.replay.harness import FAST_RETRY, loopback_only
from tests.replay.tls import self_signed

KLINES = "/api/v3/klines"
DAILY = {"symbol": "BTCUSDT", "interval": "1d", "startTime": 1751328000000, "limit": 2}


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
                                    min_interval_s=0.0, allow_http_loopback=True))
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


class SteppedClock:
    """A clock that moves only when slept on or stepped by the test (no scheduler jitter)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_requests_are_spaced_by_the_minimum_interval(api: FakeApis) -> None:
    # On the client's own clock: the guarantee is about when *it* starts requests; the
    # server's arrival times add the loopback's scheduling jitter, which no client controls.
    clock = SteppedClock()
    client = HttpClient(RetryPolicy(min_interval_s=0.05, allow_http_loopback=True),
                        sleep=clock.sleep, clock=clock)
    client.get_json("binance", api.url, KLINES, DAILY)
    client.get_json("binance", api.url, KLINES, DAILY)  # at once: waits the whole interval
    clock.now += 0.03  # the caller spent 30 ms: only the rest of the interval is waited
    client.get_json("binance", api.url, KLINES, DAILY)
    clock.now += 0.2  # longer than the interval: no wait at all
    client.get_json("binance", api.url, KLINES, DAILY)
    assert clock.waits == [pytest.approx(0.05), pytest.approx(0.02)]
    assert len(api.requests) == client.requests_sent == 4
    arrivals = [t for t, _, _ in api.requests]
    assert arrivals == sorted(arrivals)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    client = HttpClient(RetryPolicy(backoff_base_s=1.0, backoff_max_s=5.0), seed=7)
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        draws = [client._backoff(attempt) for _ in range(50)]
        assert cap / 2 <= min(draws) and max(draws) <= cap
        assert max(draws) - min(draws) > 0.1 * cap  # jittered, not a fixed delay


def test_deadline_caps_total_time(api: FakeApis) -> None:
    api.retry_after = "3"
    api.faults.extend(["429"] * 5)
    policy = RetryPolicy(max_attempts=10, max_retry_after_s=5, deadline_s=2.0, min_interval_s=0,
                         allow_http_loopback=True)
    with pytest.raises(DeadlineExceededError, match=r"deadline_s=2 reached"):
        HttpClient(policy, sleep=RecordedSleep()).get_json("binance", api.url, KLINES, DAILY)
    assert len(api.requests) == 1


def test_retry_after_as_an_http_date_is_honoured(api: FakeApis) -> None:
    api.retry_after = email.utils.formatdate(time.time() + 30, usegmt=True)
    api.faults.append("429")
    sleep = RecordedSleep()
    policy = replace(FAST_RETRY, max_retry_after_s=60.0, deadline_s=120.0)
    assert len(HttpClient(policy, sleep=sleep).get_json("binance", api.url, KLINES, DAILY)) == 2
    # The date has whole seconds; the slack below 29 s absorbs a slow, loaded machine.
    assert len(sleep.waits) == 1 and 25.0 <= sleep.waits[0] <= 30.0


def test_unreadable_retry_after_falls_back_to_backoff(api: FakeApis) -> None:
    api.retry_after = "soon"
    api.faults.append("429")
    sleep = RecordedSleep()
    assert len(HttpClient(FAST_RETRY, sleep=sleep).get_json("binance", api.url, KLINES,
                                                             DAILY)) == 2
    assert len(sleep.waits) == 1 and 0.005 <= sleep.waits[0] <= 0.01  # equal jitter, attempt 1


def test_redact_hides_secret_parameters_only() -> None:
    url = "https://api.stlouisfed.org/fred/series/observations?series_id=DGS10&api_key=abc"
    assert redact(url).endswith("series_id=DGS10&api_key=%2A%2A%2A")


# Transport safety: HTTPS only, no redirects, bounded size, bounded wall-clock time.

FRED = "/fred/series/observations"
FRED_PARAMS = {"series_id": "DGS10", "api_key": DUMMY_FRED_KEY, "file_type": "json"}


def test_plain_http_is_refused_before_any_request(api: FakeApis) -> None:
    strict = replace(FAST_RETRY, allow_http_loopback=False)  # the production default
    assert RetryPolicy().allow_http_loopback is False
    with pytest.raises(InsecureUrlError, match=r"only https:// is allowed") as info:
        HttpClient(strict).get_json("fred", api.url, FRED, FRED_PARAMS)
    assert api.requests == [] and DUMMY_FRED_KEY not in str(info.value)


def test_http_opt_in_never_reaches_a_non_loopback_host(api: FakeApis) -> None:
    with pytest.raises(InsecureUrlError, match=r"http:// refused"):
        HttpClient(FAST_RETRY).get_json("binance", "http://api.binance.com", KLINES, DAILY)
    with pytest.raises(InsecureUrlError, match=r"ftp:// refused"):
        HttpClient(FAST_RETRY).get_json("binance", "ftp://127.0.0.1", KLINES, DAILY)
    assert api.requests == []


def test_redirect_is_not_followed_and_its_target_is_redacted(api: FakeApis) -> None:
    api.redirect_to = f"https://elsewhere.example/fred?api_key={DUMMY_FRED_KEY}"
    api.faults.append("redirect")
    with pytest.raises(FetchError, match=r"HTTP 302.*redirect to https://elsewhere.example/"
                       r"fred\?api_key=%2A%2A%2A not followed") as info:
        HttpClient(FAST_RETRY).get_json("fred", api.url, FRED, FRED_PARAMS)
    assert DUMMY_FRED_KEY not in str(info.value) and len(api.requests) == 1


@pytest.fixture
def tls_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[FakeApis, str]]:
    """The fake providers over HTTPS with a self-signed certificate: (apis, CA file)."""
    loopback_only(monkeypatch)
    cert, key = self_signed(tmp_path)
    with FakeServer(tls=(cert, key)) as apis:
        yield apis, str(cert)


def test_https_server_is_used_and_verified(tls_api: tuple[FakeApis, str]) -> None:
    apis, ca = tls_api
    strict = replace(FAST_RETRY, allow_http_loopback=False)
    assert apis.url.startswith("https://")
    assert len(HttpClient(strict, ca_certs=ca).get_json("binance", apis.url, KLINES, DAILY)) == 2
    with pytest.raises(FetchError, match="TLS error") as info:  # not in the system store
        HttpClient(strict).get_json("binance", apis.url, KLINES, DAILY)
    assert info.value.attempts == 1  # a certificate failure is not retried


def test_https_to_http_redirect_is_refused_as_a_downgrade(
    tls_api: tuple[FakeApis, str]
) -> None:
    apis, ca = tls_api
    apis.redirect_to = "http://127.0.0.1:9/api/v3/klines"  # loopback, HTTP opt-in set: still no
    apis.faults.append("redirect")
    with pytest.raises(InsecureUrlError, match=r"downgrade from HTTPS to plain HTTP"):
        HttpClient(FAST_RETRY, ca_certs=ca).get_json("binance", apis.url, KLINES, DAILY)
    assert len(apis.requests) == 1


@pytest.mark.parametrize(("fault", "how"), [("big-chunked", "while streaming (stopped after "),
                                            ("big", "of 1000001 bytes (Content-Length)")])
def test_body_over_the_size_cap_is_refused(api: FakeApis, fault: str, how: str) -> None:
    api.big_bytes = 1_000_000
    api.faults.append(fault)
    policy = replace(FAST_RETRY, max_response_bytes=100_000)
    with pytest.raises(ResponseTooLargeError) as info:
        HttpClient(policy).get_json("fred", api.url, FRED, FRED_PARAMS)
    message = str(info.value)
    assert message.startswith(f"fred: GET {api.url}{FRED}?series_id=DGS10&api_key=%2A%2A%2A")
    assert f"response body {how}" in message and "exceeds max_response_bytes=100000" in message
    if fault == "big-chunked":  # memory bound: reading stopped within one chunk past the cap
        read = int(message.split("stopped after ")[1].split(" bytes")[0])
        assert 100_000 < read <= 100_000 + CHUNK_BYTES
    assert DUMMY_FRED_KEY not in message and len(api.requests) == 1  # not retried


def test_body_under_the_size_cap_is_read_whole(api: FakeApis) -> None:
    api.big_bytes = 1_000_000
    api.faults.append("big-chunked")
    body = HttpClient(FAST_RETRY).get_json("binance", api.url, KLINES, DAILY)
    assert len(body) == 20_000 and body[-1][6] == 1751414399999  # 50-byte items, ~1 MB


@pytest.mark.parametrize(("fault", "message"), [
    ("trickle", r"body still arriving after \d+ bytes"),
    ("trickle-headers", r"no complete answer in time"),
])
def test_a_trickling_server_is_cut_at_the_deadline(
    api: FakeApis, fault: str, message: str
) -> None:
    api.faults.append(fault)  # one byte per second, 30 of them
    # Each read gets a byte well within timeout_s, so only the wall-clock deadline can end it.
    policy = replace(FAST_RETRY, timeout_s=5.0, deadline_s=1.5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError,
                       match=message + r"; gave up \(deadline_s=1.5 reached\)"):
        HttpClient(policy).get_json("binance", api.url, KLINES, DAILY)
    assert time.monotonic() - started < 1.5 + 3.0  # not the 30 s the server would take
    assert len(api.requests) == 1


def test_the_key_never_reaches_the_logs_even_at_debug(
    api: FakeApis, caplog: pytest.LogCaptureFixture
) -> None:
    api.faults.append("500")
    with caplog.at_level(logging.DEBUG):
        HttpClient(FAST_RETRY).get_json("fred", api.url, FRED, FRED_PARAMS)
    assert any("/fred/series/observations?" in r.getMessage() for r in caplog.records)
    assert DUMMY_FRED_KEY not in caplog.text and "api_key=***" in caplog.text

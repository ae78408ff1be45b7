"""A local stand-in for the Binance, Deribit and FRED endpoints, for ingestion tests.

It replays the response bodies in this folder with the providers' query semantics (time
window, ``limit``, Deribit's backwards ``continuation``, FRED's ``offset``/``count``), so
pagination and resumption are exercised as against the real APIs, and it injects faults on
demand. It listens on 127.0.0.1 on an ephemeral port; nothing else is contacted.

Faults (:attr:`FakeApis.faults`, consumed one per request, oldest first):

``"timeout"``    sleep :attr:`FakeApis.slow_s` before answering (longer than the client timeout)
``"429"``        HTTP 429 with ``Retry-After: <FakeApis.retry_after>``
``"500"``        HTTP 500
``"malformed"``  HTTP 200 with a truncated JSON body
``"drop"``       close the connection without an answer
``"trickle"``    HTTP 200 announcing :attr:`FakeApis.trickle_bytes` bytes, then one byte every
                 :attr:`FakeApis.trickle_s` seconds (a slow or stuck server)
``"trickle-headers"``  the status line, then a header one byte every :attr:`FakeApis.trickle_s`
                 seconds, never finished
``"redirect"``   HTTP 302 to :attr:`FakeApis.redirect_to`
``"big"``        HTTP 200 with a valid JSON array of :attr:`FakeApis.big_bytes` bytes, with
                 ``Content-Length`` (``"big-chunked"``: chunked, no length announced)

:attr:`FakeApis.fail_after` = n: after n answered data requests every request fails with
:attr:`FakeApis.fail_mode` (``"500"`` or ``"drop"``), like a server that dies mid-download.
"""

from __future__ import annotations

import contextlib
import copy
import json
import ssl
import threading
import time
import urllib.parse
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPLAY = Path(__file__).resolve().parent
DUMMY_FRED_KEY = "test-dummy-fred-key-0123456789ab"


class FakeApis:
    """Recorded bodies + fault script + request log, shared with the handler threads."""

    def __init__(self, replay_dir: Path = REPLAY) -> None:
        self.klines: dict[tuple[str, str], list[list[Any]]] = {}
        for path in replay_dir.glob("binance_klines_*.json"):
            _, _, symbol, interval = path.stem.split("_")
            self.klines[(symbol, interval)] = json.loads(path.read_text())
        self.dvol = {
            path.stem.split("_")[2]: json.loads(path.read_text())
            for path in replay_dir.glob("deribit_dvol_*_1D.json")
        }
        self.fred = {
            path.stem.split("_", 1)[1]: json.loads(path.read_text())
            for path in replay_dir.glob("fred_*.json")
        }
        self.faults: deque[str] = deque()
        self.fail_after: int | None = None
        self.fail_mode = "500"
        self.retry_after = "1"
        self.slow_s = 1.0
        self.trickle_s = 1.0
        self.trickle_bytes = 30
        self.redirect_to = "http://example.com/api/v3/klines"
        self.big_bytes = 1_000_000
        self.deribit_max_points = 1000
        self.requests: list[tuple[float, str, dict[str, str]]] = []
        self.answered = 0
        self.url = ""
        self._lock = threading.Lock()

    def paths(self) -> list[str]:
        """Paths requested so far, in order."""
        return [path for _, path, _ in self.requests]

    def next_fault(self) -> str | None:
        with self._lock:
            if self.faults:
                return self.faults.popleft()
            if self.fail_after is not None and self.answered >= self.fail_after:
                return self.fail_mode
            return None

    # Route handlers: (status, body object) from the query parameters.

    def binance_klines(self, q: dict[str, str]) -> tuple[int, Any]:
        rows = self.klines.get((q.get("symbol", ""), q.get("interval", "")))
        if rows is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        start, end = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
        limit = int(q.get("limit", 500))
        return 200, [r for r in rows if start <= r[0] <= end][:limit]

    def deribit_dvol(self, q: dict[str, str]) -> tuple[int, Any]:
        body = copy.deepcopy(self.dvol.get(q.get("currency", "")))
        if body is None or q.get("resolution") != "1D":
            return 400, {"jsonrpc": "2.0", "error": {"code": 10001, "message": "bad_request"}}
        start, end = int(q["start_timestamp"]), int(q["end_timestamp"])
        rows = [r for r in body["result"]["data"] if start <= r[0] <= end]
        kept = rows[-self.deribit_max_points :]  # newest first, like Deribit
        body["result"]["data"] = kept
        older = len(rows) > len(kept)
        body["result"]["continuation"] = kept[0][0] - 1 if older else None
        return 200, body

    def fred_observations(self, q: dict[str, str]) -> tuple[int, Any]:
        if q.get("api_key") != DUMMY_FRED_KEY:
            return 400, {"error_code": 400, "error_message": "Bad Request.  The value for "
                         "variable api_key is not registered.  Read https://fred.stlouisfed.org"
                         "/docs/api/api_key.html for more information."}
        body = copy.deepcopy(self.fred.get(q.get("series_id", "")))
        if body is None:
            return 400, {"error_code": 400, "error_message": "Bad Request.  The series does "
                         "not exist."}
        lo, hi = q.get("observation_start", "0000"), q.get("observation_end", "9999")
        rows = [o for o in body["observations"] if lo <= o["date"] <= hi]
        offset, limit = int(q.get("offset", 0)), int(q.get("limit", 100000))
        body.update(observation_start=lo, observation_end=hi, count=len(rows), offset=offset,
                    limit=limit, observations=rows[offset : offset + limit])
        return 200, body

    def route(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        routes = {
            "/api/v3/klines": self.binance_klines,
            "/api/v2/public/get_volatility_index_data": self.deribit_dvol,
            "/fred/series/observations": self.fred_observations,
        }
        if path not in routes:
            return 404, {"error": f"no route {path}"}
        status, body = routes[path](q)
        if status == 200:
            with self._lock:
                self.answered += 1
        return status, body


def _handler(apis: FakeApis) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep pytest output clean

        def _send(
            self, status: int, payload: bytes, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def _trickle(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(apis.trickle_bytes))
            self.end_headers()
            self.wfile.flush()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                for _ in range(apis.trickle_bytes):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(apis.trickle_s)

        def _trickle_headers(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(apis.trickle_bytes):
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    time.sleep(apis.trickle_s)
            self.close_connection = True

        def _big(self, chunked: bool) -> None:
            item = b"[1751328000000,1,1,1,1,1,1751414399999,1,1,1,1,0],"
            count = max(1, apis.big_bytes // len(item))
            payload = b"[" + item * (count - 1) + item[:-1] + b"]"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                for start in range(0, len(payload), 65536):
                    part = payload[start : start + 65536]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            apis.requests.append((time.monotonic(), parts.path, query))
            fault = apis.next_fault()
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "timeout":
                time.sleep(apis.slow_s)
            elif fault == "429":
                self._send(429, b'{"code":-1003,"msg":"Too many requests."}',
                           {"Retry-After": apis.retry_after})
                return
            elif fault == "500":
                self._send(500, b"<html><body>500 Internal Server Error</body></html>")
                return
            elif fault == "trickle":
                self._trickle()
                return
            elif fault == "trickle-headers":
                self._trickle_headers()
                return
            elif fault == "redirect":
                self._send(302, b"", {"Location": apis.redirect_to})
                return
            elif fault in ("big", "big-chunked"):
                self._big(chunked=fault == "big-chunked")
                return
            elif fault == "malformed":
                self._send(200, b'{"result": {"data": [[1751328000000, 37.74, 39.0')
                return
            status, body = apis.route(parts.path, query)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(status, json.dumps(body).encode())  # the client may have given up

    return Handler


class FakeServer:
    """:class:`FakeApis` served by a ThreadingHTTPServer on 127.0.0.1 (HTTP, or HTTPS with ``tls``),
    in a daemon thread."""

    def __init__(
        self, apis: FakeApis | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.apis = apis or FakeApis()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.apis))
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        if tls is not None:  # (certificate, key): HTTPS, handshake in each handler thread
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        host, port = self.httpd.server_address[:2]
        self.url = f"{'https' if tls else 'http'}://{host}:{port}"
        self.apis.url = self.url
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> FakeApis:
        self._thread.start()
        return self.apis

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

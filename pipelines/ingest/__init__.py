"""Ingestion: provider connectors that append closed rows to the raw market files.

Entry point: :func:`ingest` (``pipelines.ingest.run``). Sources: Binance spot klines
(daily/hourly OHLCV), Deribit DVOL, FRED macro closes. History is never rewritten: new rows
are appended after the last stored row, validated with :mod:`features.validation`, and written
atomically; rows contradicting stored history are reported, not written.
"""

from pipelines.ingest.base import Endpoints, IngestSettings
from pipelines.ingest.http import (
    DeadlineExceededError,
    FetchError,
    HttpClient,
    InsecureUrlError,
    PayloadError,
    ResponseTooLargeError,
    RetryPolicy,
)
from pipelines.ingest.report import Conflict, FileReport, IngestReport
from pipelines.ingest.run import SOURCES, ingest

__all__ = [
    "SOURCES",
    "Conflict",
    "DeadlineExceededError",
    "Endpoints",
    "FetchError",
    "FileReport",
    "HttpClient",
    "IngestReport",
    "IngestSettings",
    "InsecureUrlError",
    "PayloadError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "ingest",
]

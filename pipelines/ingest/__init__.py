"""Ingestion: provider connectors that append closed rows to the raw market files.

Entry point: :func:`ingest` (``pipelines.ingest.run``). Sources: Binance spot klines
(daily/hourly OHLCV), Deribit DVOL, FRED macro closes. History is never rewritten: new rows
are appended after the last stored row, validated with :mod:`features.validation`, screened
for plausibility (:mod:`.plausibility`), and written atomically; rows contradicting stored
history or held as implausible are reported, not written. Downloads are HTTPS only, bounded
in time and size (:mod:`.http`).
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
from pipelines.ingest.plausibility import Held, PlausibilitySettings
from pipelines.ingest.report import Conflict, FileReport, IngestReport
from pipelines.ingest.run import SOURCES, ingest

__all__ = [
    "SOURCES",
    "Conflict",
    "DeadlineExceededError",
    "Endpoints",
    "FetchError",
    "FileReport",
    "Held",
    "HttpClient",
    "IngestReport",
    "IngestSettings",
    "InsecureUrlError",
    "PayloadError",
    "PlausibilitySettings",
    "ResponseTooLargeError",
    "RetryPolicy",
    "ingest",
]

"""``ingest``: extend every file of a data directory with the provider rows that closed since
its last row, without ever rewriting history.

Per file: read the last stored stamp (validated) → ask the connector for pages from there
(re-fetching the last stored row when ``recheck_last``, to catch provider revisions) →
offer each page to the store, which appends the new rows atomically or refuses the page.
The first refused page, held row (:mod:`.plausibility`) or download error stops that file (a
later page appended after it would leave a hole); other files go on. Held rows are also
logged to ``data_dir/.quarantine/held.jsonl``. The returned :class:`IngestReport`
says, per file, what was appended, skipped, held and refused; ``report.ok`` is False on any
rejection, held row, download error or conflict.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from features import append_receipts
from features.loaders import TIMESTAMP_FORMAT
from features.validation import DataValidationError
from pipelines.ingest.base import ConfigurationError, Connector, IngestSettings, Target
from pipelines.ingest.binance import Binance
from pipelines.ingest.deribit import Deribit
from pipelines.ingest.fred import Fred
from pipelines.ingest.http import FetchError, HttpClient, PayloadError
from pipelines.ingest.report import FileReport, IngestReport
from pipelines.ingest.store import (
    append_page,
    column_mismatch,
    data_dir_lock,
    last_timestamp,
    locate,
    record_held,
)

__all__ = ["SOURCES", "ingest"]

log = logging.getLogger(__name__)

SOURCES: dict[str, Connector] = {"binance": Binance(), "deribit": Deribit(), "fred": Fred()}

Moment = dt.datetime | dt.date | pd.Timestamp | str


def _utc(moment: Moment) -> pd.Timestamp:
    """A tz-naive UTC stamp; a bare date means 00:00 UTC that day, naive means UTC."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.as_unit("ns")


def ingest(
    data_dir: Path | str,
    sources: Sequence[str] | None = None,
    until: Moment | None = None,
    *,
    assets: Sequence[str] | None = None,
    start: Moment | None = None,
    settings: IngestSettings | None = None,
    client: HttpClient | None = None,
) -> IngestReport:
    """Append the rows that closed before ``until`` to every file fed by ``sources``.

    Parameters
    ----------
    data_dir : path
        Market data directory in the project's layout (``crypto/daily/SYM.csv.gz``, ...).
    sources : sequence of str, optional
        Keys of :data:`SOURCES` (``binance``, ``deribit``, ``fred``); all when None.
    until : datetime, date or str, optional
        Exclusive end, UTC (a date means its 00:00 UTC, so ``until=date(2025, 7, 3)`` adds
        daily rows up to 2025-07-02). Capped at now minus ``settings.settle_s`` (a bar the
        provider closed a moment ago may still be revised); default that. Only
        candles/sessions complete before it are appended.
    assets : sequence of str, optional
        Restrict crypto sources to these symbols; a symbol without a daily (or DVOL) file
        gets one, created from ``start``. Default: the stored files.
    start : datetime, date or str, optional
        First stamp requested for a file that does not exist yet; without it such a file is
        reported as rejected and not created. Existing files always resume from their last
        row.
    settings : IngestSettings, optional
        Endpoints, retry policy, page sizes, FRED mapping, tolerance.
    client : HttpClient, optional
        Shared client (one rate limit for the whole run); built from ``settings.retry``.

    Returns
    -------
    IngestReport
        One :class:`FileReport` per file; ``ok`` is False on any rejection, download error
        or conflict with stored history.

    Raises
    ------
    ValueError
        Unknown source name.
    TimeoutError
        Another run held ``data_dir/.ingest.lock`` longer than ``settings.lock_timeout_s``.
    OSError
        The data directory's lock cannot be taken. A file that cannot be written (or any
        other error of one file) is that file's ``error`` in the report, and the run goes on
        with the others; nothing half-written is left behind.

    Examples
    --------
    >>> report = ingest("data/market", until="2025-07-03")  # doctest: +SKIP
    >>> report.to_frame()[["file", "appended", "status"]]  # doctest: +SKIP
    """
    settings = settings or IngestSettings()
    client = client or HttpClient(settings.retry)
    now = pd.Timestamp.now(tz="UTC").tz_localize(None) - pd.Timedelta(seconds=settings.settle_s)
    end = min(_utc(until), now) if until is not None else now
    names = list(sources) if sources is not None else list(SOURCES)
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown ingest source(s) {unknown}; choose from {sorted(SOURCES)}")
    root = Path(data_dir)
    first = _utc(start).normalize() if start is not None else None
    report = IngestReport(until=end.strftime(TIMESTAMP_FORMAT))
    wanted = list(assets) if assets is not None else None
    with data_dir_lock(root, settings.lock_timeout_s):
        append_receipts.compact(root)  # only the receipts that still lead to today's files
        for name in names:
            connector = SOURCES[name]
            for target in connector.targets(root, wanted, settings):
                file_report = _ingest_file(root, connector, target, client, settings, first, end)
                if file_report.held:
                    record_held(root, file_report.file, report.until, file_report.held)
                log.info("ingest %s: %s", file_report.file, file_report)
                report.files.append(file_report)
    return report


def _ingest_file(
    root: Path,
    connector: Connector,
    target: Target,
    client: HttpClient,
    settings: IngestSettings,
    start: pd.Timestamp | None,
    until: pd.Timestamp,
) -> FileReport:
    """Download and append the pages of one file; errors end up in the report."""
    path = locate(root, target)
    report = FileReport(connector.name, path.relative_to(root).as_posix())
    try:
        last = last_timestamp(path, target.kind)
    except DataValidationError as err:
        report.rejected = f"stored file is invalid, not extended: {err}"
        return report
    if last is not None:
        report.last_timestamp = last.strftime(TIMESTAMP_FORMAT)
    if path.name.endswith(".parquet"):  # read by the loaders, never appended to
        report.rejected = (f"{path.name}: appending to Parquet is not supported; convert the "
                           "file to .csv.gz")
        return report
    report.rejected = column_mismatch(path, target)
    if report.rejected:
        return report
    if last is None:
        if start is None:
            report.rejected = "no stored file; pass start= to create it (nothing requested)"
            return report
        since = start
    else:
        since = last if settings.recheck_last else last + target.step
    try:
        for page in connector.pages(client, settings, target, since, until):
            if report.pages >= settings.max_pages:
                report.error = (f"stopped after max_pages={settings.max_pages} pages at "
                                f"{report.last_timestamp}; rerun to continue")
                break
            report.missing.extend(page.missing)
            if page.rows.empty:
                continue
            result = append_page(path, target, page.rows, settings.rtol, settings.plausibility,
                                 receipts=root)
            report.add(result)
            if result.rejected or result.held:
                break  # a later page appended after a refused or held row would leave a hole
    except (FetchError, PayloadError, ConfigurationError) as err:
        report.error = str(err)
    except Exception as err:  # this file's failure (a parser's unexpected error, a
        # read-only folder), reported; the other files are still fetched
        report.error = f"{type(err).__name__}: {err}"
    return report

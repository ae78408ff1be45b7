"""FRED daily observations → ``macro/NAME`` (``value`` only).

``GET /fred/series/observations?series_id=DGS10&api_key=...&file_type=json
&observation_start=YYYY-MM-DD&observation_end=YYYY-MM-DD`` answers
``{"count": n, "offset": k, "limit": m, "observations": [{"date": "2025-07-01",
"value": "4.26", ...}, ...]}``.

Mapping (:data:`pipelines.ingest.base.FRED_SERIES`, configurable):

====== ======== =================================================================
file   series   meaning
====== ======== =================================================================
US10Y  DGS10    10-year Treasury constant-maturity yield, percent (may be <= 0)
VIX    VIXCLS   CBOE VIX close
SPX    SP500    S&P 500 index close (FRED keeps 10 years; close only)
====== ======== =================================================================

FRED carries closes only. A stored file with OHLC columns (the embedded ``VIX`` and ``SPX``
come from CBOE/Yahoo with OHLC) cannot take FRED rows without inventing open/high/low, so
the store refuses the batch and says so; point the mapping at a value-only file instead.

``"."`` is FRED's marker for a session without an observation (US holidays): it is skipped
and listed in the report's ``missing``, never filled. A session dated ``D`` closes around
20-22 UTC on ``D``, so it is requested only when ``D + 1 day <= until``. The API key comes
from the environment (``FRED_API_KEY``) and is redacted from every URL and error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from features.loaders import YIELD_SERIES
from pipelines.ingest.base import ConfigurationError, IngestSettings, Page, Target
from pipelines.ingest.http import HttpClient, PayloadError

__all__ = ["Fred", "parse_observations"]

PATH = "/fred/series/observations"
DAY = pd.Timedelta(days=1)
MISSING = "."
PAGE_LIMIT = 100_000  # FRED's maximum (and default) observations per request


def parse_observations(payload: Any, where: str) -> tuple[pd.DataFrame, list[str], int | None]:
    """Payload → (frame ``timestamp, value``, skipped ``"."`` rows, total ``count`` or None)."""
    observations = payload.get("observations") if isinstance(payload, dict) else None
    if not isinstance(observations, list):
        error = payload.get("error_message") if isinstance(payload, dict) else None
        raise PayloadError("fred", where, error or "no observations array")
    stamps, values, missing = [], [], []
    for i, obs in enumerate(observations):
        if not isinstance(obs, dict) or "date" not in obs or "value" not in obs:
            raise PayloadError("fred", where, f"observation {i} lacks date/value")
        try:
            stamp = pd.Timestamp(str(obs["date"]))
        except ValueError as err:
            raise PayloadError("fred", where, f"observation {i}: {err}") from None
        if pd.isna(stamp):  # "" parses to NaT: a row the closed-period filter would drop
            raise PayloadError("fred", where, f"observation {i}: no date ({obs['date']!r})")
        if obs["value"] == MISSING:
            missing.append(f"{obs['date']}: value '.' (no observation; skipped, not filled)")
            continue
        try:
            values.append(float(obs["value"]))
        except (TypeError, ValueError) as err:
            raise PayloadError("fred", where, f"observation {i} ({obs['date']}): {err}") \
                from None
        stamps.append(stamp)
    frame = pd.DataFrame({
        "timestamp": pd.Series(stamps, dtype="datetime64[ns]"),
        "value": pd.Series(values, dtype="float64"),
    })
    count = payload.get("count")
    return frame, missing, int(count) if isinstance(count, int) else None


class Fred:
    """One target per entry of ``settings.fred_series``."""

    name = "fred"

    def targets(
        self, data_dir: Path, assets: list[str] | None, settings: IngestSettings
    ) -> list[Target]:
        return [
            Target(self.name, f"macro/{name}", "macro", series, DAY, ("value",),
                   prices_positive=name not in YIELD_SERIES)
            for name, series in sorted(settings.fred_series.items())
        ]

    def pages(
        self,
        client: HttpClient,
        settings: IngestSettings,
        target: Target,
        since: pd.Timestamp,
        until: pd.Timestamp,
    ) -> Iterator[Page]:
        key = settings.fred_api_key()
        if key is None:
            raise ConfigurationError(
                f"fred: {settings.fred_api_key_env} is not set; request a free key at "
                "https://fred.stlouisfed.org/docs/api/api_key.html. Nothing was requested.")
        last_session = (until - DAY).normalize()
        if last_session < since.normalize():
            return
        offset = 0
        while True:
            params = {
                "series_id": target.remote,
                "api_key": key,
                "file_type": "json",
                "observation_start": since.strftime("%Y-%m-%d"),
                "observation_end": last_session.strftime("%Y-%m-%d"),
                "sort_order": "asc",
                "offset": offset,
                "limit": PAGE_LIMIT,
            }
            payload = client.get_json(self.name, settings.endpoints.fred, PATH, params)
            frame, missing, count = parse_observations(payload, f"{PATH} {target.remote}")
            closed = frame.loc[frame["timestamp"] + DAY <= until].reset_index(drop=True)
            yield Page(closed, missing)
            received = len(payload["observations"])
            offset += received
            if received == 0 or count is None or offset >= count:
                return

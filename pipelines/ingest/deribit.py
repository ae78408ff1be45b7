"""Deribit DVOL daily candles → ``iv/DVOL_SYM`` (columns ``value, open, high, low, close``).

``GET /api/v2/public/get_volatility_index_data?currency=BTC&start_timestamp=&end_timestamp=
&resolution=1D`` answers ``{"result": {"data": [[ts ms, open, high, low, close], ...],
"continuation": ts | null}}``. Deribit caps the candles per answer and pages *backwards*:
``continuation`` is the ``end_timestamp`` of the next (older) request. To keep every committed
page contiguous with the stored file, the span is cut into windows walked oldest first;
inside a window the continuation chain is followed and the candles sorted before the window
is yielded as one page.

``value`` = ``close`` (the level at the end of the UTC day, as in the stored files). A
candle is kept only once its day is over (``ts + 1 day <= until``): the current day's candle
is still moving.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.ingest.base import (
    IngestSettings,
    Page,
    Target,
    from_ms,
    stored_files,
    to_ms,
)
from pipelines.ingest.http import HttpClient, PayloadError

__all__ = ["Deribit", "parse_dvol"]

CURRENCIES = ("BTC", "ETH")  # Deribit publishes DVOL for these (since 2021-03-24)
COLUMNS = ("value", "open", "high", "low", "close")
PATH = "/api/v2/public/get_volatility_index_data"
DAY = pd.Timedelta(days=1)
MAX_CONTINUATIONS = 100  # per window; a real window needs one or two


def parse_dvol(payload: Any, where: str) -> tuple[pd.DataFrame, int | None]:
    """Payload → (frame ``timestamp, value, open, high, low, close``, continuation or None)."""
    result = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get("data"), list):
        error = payload.get("error") if isinstance(payload, dict) else None
        detail = f"error {error}" if error else "no result.data array"
        raise PayloadError("deribit", where, detail)
    stamps, values = [], []
    for i, candle in enumerate(result["data"]):
        if not isinstance(candle, list) or len(candle) != 5:
            raise PayloadError("deribit", where, f"candle {i} is not [ts, open, high, low, close]")
        try:
            stamps.append(int(candle[0]))
            opened, high, low, close = (float(x) for x in candle[1:])
        except (TypeError, ValueError) as err:
            raise PayloadError("deribit", where, f"candle {i}: {err}") from None
        values.append([close, opened, high, low, close])
    frame = pd.DataFrame(values, columns=list(COLUMNS), dtype="float64")
    frame.insert(0, "timestamp", from_ms(stamps, "deribit", where))
    continuation = result.get("continuation")
    if continuation is None:
        return frame, None
    try:
        return frame, int(continuation)
    except (TypeError, ValueError):
        raise PayloadError("deribit", where, f"continuation {continuation!r} is not an "
                           "integer timestamp") from None


class Deribit:
    """DVOL for the stored ``iv/DVOL_*`` files (or ``assets`` among :data:`CURRENCIES`)."""

    name = "deribit"

    def targets(
        self, data_dir: Path, assets: list[str] | None, settings: IngestSettings
    ) -> list[Target]:
        stored = stored_files(data_dir / "iv", prefix="DVOL_")
        wanted = [a for a in assets if a in CURRENCIES] if assets is not None else stored
        return [
            Target(self.name, f"iv/DVOL_{cur}", "dvol", cur, DAY, COLUMNS) for cur in wanted
        ]

    def pages(
        self,
        client: HttpClient,
        settings: IngestSettings,
        target: Target,
        since: pd.Timestamp,
        until: pd.Timestamp,
    ) -> Iterator[Page]:
        window = pd.Timedelta(days=settings.deribit_window_days)
        start = since
        while start < until:
            end = min(start + window, until)
            frame = self._window(client, settings, target.remote, start, end)
            closed = frame.loc[frame["timestamp"] + DAY <= until].reset_index(drop=True)
            if not closed.empty:
                yield Page(closed)
            start = end

    def _window(
        self,
        client: HttpClient,
        settings: IngestSettings,
        currency: str,
        start: pd.Timestamp,
        end: pd.Timestamp,
    ) -> pd.DataFrame:
        """Candles stamped in ``[start, end)``, following continuations, sorted and unique."""
        start_ms, end_ms = to_ms(start), to_ms(end) - 1
        parts = []
        for _ in range(MAX_CONTINUATIONS):
            params = {"currency": currency, "start_timestamp": start_ms,
                      "end_timestamp": end_ms, "resolution": "1D"}
            payload = client.get_json(self.name, settings.endpoints.deribit, PATH, params)
            frame, continuation = parse_dvol(payload, f"{PATH} {currency} to {end_ms}")
            parts.append(frame)
            if continuation is None or continuation < start_ms or frame.empty:
                break
            if continuation >= end_ms:
                raise PayloadError(self.name, PATH, f"continuation {continuation} does not "
                                   f"move back from end_timestamp {end_ms}")
            end_ms = continuation
        else:
            raise PayloadError(self.name, PATH, f"more than {MAX_CONTINUATIONS} continuations")
        out = pd.concat(parts, ignore_index=True)
        in_window = (out["timestamp"] >= start) & (out["timestamp"] < end)
        out = out.loc[in_window]
        # continuation pages overlap at their boundary: the same point twice is expected; two
        # different values for one stamp are not resolved by picking one
        repeated = out[out.duplicated("timestamp", keep=False)]
        values = [c for c in out.columns if c != "timestamp"]
        clash = repeated.groupby("timestamp")[values].nunique(dropna=False).gt(1).any(axis=1)
        if clash.any():
            stamp = clash[clash].index[0]
            rows = repeated[repeated["timestamp"] == stamp][values].to_dict("records")
            raise PayloadError(self.name, PATH, f"two different points for {stamp}: {rows}")
        out = out.drop_duplicates("timestamp", keep="last")
        return out.sort_values("timestamp").reset_index(drop=True)

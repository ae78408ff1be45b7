"""Binance spot klines → ``crypto/daily/SYM`` and ``crypto/hourly/SYM`` (pair ``SYMUSDT``).

``GET /api/v3/klines?symbol=BTCUSDT&interval=1d&startTime=&endTime=&limit=1000`` answers a
list of arrays ``[openTime ms, open, high, low, close, volume, closeTime ms, quoteVolume,
trades, takerBuyBase, takerBuyQuote, ignore]`` with prices and volumes as strings, oldest
first, at most ``limit`` rows. ``volume`` is in the base asset, as in the stored files.

Only *closed* candles are kept: ``closeTime < until`` (``closeTime`` is the candle's last
millisecond, ``openTime + interval - 1``). The running candle Binance always returns last
would otherwise be stored with a partial high/low/volume and never corrected.
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

__all__ = ["Binance", "parse_klines"]

OHLCV = ("open", "high", "low", "close", "volume")
# Layout kind -> (Binance interval, row spacing)
INTERVALS: dict[str, tuple[str, pd.Timedelta]] = {
    "daily": ("1d", pd.Timedelta(days=1)),
    "hourly": ("1h", pd.Timedelta(hours=1)),
}
PATH = "/api/v3/klines"


def parse_klines(payload: Any, where: str) -> pd.DataFrame:
    """Klines payload → frame ``timestamp, open, high, low, close, volume, close_ms``.

    Raises
    ------
    PayloadError
        Not a list of arrays of at least 7 fields, or a field that is not a number.
    """
    if not isinstance(payload, list):
        raise PayloadError("binance", where, f"expected a JSON array, got {type(payload).__name__}")
    opens, close_ms, values = [], [], []
    for i, kline in enumerate(payload):
        if not isinstance(kline, list) or len(kline) < 7:
            raise PayloadError("binance", where, f"kline {i} is not an array of >= 7 fields")
        try:
            opens.append(int(kline[0]))
            close_ms.append(int(kline[6]))
            values.append([float(x) for x in kline[1:6]])
        except (TypeError, ValueError) as err:
            raise PayloadError("binance", where, f"kline {i}: {err}") from None
    frame = pd.DataFrame(values, columns=list(OHLCV), dtype="float64")
    frame.insert(0, "timestamp", from_ms(opens, "binance", where))
    frame["close_ms"] = pd.Series(close_ms, dtype="int64")
    return frame


class Binance:
    """Spot USDT pairs, daily and hourly.

    Daily files are fed for every stored asset (or for ``assets``, created from ``start``
    when absent); hourly files only where one is already stored: starting an hourly history
    is a deliberate backfill, not a side effect of a daily run.
    """

    name = "binance"

    def __init__(self, quote: str = "USDT") -> None:
        self.quote = quote

    def targets(
        self, data_dir: Path, assets: list[str] | None, settings: IngestSettings
    ) -> list[Target]:
        daily = stored_files(data_dir / "crypto" / "daily")
        hourly = stored_files(data_dir / "crypto" / "hourly")
        wanted = sorted(assets) if assets is not None else daily
        found = [self._target("daily", sym) for sym in wanted]
        found += [self._target("hourly", sym) for sym in hourly if sym in wanted]
        return found

    def _target(self, kind: str, symbol: str) -> Target:
        return Target(
            source=self.name,
            relpath=f"crypto/{kind}/{symbol}",
            kind=kind,
            remote=f"{symbol}{self.quote}",
            step=INTERVALS[kind][1],
            columns=OHLCV,
        )

    def pages(
        self,
        client: HttpClient,
        settings: IngestSettings,
        target: Target,
        since: pd.Timestamp,
        until: pd.Timestamp,
    ) -> Iterator[Page]:
        interval = INTERVALS[target.kind][0]
        start = since
        while start < until:
            params = {
                "symbol": target.remote,
                "interval": interval,
                "startTime": to_ms(start),
                "endTime": to_ms(until) - 1,
                "limit": settings.binance_limit,
            }
            payload = client.get_json(self.name, settings.endpoints.binance, PATH, params)
            frame = parse_klines(payload, f"{PATH} {target.remote} {interval} from {start}")
            if frame.empty:
                return
            closed = frame.loc[frame["close_ms"] < to_ms(until), ["timestamp", *OHLCV]]
            if not closed.empty:
                yield Page(closed.reset_index(drop=True))
            if len(frame) < settings.binance_limit or len(closed) < len(frame):
                return  # a short page is the last one; an open candle is the newest one
            following = frame["timestamp"].iloc[-1] + target.step
            if following <= start:
                raise PayloadError(self.name, PATH, f"klines do not advance past {start}")
            start = following

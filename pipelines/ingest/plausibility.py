"""Plausibility screen for new rows, run after validation and before anything is appended.

Validation (:mod:`features.validation`) refuses rows that *cannot* be right (non-positive or
non-finite prices, high < low, off-grid stamps). This screen holds back rows that are
well-formed but implausible next to the series' own recent history — the fat-finger print,
the price quoted in the wrong unit, the provider glitch (a BTC daily candle with high and
close at 1.2e12) — which no per-row rule can see and which would poison every feature and
margin parameter computed from them.

Rules, for row ``i`` with previous row ``i-1`` (stored or already accepted):

``finite_positive``  a price (or value, where it must be positive) is NaN, infinite or <= 0
``close_jump``       OHLC files: :math:`|\\ln(C_i / C_{i-1})| > k \\cdot s_i`
``high_jump``        OHLC files: :math:`\\ln(H_i / C_{i-1}) > k \\cdot s_i` (an upward spike;
                     downward wicks are not screened: exchanges do print real flash crashes,
                     e.g. Binance LINKUSDT low 0.0001 on 2020-03-12)
``value_jump``       value-only files: :math:`|\\ln(V_i / V_{i-1})| > k \\cdot s_i`, or
                     :math:`|V_i - V_{i-1}| > k \\cdot s_i` where values may be <= 0 (yields)
``after_held``       any row after a held one: appending it would leave a hole

The scale :math:`s_i` is the median over the previous ``window`` rows of the intraday log
range :math:`\\ln(H/L)` (OHLC files) or of the absolute change (value-only files), floored at
:data:`SCALE_FLOOR` (hourly candles with ``H = L`` exist). With fewer than ``min_history``
previous rows there is no scale and only ``finite_positive`` applies.

Defaults of ``k`` (:class:`PlausibilitySettings`): twice the largest ratio ``move / s`` seen in
the embedded data over a selection period (crypto and macro before 2021, DVOL before 2022,
as it starts in 2021-03), rounded up; :mod:`.plausibility_scan` recomputes them. Largest
ratios in that period: daily candles 11.0 (BTC close, 2020-03-12), hourly 40.3 (BTC high,
2018-10-15), DVOL 8.7 (ETH, as a value-only series, 2021-05-19; 6.6 on its candles), macro
25.6 (VIX close-to-close, 2018-02-05) → ``k`` = 25, 100, 25 (rounded up to the daily value),
60. Over the whole stored history no row of any file exceeds these (largest: daily 18.4,
hourly 40.3, DVOL 17.8, macro 25.6), so the screen never holds a row like one already
stored; the 1.2e12 candle scores about 540.

A held row is reported (rule, measured value, limit) and not appended; the operator checks
the provider and either waits for a correction or reruns with a larger ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

__all__ = ["SCALE_FLOOR", "Held", "PlausibilitySettings", "screen"]

# Floor of the scale s, per kind, in the unit of the move (log for prices, level for yields).
# It keeps a flat stretch from making any move "implausible": hourly candles with H = L
# (exchange maintenance) bring the hourly median range to 0. Elsewhere it never binds on the
# stored data: the smallest medians are 1.3% (daily crypto, TRX), 2.9% (DVOL), 0.12% (macro
# log changes, SPY) and 1 bp (US10Y changes).
SCALE_FLOOR: dict[str, float] = {"daily": 0.005, "hourly": 0.001, "dvol": 0.005, "macro": 0.001}
YIELD_SCALE_FLOOR = 0.01  # percentage points: one basis point
PRICE_COLUMNS = ("open", "high", "low", "close", "value")


@dataclass(frozen=True)
class PlausibilitySettings:
    """Thresholds of the screen; see the module docstring for how the defaults were chosen.

    Attributes
    ----------
    enabled : bool
        False: no row is screened (validation still applies).
    window : int
        Previous rows whose median range (or absolute change) is the scale ``s``.
    min_history : int
        Previous rows needed before the jump rules apply.
    k_daily, k_hourly, k_dvol, k_macro : float
        Largest plausible move, in multiples of ``s``, per kind of file.
    """

    enabled: bool = True
    window: int = 30
    min_history: int = 10
    k_daily: float = 25.0
    k_hourly: float = 100.0
    k_dvol: float = 25.0
    k_macro: float = 60.0

    def k(self, kind: str) -> float:
        return {"daily": self.k_daily, "hourly": self.k_hourly, "dvol": self.k_dvol,
                "macro": self.k_macro}[kind]


@dataclass(frozen=True)
class Held:
    """One row held back: where, which rule, the measured value and the limit it broke."""

    timestamp: str
    rule: str
    value: float
    limit: float
    detail: str
    row: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.timestamp} {self.rule}: {self.detail}"


def _scale(past: dict[str, np.ndarray], ohlc: bool, log: bool,
           settings: PlausibilitySettings, kind: str) -> float | None:
    """Median range (OHLC) or absolute change (values) over the last ``window`` rows."""
    if ohlc:
        spread = np.log(past["high"][-settings.window:] / past["low"][-settings.window:])
        floor = SCALE_FLOOR[kind]
    else:
        values = past["value"][-(settings.window + 1):]
        spread = np.abs(np.diff(np.log(values) if log else values))
        floor = SCALE_FLOOR[kind] if log else YIELD_SCALE_FLOOR
    if len(spread) < settings.min_history:
        return None
    return max(float(np.median(spread)), floor)


def _check_row(row: dict[str, float], past: dict[str, np.ndarray], kind: str,
               positive: bool, settings: PlausibilitySettings, stamp: str) -> Held | None:
    """The first rule ``row`` breaks given the rows before it (``past``, oldest first)."""
    for name, price in row.items():
        if not np.isfinite(price) or (positive and price <= 0):
            return Held(stamp, "finite_positive", price, 0.0,
                        f"{name} {price!r} is not a finite{' positive' if positive else ''} "
                        "number")
    ohlc = {"high", "low", "close"} <= set(row)
    log = ohlc or positive
    scale = _scale(past, ohlc, log, settings, kind)
    if scale is None:
        return None
    k = settings.k(kind)
    base = "close" if ohlc else "value"
    previous = float(past[base][-1])
    if ohlc:
        moves = [("close_jump", "close", abs(np.log(row["close"] / previous))),
                 ("high_jump", "high", np.log(row["high"] / previous))]
        what = "median log(high/low)"
    else:
        change = np.log(row["value"] / previous) if log else row["value"] - previous
        moves = [("value_jump", "value", abs(change))]
        what = f"median |change| of {'log value' if log else 'value'}"
    for rule, name, move in moves:
        ratio = float(move) / scale
        if ratio > k:
            return Held(stamp, rule, ratio, k,
                        f"{name} {row[name]!r} vs previous {base} {previous!r}: "
                        f"move {float(move):.4g} = {ratio:.1f} x the trailing {what} "
                        f"{scale:.4g} (last {settings.window} rows) > k={k:g}")
    return None


def screen(
    stored: pd.DataFrame,
    new: pd.DataFrame,
    kind: str,
    prices_positive: bool,
    settings: PlausibilitySettings,
    stamp_format: str,
) -> tuple[pd.DataFrame, list[Held]]:
    """Split ``new`` into the plausible prefix (to append) and the held rest.

    Parameters
    ----------
    stored : DataFrame
        Stored rows indexed by stamp, sorted (only the last ``window + 1`` are used).
    new : DataFrame
        Rows to append, with a ``timestamp`` column, sorted, validated, newer than ``stored``.
    kind : {"daily", "hourly", "dvol", "macro"}
        Kind of file (selects ``k``).
    prices_positive : bool
        False for yields: changes are measured in levels, not logs, and <= 0 is allowed.
    settings : PlausibilitySettings
        Thresholds.
    stamp_format : str
        ``strftime`` format of the stamps in the report.

    Returns
    -------
    (DataFrame, list of Held)
        The rows before the first implausible one, and one entry per held row (the
        implausible one with its rule, every later one as ``after_held``).
    """
    if not settings.enabled or new.empty:
        return new, []
    # The columns the file has (a value-only DVOL file is screened on its values).
    columns = [c for c in PRICE_COLUMNS
               if c in new.columns and (stored.empty or c in stored.columns)]
    # Only the rows before each new row matter: stored tail + the new rows accepted so far.
    tail = stored.iloc[-(settings.window + 1):]
    history = {c: np.concatenate([tail[c].to_numpy(float) if len(tail) else np.empty(0),
                                  new[c].to_numpy(float)]) for c in columns}
    offset = len(tail)
    for i in range(len(new)):
        stamp = new["timestamp"].iloc[i].strftime(stamp_format)
        row = {c: float(history[c][offset + i]) for c in columns}
        past = {c: values[: offset + i] for c, values in history.items()}
        held = _check_row(row, past, kind, prices_positive, settings, stamp)
        if held is not None:
            later = [
                Held(new["timestamp"].iloc[j].strftime(stamp_format), "after_held",
                     float("nan"), float("nan"),
                     f"follows held row {stamp}; appending it would leave a hole",
                     {c: float(history[c][offset + j]) for c in columns})
                for j in range(i + 1, len(new))
            ]
            return new.iloc[:i].reset_index(drop=True), [replace(held, row=row), *later]
    return new, []

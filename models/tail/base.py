r"""The tail-forecaster protocol: VaR and ES of the covered loss, forecast directly.

Beside the variance :class:`models.base.Forecaster`, a :class:`TailForecaster` predicts the
tail of the **covered loss** of the next update interval — the worst liquidation-delay loss
anywhere in ``(t, t+U]`` (:mod:`features.losses`) — for a long and a short position:

* ``fit(panel) -> self`` on feature rows only (no ``target_*`` column); training targets are
  built inside from the ``worst_loss_*`` columns of the rows it was given
  (:func:`covered_loss_targets`), so a panel truncated at a cutoff cannot leak later data.
* ``forecast_tail(panel, levels, cutoffs) -> frame`` with parameters held fixed; a forecast
  at cutoff ``t`` reads only rows dated ``<= t``.
* ``state()`` is JSON-able, ``from_state`` rebuilds an identical model; no pickle.

Tail frame columns (:data:`TAIL_COLUMNS`): ``asset, cutoff, target_date, side, level, var,
es`` with ``side`` in ``{"long", "short"}``, ``target_date = cutoff + U`` and ``var``/``es``
the VaR and ES at ``level`` of the covered loss as a **fraction of position value**:

.. math::

    y^{long} = 1 - e^{-\ell^{long}}, \qquad y^{short} = e^{\ell^{short}} - 1,

with :math:`\ell` the log loss of :mod:`features.losses` (a positive number is a loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

from features.losses import LOSS_VARIANTS, SIDES, loss_column  # noqa: F401 (re-exported)

TAIL_COLUMNS = ["asset", "cutoff", "target_date", "side", "level", "var", "es"]
DEFAULT_LEVELS = (0.975, 0.99, 0.995)


@runtime_checkable
class TailForecaster(Protocol):
    alias: str

    def fit(self, panel: pd.DataFrame) -> Self: ...

    def forecast_tail(
        self,
        panel: pd.DataFrame,
        levels: Sequence[float] = DEFAULT_LEVELS,
        cutoffs: pd.DatetimeIndex | None = None,
    ) -> pd.DataFrame: ...

    def state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self: ...


def check_levels(alias: str, levels: Sequence[float]) -> list[float]:
    """Sorted unique levels in (0.5, 1), or a clear error."""
    out = sorted({float(q) for q in levels})
    if not out or any(not 0.5 < q < 1.0 for q in out):
        raise ValueError(f"{alias}: levels must lie in (0.5, 1), e.g. 0.99; got {levels}")
    return out


def fitted_levels(alias: str, levels: Sequence[float], fitted: Sequence[float],
                  ready: bool) -> list[float]:
    """:func:`check_levels` of ``levels``, each of which must be among ``fitted`` on a fitted
    model (``ready``); else an error naming what is missing."""
    qs = check_levels(alias, levels)
    missing = [q for q in qs if q not in fitted]
    if missing or not ready:
        raise ValueError(f"{alias}: levels {missing or qs} were not fitted "
                         f"(fitted: {list(fitted)}); fit first")
    return qs


def to_fraction(log_loss: np.ndarray, side: str) -> np.ndarray:
    """Log loss → loss fraction of position value (module docstring); monotone increasing."""
    x = np.asarray(log_loss, dtype=float)
    return -np.expm1(-x) if side == "long" else np.expm1(x)


def calendar_series(frame: pd.DataFrame, column: str) -> pd.Series:
    """One asset's column on its complete daily calendar (missing days NaN, never filled)."""
    if column not in frame.columns:
        raise ValueError(f"panel lacks column {column!r}; build it with features/ "
                         "(features.losses)")
    s = frame[column].astype(float)
    return s.reindex(pd.date_range(s.index.min(), s.index.max(), freq="D"))


def covered_loss_targets(frame: pd.DataFrame, side: str, variant: str,
                         interval_days: int) -> pd.Series:
    """Covered loss fraction of the interval after each row of one asset (NaN where unknown).

    The row ``t+U`` feature is the loss of ``(t, t+U]``; shifted by dates, not rows, so a
    missing day never pulls a later interval in, and the last ``U`` rows of the panel given
    to ``fit`` have no target.
    """
    log_loss = calendar_series(frame, loss_column(side, variant))
    nxt = log_loss.shift(-int(interval_days))
    return pd.Series(to_fraction(nxt.to_numpy(), side), index=nxt.index).reindex(frame.index)


def tail_frame(asset: str | list[str], cutoffs: pd.DatetimeIndex, interval_days: int,
               side: str, level: float, var: np.ndarray, es: np.ndarray) -> pd.DataFrame:
    """Tail frame rows: one asset at many cutoffs, or (``asset`` a list) one per asset."""
    cutoffs = pd.DatetimeIndex(cutoffs)
    return pd.DataFrame({
        "asset": asset, "cutoff": cutoffs,
        "target_date": cutoffs + pd.Timedelta(days=int(interval_days)),
        "side": side, "level": float(level),
        "var": np.asarray(var, dtype=float), "es": np.asarray(es, dtype=float),
    })


def tail_rows(assets: list[str], cutoff: pd.Timestamp, interval_days: int, side: str,
              level: float, var: np.ndarray, es: np.ndarray) -> pd.DataFrame:
    """:func:`tail_frame` of many assets at one cutoff (one row each, in ``assets``' order)."""
    return tail_frame(list(assets), pd.DatetimeIndex([cutoff] * len(assets)), interval_days,
                      side, level, var, es)


def empty_tail() -> pd.DataFrame:
    return pd.DataFrame({
        "asset": pd.Series(dtype=str), "cutoff": pd.Series(dtype="datetime64[ns]"),
        "target_date": pd.Series(dtype="datetime64[ns]"), "side": pd.Series(dtype=str),
        "level": pd.Series(dtype=float), "var": pd.Series(dtype=float),
        "es": pd.Series(dtype=float),
    })


def concat_tails(blocks: list[pd.DataFrame]) -> pd.DataFrame:
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        return empty_tail()
    out = pd.concat(blocks, ignore_index=True)
    return out.sort_values(["asset", "side", "level", "cutoff"], ignore_index=True)


def monotone_in_level(var: np.ndarray, es: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rearranged (Chernozhukov, Fernández-Val and Galichon 2010) VaR and ES, (N, L) each.

    Sorting the forecasts across levels (ascending) removes quantile crossing and can only
    bring them closer to the truth; ES is then raised to at least the VaR of its level.
    """
    v = np.sort(np.asarray(var, dtype=float), axis=1)
    e = np.maximum(np.sort(np.asarray(es, dtype=float), axis=1), v)
    return v, e

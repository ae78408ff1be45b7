r"""Tail forecasts from a variance forecaster: filtered historical simulation and EVT.

Both standardize the past covered log losses by the volatility forecast for their own
interval, made from what was known at its start (Barone-Adesi, Giannopoulos and Vosper
1999; the margin policy in ``serving/policy.py`` does the same):

.. math::

    z_s = \ell_{s \to s+U} / \hat\sigma_s, \qquad s + U \le t,

and rescale the tail of :math:`z` by today's :math:`\hat\sigma_t` (the forecast of the
``U``-day variance of the wrapped forecaster, parameters fixed at ``fit``).

* :class:`FhsTail` — empirical tail of the last ``window`` standardized losses:
  :math:`\mathrm{VaR}_q = \hat\sigma_t z_{(\lceil q(n-1) \rceil)}`, ES the mean of the
  losses :math:`\hat\sigma_t z_i` at or beyond it, each turned into a loss fraction before
  averaging (exact for the empirical distribution).
* :class:`EvtTail` — McNeil and Frey (2000): a generalized Pareto distribution fitted at
  ``fit`` by maximum likelihood to the excesses of :math:`z` over its ``1 - tail_fraction``
  quantile :math:`u` (the top 10 % by default: about 100 excesses in a 1000-day window, the
  number McNeil and Frey use), with :math:`N_u` excesses out of :math:`n`:

  .. math::

      z_q = u + \frac{\beta}{\xi}\Big[\Big(\frac{1-q}{N_u/n}\Big)^{-\xi} - 1\Big], \qquad
      \mathrm{ES}^z_q = \frac{z_q + \beta - \xi u}{1 - \xi},

  rescaled by :math:`\hat\sigma_t`. The fit is guarded (:func:`gpd_tail`): the excesses are
  the values strictly above :math:`u` and at least ``MIN_EXCESSES`` of them are needed;
  :math:`\xi` is estimated within ``SHAPE_BOUNDS`` = [0, 0.9] (below 0 the fitted tail would
  end at a finite worst loss, a claim 25-100 excesses cannot support for a margin, so the
  exponential tail is the thinnest accepted; at 1 or above ES does not exist) and, when the
  likelihood's maximum lies outside, :math:`\beta` is re-estimated with :math:`\xi` fixed at
  the bound, which is recorded beside it (``xi_mle``); a fit with :math:`\beta \le 0` is
  refused (no forecast for that asset and side, the reason in ``refused``).
  ES is converted to a fraction as
  :math:`y(\hat\sigma_t \mathrm{ES}^z_q)`; under a GPD with :math:`\xi > 0` the short-side
  fraction :math:`e^{\ell} - 1` has no finite mean, so the exact fraction ES does not exist.
* :class:`HsTail` — historical simulation: the same empirical tail on the raw past losses
  (:math:`\hat\sigma \equiv 1`, no filter), over every loss realized before the cutoff by
  default (``window: null``). The unconditional tail a static table is calibrated on, read
  at every cutoff: the classical baseline that knows nothing of today's volatility, against
  which the filtered models show what conditioning buys.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from configs.risk import GPD_MIN_EXCESSES
from configs.schema import ModelsConfig, TailEvtConfig, TailFhsConfig, TailHsConfig
from models.base import Forecaster, asset_frame, select_cutoffs
from models.registry import build_forecaster, forecaster_from_state
from models.tail.base import (
    DEFAULT_LEVELS,
    SIDES,
    calendar_series,
    check_levels,
    concat_tails,
    loss_column,
    tail_frame,
    tail_rows,
    to_fraction,
)

# ξ bounds (module docstring): no bounded loss tail from a few dozen excesses; ES needs ξ < 1
SHAPE_BOUNDS = (0.0, 0.9)
MIN_EXCESSES = GPD_MIN_EXCESSES  # fewer: a GPD by maximum likelihood set by a handful of days


def calendar_sigma(frame: pd.DataFrame, variance: pd.Series) -> pd.Series:
    """σ_s of one asset on its calendar (NaN on the days without a variance forecast)."""
    return np.sqrt(variance.reindex(pd.date_range(frame.index.min(), frame.index.max())))


def standardized_history(frame: pd.DataFrame, variance: pd.Series, side: str, variant: str,
                         interval_days: int) -> tuple[pd.Series, pd.Series]:
    """(σ_s, z_s) of one asset on its calendar; z_s is known from date s + U on."""
    sigma = calendar_sigma(frame, variance)
    log_loss = calendar_series(frame, loss_column(side, variant))
    z = log_loss.shift(-int(interval_days)) / sigma
    return sigma, z


class _VarianceTail:
    """Shared plumbing: the wrapped variance forecaster and the standardized losses."""

    kind = ""

    def __init__(self, config: TailFhsConfig | TailEvtConfig, alias: str,
                 interval_days: int = 1, models: ModelsConfig | None = None) -> None:
        self.config = config
        self.alias = alias
        self.interval_days = int(interval_days)
        # the run's forecaster settings (``models``), so the σ filtered here is the σ the
        # variance-driven policy uses; the defaults where none is given
        self.models = ModelsConfig() if models is None else models
        self.variance_model: Forecaster | None = None

    def _fit_variance(self, panel: pd.DataFrame) -> None:
        self.variance_model = build_forecaster(self.config.variance_model, self.models,
                                               [self.interval_days]).fit(panel)

    def _histories(self, panel: pd.DataFrame, sides: Sequence[str] = SIDES,
                   cutoffs: pd.DatetimeIndex | None = None, lookback_days: int | None = None
                   ) -> dict[str, dict[str, tuple[pd.Series, pd.Series]]]:
        """side → asset → (σ, z) on the asset's calendar, from one variance forecast.

        With ``cutoffs`` and ``lookback_days`` (the days before a cutoff whose σ and z a
        forecast at it reads: the FHS window plus the interval; 0: σ at the cutoff alone), σ
        is forecast only on those days (the forecast at a day reads the rows up to it, so
        each value is the one a forecast of every day gives; z is NaN elsewhere): a serve's
        one cutoff reads a window, not the whole history."""
        out: dict[str, dict[str, tuple[pd.Series, pd.Series]]] = {side: {} for side in sides}
        for asset, variance in self._variances(panel, cutoffs, lookback_days).items():
            frame = asset_frame(panel, asset)
            for side in sides:
                out[side][asset] = standardized_history(
                    frame, variance, side, self.config.loss_variant, self.interval_days)
        return out

    def _variances(self, panel: pd.DataFrame, cutoffs: pd.DatetimeIndex | None = None,
                   lookback_days: int | None = None) -> dict[str, pd.Series]:
        """asset → the variance model's forecast over the interval, by cutoff: at every day,
        or (``cutoffs`` and ``lookback_days``) on the days a forecast at those cutoffs reads
        (:meth:`_histories`)."""
        days = None
        if cutoffs is not None and lookback_days is not None and len(cutoffs):
            c = pd.DatetimeIndex(cutoffs)
            days = (c if lookback_days == 0 else
                    pd.date_range(c.min() - pd.Timedelta(days=int(lookback_days)), c.max()))
        return {str(asset): block.set_index("cutoff")["variance"]
                for asset, block in self._forecast_variance(panel, days).groupby("asset")}

    def _forecast_variance(self, panel: pd.DataFrame, days: pd.DatetimeIndex | None
                           ) -> pd.DataFrame:
        """The variance model's forecast frame over the interval at ``days`` (None: every)."""
        fc = self._variance().forecast(panel, [self.interval_days], days)
        return fc[fc["horizon_days"] == self.interval_days] if "horizon_days" in fc else fc

    def _variance(self) -> Forecaster:
        if self.variance_model is None:
            raise RuntimeError(f"{self.alias}: fit the model (or load a state) first")
        return self.variance_model

    def _wide(self, panel: pd.DataFrame, t: pd.Timestamp, lookback_days: int,
              with_losses: bool = True
              ) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
        """For one cutoff ``t``, every asset at once: (the assets with a σ forecast at ``t``,
        σ on the days ``t - lookback_days .. t`` (A, lookback_days + 1; NaN: no forecast),
        side → the covered log loss of ``(s, s + U]`` on those days ``s`` (NaN: unknown;
        none without ``with_losses``)). The numbers :meth:`_histories` gives on those days,
        without a frame per asset; a panel with a repeated (asset, date) is refused, as
        :meth:`_histories` refuses it."""
        self._variance()  # fitted, or a clear error before the panel is read
        if panel.index.has_duplicates:
            raise ValueError(f"{self.alias}: the panel repeats an (asset, date) row")
        u, start = self.interval_days, t - pd.Timedelta(days=int(lookback_days))
        days = pd.date_range(start, t)
        fc = self._forecast_variance(panel, days)
        fc = fc[(fc["cutoff"] >= start) & (fc["cutoff"] <= t)]  # whatever it was asked
        if fc.duplicated(["asset", "cutoff"]).any():
            raise ValueError(f"{self.alias}: the variance forecast repeats a cutoff")
        live = fc.loc[fc["cutoff"] == t, "asset"].astype(str)
        assets = sorted(set(live))
        slot = {a: i for i, a in enumerate(assets)}
        width = len(days)
        sigma = np.full((len(assets), width), np.nan)
        mine = fc[fc["asset"].astype(str).isin(slot)]
        rows = mine["asset"].astype(str).map(slot).to_numpy(dtype=np.int64)
        cols = ((mine["cutoff"] - start).dt.days).to_numpy(dtype=np.int64)
        sigma[rows, cols] = np.sqrt(mine["variance"].to_numpy(dtype=float))
        if not with_losses:
            return assets, sigma, {}
        # the loss of (s, s + U] is the row dated s + U
        names = panel.index.get_level_values("asset").astype(str)
        dates = panel.index.get_level_values("date")
        end = t + pd.Timedelta(days=u)
        keep = names.isin(slot) & (dates >= start + pd.Timedelta(days=u)) & (dates <= end)
        rows = np.asarray(names[keep].map(slot), dtype=np.int64)
        cols = np.asarray((dates[keep] - start).days - u, dtype=np.int64)
        losses = {}
        for side in SIDES:
            wide = np.full((len(assets), width), np.nan)
            wide[rows, cols] = panel.loc[keep, loss_column(side, self.config.loss_variant)
                                         ].to_numpy(dtype=float)
            losses[side] = wide
        return assets, sigma, losses

    def _base_state(self) -> dict[str, Any]:
        return {"alias": self.alias, "kind": self.kind, "interval_days": self.interval_days,
                "config": self.config.model_dump(mode="json"),
                "variance_state": self._variance().state()}


def panel_timestamp(panel: pd.DataFrame, day: Any) -> pd.Timestamp:
    """``day`` in the unit of the panel's dates, as the general path's cutoffs are (they are
    taken from the panel's calendar)."""
    unit = getattr(panel.index.get_level_values("date"), "unit", "ns")
    return pd.Timestamp(day).as_unit(unit)


def fhs_measures(z: np.ndarray, sigma_t: np.ndarray, pos: np.ndarray, interval_days: int,
                 levels: Sequence[float], window: int, min_obs: int, side: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(N, L) FHS VaR and ES fractions at calendar positions ``pos`` of one asset's ``z``.

    The window of cutoff ``t`` holds the ``window`` calendar days ``s <= t - U`` (their
    losses are realized by ``t``), NaN days dropped, as the policy's ``z_window``. ES
    averages the sorted losses from the VaR's order statistic on (ties of a continuous
    ``z`` have probability zero). Rows with fewer than ``min_obs`` values are NaN.
    """
    padded = np.concatenate([np.full(window, np.nan), z])
    known = np.asarray(pos) - int(interval_days) + 1  # z[:known] is realized by t
    windows = sliding_window_view(padded, window)[np.maximum(known, 0)]
    return window_measures(windows, sigma_t, levels, min_obs, side)


def window_measures(windows: np.ndarray, sigma_t: np.ndarray, levels: Sequence[float],
                    min_obs: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, L) FHS VaR and ES fractions of ``N`` windows of standardized losses (NaN: no
    loss that day), each rescaled by its ``sigma_t`` (:func:`fhs_measures`)."""
    windows = np.sort(windows, axis=1)
    n = np.isfinite(windows).sum(axis=1)  # (N,) NaNs sort last
    losses = to_fraction(sigma_t[:, None] * windows, side)  # (N, W), ascending
    csum = np.concatenate([np.zeros((len(n), 1)), np.nancumsum(losses, axis=1)], axis=1)
    rows = np.arange(len(n))
    var = np.full((len(n), len(levels)), np.nan)
    es = np.full_like(var, np.nan)
    ok = n >= min_obs
    for j, q in enumerate(levels):
        k = np.minimum(np.ceil(q * (n - 1)).astype(int), np.maximum(n - 1, 0))
        var[ok, j] = losses[rows[ok], k[ok]]
        es[ok, j] = (csum[rows[ok], n[ok]] - csum[rows[ok], k[ok]]) / (n[ok] - k[ok])
    return var, es


def empirical_tails(histories: Iterable[tuple[str, str, pd.Series, pd.Series]],
                    levels: list[float], cutoffs: pd.DatetimeIndex | None, interval_days: int,
                    window: int | None, min_obs: int) -> pd.DataFrame:
    """The tail frame of :func:`fhs_measures` over ``(asset, side, σ, z)`` histories, each on
    its asset's calendar, at the requested cutoffs where σ is known (``window`` None: every
    realized z). FHS and historical simulation (σ ≡ 1) share it."""
    blocks = []
    for asset, side, sigma, z in histories:
        wanted = select_cutoffs(sigma[np.isfinite(sigma)].index, cutoffs)
        var, es = fhs_measures(z.to_numpy(), sigma.loc[wanted].to_numpy(),
                               z.index.get_indexer(wanted), interval_days, levels,
                               window or len(z), min_obs, side)
        ok = np.isfinite(var).all(axis=1)
        blocks += [tail_frame(asset, wanted[ok], interval_days, side, q, var[ok, j],
                              es[ok, j]) for j, q in enumerate(levels)]
    return concat_tails(blocks)


class FhsTail(_VarianceTail):
    """Filtered historical simulation on a variance forecaster (module docstring)."""

    kind = "fhs"

    def fit(self, panel: pd.DataFrame) -> Self:
        self._fit_variance(panel)
        return self

    def forecast_tail(self, panel: pd.DataFrame, levels: Sequence[float] = DEFAULT_LEVELS,
                      cutoffs: pd.DatetimeIndex | None = None) -> pd.DataFrame:
        window = self.config.window
        if cutoffs is not None and len(cutoffs) == 1 and window is not None:
            return self._one_cutoff(panel, check_levels(self.alias, levels),
                                    panel_timestamp(panel, cutoffs[0]))
        known = self._histories(panel, SIDES, cutoffs,
                                None if window is None else window + self.interval_days)
        histories = ((asset, side, sigma, z) for side in SIDES
                     for asset, (sigma, z) in known[side].items())
        return empirical_tails(histories, check_levels(self.alias, levels), cutoffs,
                               self.interval_days, window, self.config.min_obs)

    def _one_cutoff(self, panel: pd.DataFrame, levels: list[float], t: pd.Timestamp
                    ) -> pd.DataFrame:
        """:meth:`forecast_tail` at one cutoff, every asset's window in one array (a serve
        asks for one day): the numbers of :func:`empirical_tails`, without a frame per
        asset (contract test: a forecast at some cutoffs is the forecast of every cutoff)."""
        u, window = self.interval_days, int(self.config.window)
        # σ on the window's days s = t - U - window + 1 .. t - U, and at t
        assets, sigma, losses = self._wide(panel, t, u + window - 1)
        sigma_t = sigma[:, -1]
        blocks = []
        for side in SIDES:
            z = losses[side][:, :window] / sigma[:, :window]
            var, es = window_measures(z, sigma_t, levels, self.config.min_obs, side)
            ok = np.isfinite(var).all(axis=1) & np.isfinite(sigma_t)
            blocks += [tail_rows([a for a, k in zip(assets, ok, strict=True) if k], t, u, side,
                                 q, var[ok, j], es[ok, j]) for j, q in enumerate(levels)]
        return concat_tails(blocks)

    def state(self) -> dict[str, Any]:
        return self._base_state()

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        model = cls(TailFhsConfig(**state["config"]), state["alias"], state["interval_days"])
        model.variance_model = forecaster_from_state(state["variance_state"])
        return model


class HsTail:
    """Historical simulation of the covered loss (module docstring). Nothing is estimated:
    ``fit`` checks the panel has the loss column and every forecast reads the asset's
    realized losses up to its cutoff."""

    kind = "hs"

    def __init__(self, config: TailHsConfig, alias: str, interval_days: int = 1) -> None:
        self.config = config
        self.alias = alias
        self.interval_days = int(interval_days)

    def fit(self, panel: pd.DataFrame) -> Self:
        for side in SIDES:
            column = loss_column(side, self.config.loss_variant)
            if column not in panel.columns:
                raise ValueError(f"{self.alias}: panel lacks column {column!r}; build it "
                                 "with features/ (features.losses)")
        return self

    def forecast_tail(self, panel: pd.DataFrame, levels: Sequence[float] = DEFAULT_LEVELS,
                      cutoffs: pd.DatetimeIndex | None = None) -> pd.DataFrame:
        qs = check_levels(self.alias, levels)
        u, cfg = self.interval_days, self.config

        def histories() -> Iterator[tuple[str, str, pd.Series, pd.Series]]:
            for asset in panel.index.get_level_values("asset").unique():
                frame = asset_frame(panel, str(asset))
                for side in SIDES:
                    # z_s: the loss of (s, s + U], realized at s + U (FHS's, unscaled);
                    # σ ≡ 1 on the asset's rows, the cutoffs it can forecast
                    z = calendar_series(frame, loss_column(side, cfg.loss_variant)).shift(-u)
                    yield str(asset), side, pd.Series(1.0, frame.index).reindex(z.index), z

        return empirical_tails(histories(), qs, cutoffs, u, cfg.window, cfg.min_obs)

    def state(self) -> dict[str, Any]:
        return {"alias": self.alias, "kind": self.kind, "interval_days": self.interval_days,
                "config": self.config.model_dump(mode="json")}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        return cls(TailHsConfig(**state["config"]), state["alias"], state["interval_days"])


class GpdFitError(ValueError):
    """The excesses cannot carry a GPD fit (too few, or a degenerate scale)."""


def gpd_tail(z: np.ndarray, tail_fraction: float) -> dict[str, float]:
    """Threshold ``u`` (the ``1 - tail_fraction`` quantile), GPD ``xi``, ``beta`` by MLE
    within ``SHAPE_BOUNDS`` (``xi_mle``: the unbounded estimate), ``share`` = N_u / n.

    Raises
    ------
    GpdFitError
        Fewer than ``MIN_EXCESSES`` values strictly above ``u`` (ties at the threshold
        are not excesses), or a scale ``beta`` that is not positive.
    """
    z = np.sort(z[np.isfinite(z)])
    k = max(int(np.floor(tail_fraction * z.size)), 1)
    if z.size < k + 1:
        raise GpdFitError(f"{z.size} finite values: no threshold below the top {k}")
    u = float(z[-k - 1])
    excess = z[z > u] - u
    if excess.size < MIN_EXCESSES:
        raise GpdFitError(f"{excess.size} excesses over the threshold {u:.4g} "
                          f"(of {z.size} values; ties at it are none): need {MIN_EXCESSES}")
    from scipy import stats  # EVT's fits only: an FHS or HS serve skips its 0.6 s import

    xi_mle, _, beta = stats.genpareto.fit(excess, floc=0.0)
    lo, hi = SHAPE_BOUNDS
    xi = float(min(max(xi_mle, lo), hi))
    if xi != xi_mle:  # the constrained maximum lies on the bound: β for that ξ
        _, _, beta = stats.genpareto.fit(excess, f0=xi, floc=0.0)
    if not (np.isfinite(beta) and beta > 0):
        raise GpdFitError(f"degenerate GPD scale beta={beta!r} on {excess.size} excesses")
    return {"u": u, "xi": xi, "xi_mle": float(xi_mle), "beta": float(beta),
            "share": excess.size / z.size, "n": int(z.size)}


def gpd_measures(p: dict[str, float], q: float) -> tuple[float, float]:
    """Standardized VaR and ES at level ``q`` of a fitted tail (module docstring)."""
    u, xi, beta, share = p["u"], p["xi"], p["beta"], p["share"]
    ratio = (1.0 - q) / share
    zq = u - beta * np.log(ratio) if abs(xi) < 1e-9 else u + beta / xi * (ratio ** -xi - 1.0)
    return float(zq), float((zq + beta - xi * u) / (1.0 - xi))


class EvtTail(_VarianceTail):
    """McNeil-Frey peaks over threshold on standardized losses (module docstring)."""

    kind = "evt"

    def __init__(self, config: TailEvtConfig, alias: str, interval_days: int = 1,
                 models: ModelsConfig | None = None) -> None:
        super().__init__(config, alias, interval_days, models)
        self.params: dict[str, dict[str, dict[str, float]]] = {}
        self.refused: dict[str, dict[str, str]] = {}  # side → asset → why no GPD was fitted

    def fit(self, panel: pd.DataFrame) -> Self:
        self._fit_variance(panel)
        cfg = self.config
        self.params = {side: {} for side in SIDES}
        self.refused = {side: {} for side in SIDES}
        known = self._histories(panel)
        for side in SIDES:
            for asset, (_, z) in known[side].items():
                z = z.to_numpy()
                z = z[np.isfinite(z)][-cfg.window:]  # a σ of 0 gives ±inf: not a value
                if z.size < cfg.min_obs:
                    continue
                try:
                    self.params[side][asset] = gpd_tail(z, cfg.tail_fraction)
                except GpdFitError as exc:  # that asset and side: no forecast, and why
                    self.refused[side][asset] = str(exc)
        return self

    def forecast_tail(self, panel: pd.DataFrame, levels: Sequence[float] = DEFAULT_LEVELS,
                      cutoffs: pd.DatetimeIndex | None = None) -> pd.DataFrame:
        qs = check_levels(self.alias, levels)
        if any(1.0 - q > self.config.tail_fraction for q in qs):
            raise ValueError(f"{self.alias}: levels {qs} reach below the GPD threshold "
                             f"(tail_fraction {self.config.tail_fraction})")
        if cutoffs is not None and len(cutoffs) == 1:  # a serve's day: every asset at once
            t = panel_timestamp(panel, cutoffs[0])
            assets, sigma, _ = self._wide(panel, t, 0, with_losses=False)
            return concat_tails([self._rows(assets, sigma[:, -1], t, qs, side)
                                 for side in SIDES])
        blocks = []
        for asset, variance in self._variances(panel, cutoffs, 0).items():  # σ at the cutoffs
            sigma = calendar_sigma(asset_frame(panel, asset), variance)
            s = sigma[np.isfinite(sigma)]
            wanted = select_cutoffs(s.index, cutoffs)
            st = s.loc[wanted].to_numpy()
            for side in SIDES:
                p = self.params[side].get(asset)  # params fitted on this side, or none
                if p is None:
                    continue
                for q in qs:
                    zq, ez = gpd_measures(p, q)
                    blocks.append(tail_frame(asset, wanted, self.interval_days, side, q,
                                             to_fraction(st * zq, side),
                                             to_fraction(st * ez, side)))
        return concat_tails(blocks)

    def _rows(self, assets: list[str], sigma_t: np.ndarray, t: pd.Timestamp,
              levels: list[float], side: str) -> pd.DataFrame:
        """The tail rows at ``t`` of the assets with fitted parameters on ``side``."""
        have = [(a, st) for a, st in zip(assets, sigma_t, strict=True)
                if self.params[side].get(a) is not None and np.isfinite(st)]
        blocks = []
        for q in levels:
            measures = [gpd_measures(self.params[side][a], q) for a, _ in have]
            st = np.array([x for _, x in have], dtype=float)
            zq = np.array([m[0] for m in measures], dtype=float)
            ez = np.array([m[1] for m in measures], dtype=float)
            blocks.append(tail_rows([a for a, _ in have], t, self.interval_days, side, q,
                                    to_fraction(st * zq, side), to_fraction(st * ez, side)))
        return concat_tails(blocks)

    def state(self) -> dict[str, Any]:
        return {**self._base_state(), "params": self.params, "refused": self.refused}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        model = cls(TailEvtConfig(**state["config"]), state["alias"], state["interval_days"])
        model.variance_model = forecaster_from_state(state["variance_state"])
        model.params = {s: {a: dict(p) for a, p in v.items()} for s, v in state["params"].items()}
        model.refused = {s: dict(v) for s, v in state.get("refused", {}).items()}
        return model

"""Policy inputs from a feature panel and a forecast series, shared by the batch job and the
policy backtest so that both compute exactly the same thing."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import Config, PolicyConfig
from serving.decide import PolicyInputs
from serving.policy import fraction_lost, sigmas_of, tail_measures, trailing_adv


@dataclass(frozen=True)
class AssetHistory:
    """One asset's daily series aligned on the forecast cutoffs."""

    dates: pd.DatetimeIndex
    variance: np.ndarray          # forecast variance of the next interval at each cutoff
    ret: np.ndarray               # log return of the cutoff day
    loss_next: np.ndarray         # covered log loss of the next interval (target, NaN at end)
    short_loss_next: np.ndarray   # worst adverse move for a short (perp view)
    loss_is_proxy: np.ndarray
    adv_usd: np.ndarray
    # every realized covered loss of the frame (not only forecast dates) and the day its
    # interval ended (days since epoch): the stress floor's long look-back and the loss memory
    realized_loss: np.ndarray = field(default_factory=lambda: np.empty(0))
    realized_day: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    # computed once per asset, not once per replayed day (the replay calls
    # :func:`policy_inputs` for every day, and each conversion is a pass over the history)
    @cached_property
    def days(self) -> np.ndarray:
        """The cutoffs as days since the epoch."""
        return self.dates.to_numpy().astype("datetime64[D]").astype(np.int64)

    @cached_property
    def sigma(self) -> np.ndarray:
        """The forecast σ of the next interval at each cutoff."""
        return np.sqrt(self.variance)

    @cached_property
    def seen(self) -> list[int]:
        """How many realized losses ended by each cutoff (the known loss history's length)."""
        return np.searchsorted(self.realized_day, self.days, side="right").tolist()

    @cached_property
    def _known(self) -> dict[int, list[int]]:
        return {}

    def known(self, u: int) -> list[int]:
        """How many cutoffs ``s <= t - u`` each cutoff ``t`` has: those whose next-interval loss
        is realized by ``t`` (once per history, not once a day)."""
        got = self._known.get(u)
        if got is None:
            got = self._known[u] = np.searchsorted(self.days, self.days - u,
                                                   side="right").tolist()
        return got

    @cached_property
    def _sigma_terms(self) -> dict[float, tuple[list[float], list[float]]]:
        return {}

    def sigma_terms(self, stress_quantile: float) -> tuple[list[float], list[float]]:
        """:func:`serving.policy.sigma_terms` of ``sigma[: i + 1]`` for every cutoff ``i``,
        computed once per history and quantile (every confidence level replays the same
        history). The finite, positive σ known at ``i`` are a prefix of those of the whole
        history, in the same order: the same arrays the per-day call filters, bit for bit."""
        got = self._sigma_terms.get(stress_quantile)
        if got is None:
            ok = np.isfinite(self.sigma) & (self.sigma > 0)
            valid = self.sigma[ok]
            square = valid**2
            pairs = [sigmas_of(valid[:n], square[:n], stress_quantile)
                     for n in np.cumsum(ok).tolist()]
            got = self._sigma_terms[stress_quantile] = ([a for a, _ in pairs],
                                                        [b for _, b in pairs])
        return got

    @cached_property
    def z(self) -> np.ndarray:
        """The standardized covered loss of the interval after each cutoff (NaN at the end)."""
        return self.loss_next / self.sigma


def covered_loss(frame: pd.DataFrame, cfg: PolicyConfig) -> tuple[pd.Series, pd.Series]:
    """(long, short) covered log loss of the interval that *ends* at each date (a feature)."""
    if cfg.loss == "close_to_close":
        r = frame["ret_1d"]
        return (-r).clip(lower=0.0), r.clip(lower=0.0)
    return frame["worst_loss_long"], frame["worst_loss_short"]


def covered_loss_fraction(frame: pd.DataFrame, cfg: PolicyConfig) -> pd.Series:
    r"""The long covered loss of :func:`covered_loss` as a fraction of position value,
    :math:`1 - e^{-\max(L, 0)}` (NaN where the loss is)."""
    return 1.0 - np.exp(-covered_loss(frame, cfg)[0].clip(lower=0.0))


@dataclass(frozen=True)
class AssetSeries:
    """One asset's forecast-free daily series, on every date a cutoff may be aligned with:
    the return of the day, the covered losses of the interval after it, the range-proxy flag
    and the trailing ADV (NaN where the frame has no such value), and the realized losses.
    Built once per asset and settings (:func:`asset_series`); every forecast frame's
    :func:`asset_history` of the asset reads it."""

    by_date: pd.DataFrame
    realized_loss: np.ndarray
    realized_day: np.ndarray
    settings: tuple[int, str, int]  # (update interval, covered-loss variant, ADV window)


def _settings(cfg: Config) -> tuple[int, str, int]:
    return (cfg.features.update_interval_days, cfg.policy.loss, cfg.policy.liquidity.adv_window)


def asset_series(frame: pd.DataFrame, cfg: Config) -> AssetSeries:
    """:class:`AssetSeries` of one asset's feature rows."""
    u = cfg.features.update_interval_days
    long_loss, short_loss = covered_loss(frame, cfg.policy)
    proxy = frame.get("worst_loss_is_proxy", pd.Series(False, index=frame.index))
    dollar = np.exp(frame["log_dollar_volume"])
    by_date = pd.concat({
        "ret": frame["ret_1d"],
        # loss of the interval after t is known at t+u: the feature shifted back by u days
        "loss_next": long_loss.shift(-u, freq="D"),
        "short_loss_next": short_loss.shift(-u, freq="D"),
        "proxy": proxy.astype(object),
        # ends the day before
        "adv": trailing_adv(dollar, cfg.policy.liquidity.adv_window),
    }, axis=1)
    realized = long_loss.dropna().sort_index()
    return AssetSeries(by_date, realized.to_numpy(float),
                       realized.index.to_numpy().astype("datetime64[D]").astype(np.int64),
                       _settings(cfg))


def asset_history(frame: pd.DataFrame, forecast: pd.DataFrame, cfg: Config,
                  series: AssetSeries | None = None) -> AssetHistory:
    """Align one asset's feature rows with its 1-interval forecasts (by cutoff); ``series``
    (the asset's :func:`asset_series` under the same settings) when the caller has it."""
    if series is None:
        series = asset_series(frame, cfg)
    elif series.settings != _settings(cfg):
        raise ValueError(f"asset series built for {series.settings}, asked for {_settings(cfg)}")
    u = cfg.features.update_interval_days
    fc = forecast[forecast["horizon_days"] == u].set_index("cutoff")["variance"].sort_index()
    rows = series.by_date.reindex(fc.index)  # NaN (proxy: True) where the frame has none
    return AssetHistory(
        dates=pd.DatetimeIndex(fc.index), variance=fc.to_numpy(float),
        ret=rows["ret"].to_numpy(float), loss_next=rows["loss_next"].to_numpy(float),
        short_loss_next=rows["short_loss_next"].to_numpy(float),
        loss_is_proxy=rows["proxy"].fillna(True).to_numpy(bool),
        adv_usd=rows["adv"].to_numpy(float),
        realized_loss=series.realized_loss, realized_day=series.realized_day,
    )


class LossTerms:
    """The stress ES and the loss memory of one asset's realized covered losses, for every day
    a replay asks about at once, shared by every replay of the asset.

    Both depend on the realized losses, the day and a few policy settings, never on the
    forecast, so the candidates of a policy backtest (forecasters × grid points) would compute
    the same numbers again and again: with 9 forecasters and 3 confidence levels that is 27
    evaluations of each stress window and loss memory where 3 and 1 suffice. And across days
    they are mostly the same windows: the worst stress window of the look-back changes only
    when a worse one is realized, and the memory is a maximum over a few hundred days. So each
    is computed for a whole calendar span in a few array passes (:meth:`stress_at`,
    :meth:`memory_at`), with the values :func:`serving.policy.stress_es` /
    :func:`serving.policy.loss_memory` give on the very arrays :func:`policy_inputs` slices,
    bit for bit (test against both functions day by day). Keyed by every setting they read.
    """

    def __init__(self, realized_loss: np.ndarray, realized_day: np.ndarray) -> None:
        self.loss, self.day = realized_loss, realized_day
        # what both functions keep before looking at ages: the finite losses, in order
        finite = np.isfinite(np.asarray(realized_loss, float))
        self._x = np.asarray(realized_loss, float)[finite]
        self._d = np.asarray(realized_day, np.int64)[finite]
        self._stress: dict[tuple[float, int, int], tuple[int, np.ndarray]] = {}
        self._memory: dict[float, tuple[int, np.ndarray]] = {}

    @classmethod
    def of(cls, h: AssetHistory) -> LossTerms:
        return cls(h.realized_loss, h.realized_day)

    def check(self, h: AssetHistory) -> None:
        """Refuse a history whose realized losses are not these (another asset or loss)."""
        if not (np.array_equal(self.day, h.realized_day)
                and np.array_equal(self.loss, h.realized_loss, equal_nan=True)):
            raise ValueError("LossTerms shared with a history of other realized losses")

    @staticmethod
    def _lookup(cache: dict, key: Any, days: np.ndarray, compute: Any) -> np.ndarray:
        """Values at ``days`` from the cached calendar span of ``key``, (re)computed over the
        union span when a day falls outside it."""
        days = np.asarray(days, np.int64)
        if not len(days):
            return np.empty(0)
        lo, hi = int(days.min()), int(days.max())
        got = cache.get(key)
        if got is not None and got[0] <= lo and hi < got[0] + len(got[1]):
            start, values = got
        else:
            if got is not None:
                lo, hi = min(lo, got[0]), max(hi, got[0] + len(got[1]) - 1)
            start, values = lo, compute(np.arange(lo, hi + 1, dtype=np.int64))
            cache[key] = (start, values)
        return values[days - start]

    def stress_at(self, days: np.ndarray, cfg: PolicyConfig) -> np.ndarray:
        """``stress_es(losses known at d, their ages, cfg)`` for each day ``d`` of ``days``."""
        key = (cfg.confidence, cfg.stress_lookback_days, cfg.stress_window_obs)
        return self._lookup(self._stress, key, days, lambda grid: self._stress_grid(grid, cfg))

    def kept_at(self, days: np.ndarray, cfg: PolicyConfig) -> np.ndarray:
        """How many losses ``stress_es`` keeps at each day ``d`` of ``days`` (finite, known at
        ``d``, aged at most the look-back): fewer than the stress window, the asset is young
        (:mod:`serving.seasoning`)."""
        days = np.asarray(days, np.int64)
        seen = np.searchsorted(self._d, days, side="right")
        first = np.searchsorted(self._d, days - int(cfg.stress_lookback_days), side="left")
        return (seen - first).astype(np.int64)

    def memory_at(self, days: np.ndarray, half_life_days: float) -> np.ndarray:
        """``loss_memory(losses known at d, their ages, half_life_days)`` for each day ``d``."""
        return self._lookup(self._memory, float(half_life_days), days,
                            lambda grid: self._memory_grid(grid, float(half_life_days)))

    def _stress_grid(self, grid: np.ndarray, cfg: PolicyConfig) -> np.ndarray:
        # known at d: realized day <= d; kept: age d - day <= look-back (integer days)
        seen = np.searchsorted(self._d, grid, side="right")
        first = np.searchsorted(self._d, grid - int(cfg.stress_lookback_days), side="left")
        x = np.maximum(self._x, 0.0)
        w_full = int(cfg.stress_window_obs)
        out = np.full(len(grid), np.nan)
        es_of: dict[tuple[int, int], float] = {}  # by window [a, b): few distinct windows

        def es(a: int, b: int) -> float:
            value = es_of.get((a, b))
            if value is None:
                value = es_of[(a, b)] = fraction_lost(tail_measures(x[a:b], cfg.confidence)[1])
            return value

        for f in np.unique(first):
            rows = np.flatnonzero(first == f)
            n = seen[rows] - f  # losses kept on each of these days
            short = rows[(n > 0) & (n < w_full)]  # the whole history is the stress window
            for r in short:
                out[r] = es(int(f), int(seen[r]))
            full = rows[n >= w_full]
            if not len(full):
                continue
            # the cumulative sums stress_es takes over the kept losses start at f whatever the
            # day, so one pass serves every day of this look-back start; the window of a day is
            # the earliest maximum of the window sums among the starts it can see
            csum = np.concatenate(([0.0], np.cumsum(x[f:int(seen[full].max())])))
            sums = csum[w_full:] - csum[:-w_full]
            record = np.ones(len(sums), bool)
            record[1:] = sums[1:] > np.maximum.accumulate(sums)[:-1]
            earliest = np.maximum.accumulate(np.where(record, np.arange(len(sums)), 0))
            starts = f + earliest[seen[full] - f - w_full]
            # few distinct windows among many days: each window's ES once, spread by index
            distinct, which = np.unique(starts, return_inverse=True)
            out[full] = np.array([es(s, s + w_full) for s in distinct.tolist()])[which]
        return out

    def _memory_grid(self, grid: np.ndarray, half_life: float) -> np.ndarray:
        seen = np.searchsorted(self._d, grid, side="right")
        # kept: age a <= 20 half-lives; ages are whole days, so a <= floor(20 h)
        first = np.searchsorted(self._d, grid - math.floor(20.0 * half_life), side="left")
        width = int((seen - first).max()) if len(grid) else 0
        out = np.full(len(grid), np.nan)
        if width == 0:
            return out
        frac = -np.expm1(-np.maximum(self._x, 0.0))
        # days × window in blocks of ~2M cells: a year's half-life is a 7,300-day window
        block = max(1, (1 << 21) // width)
        for lo in range(0, len(grid), block):
            part = slice(lo, lo + block)
            idx = first[part, None] + np.arange(width)
            inside = idx < seen[part, None]
            idx = np.where(inside, idx, 0)
            ages = (grid[part, None] - self._d[idx]).astype(float)
            weighted = np.where(inside, frac[idx] * np.exp2(-ages / half_life), -np.inf)
            best = weighted.max(axis=1)
            some = inside.any(axis=1)
            out[part][some] = best[some]
        return out


def policy_inputs(
    h: AssetHistory, i: int, u: int, hours: float, window: int,
    stress: float | None = None, memory: float | None = None,
    sigma_stress: float | None = None, sigma_long: float | None = None,
) -> PolicyInputs:
    """Inputs of the update at position ``i``: only losses realized by then enter the window.

    ``stress`` / ``memory``: the unweighted stress ES and loss memory of the day when the
    caller has them already (a replay takes them for all its days at once from
    :class:`LossTerms`); None: :func:`serving.decide.risk_parameters` computes them from the
    known losses; ``sigma_stress`` / ``sigma_long`` likewise (:meth:`AssetHistory.sigma_terms`).
    """
    sigma, days = h.sigma, h.days
    # the loss after cutoff s is realized at s+u: usable at t for s <= t-u (dates, not rows,
    # so a missing day can never let a future loss in)
    known = h.known(u)[i]
    lo = max(known - window, 0)
    z = h.z[lo:known]  # loss_next / sigma, elementwise: the same values sliced
    seen = h.seen[i]  # losses whose interval ended by the as-of
    return PolicyInputs(
        as_of=dt.date(1970, 1, 1) + dt.timedelta(days=int(days[i])), variance=float(h.variance[i]),
        variance_prev=float(h.variance[i - 1]) if i else math.nan,
        ret_today=float(h.ret[i]), z_window=z, sigma_history=sigma[: i + 1],
        loss_history=h.realized_loss[:seen], loss_age_days=days[i] - h.realized_day[:seen],
        adv_usd=float(h.adv_usd[i]), loss_is_proxy=bool(h.loss_is_proxy[i]), hours=hours,
        stress_es=stress, loss_memory=memory, sigma_stress=sigma_stress,
        sigma_long=sigma_long,
    )




# ---------------------------------------------------------------------------------------------
# All assets at once: the same numbers from numpy arrays of the whole panel (serving's batch)


@dataclass(frozen=True)
class PanelArrays:
    """A panel sorted by (asset, date) as numpy arrays; asset ``k`` owns rows
    ``start[k]:end[k]``."""

    assets: list[str]
    start: np.ndarray          # (A,) first row of each asset
    end: np.ndarray            # (A,) one past its last row
    day: np.ndarray            # (N,) days since epoch of each row
    slot: np.ndarray           # (N,) position of each row's asset in ``assets``

    @classmethod
    def from_panel(cls, panel: pd.DataFrame) -> PanelArrays:
        """``panel`` indexed by (asset, date) and sorted: each asset's rows are contiguous."""
        codes = np.asarray(panel.index.codes[0], dtype=np.int64)
        cut = np.flatnonzero(np.diff(codes)) + 1
        start = np.r_[0, cut].astype(np.int64) if len(codes) else np.empty(0, np.int64)
        end = np.r_[cut, len(codes)].astype(np.int64) if len(codes) else np.empty(0, np.int64)
        levels = panel.index.levels[0]
        slot = np.repeat(np.arange(len(start)), end - start)
        day = panel.index.get_level_values(1).to_numpy().astype("datetime64[D]").astype(np.int64)
        return cls([str(n) for n in levels.take(codes[start]).tolist()], start, end, day, slot)

    def column(self, panel: pd.DataFrame, name: str) -> np.ndarray:
        """A numeric column as float64 (``<NA>`` → NaN)."""
        return panel[name].to_numpy(dtype=float, na_value=np.nan)

    def _axis(self, window_days: int) -> np.ndarray:
        """Days on one time axis where asset ``k`` starts more than a window after asset
        ``k-1`` ended: strictly increasing over the sorted panel, no window spans two assets."""
        span = int(self.day.max() - self.day.min()) + 2 * int(window_days) + 2
        return (self.day - self.day.min()) + self.slot.astype(np.int64) * span

    def rolling_mean(self, values: np.ndarray, window_days: int,
                     closed: str = "right") -> np.ndarray:
        """Mean of the non-NaN ``values`` over the ``window_days`` calendar days that end at
        each row (``closed="left"``: that end the day before), each asset on its own:
        ``Series.rolling(f"{w}D", min_periods=1, closed=closed).mean()`` of every asset's
        series, in one call on the assets laid end to end (:meth:`_axis`).

        pandas restarts its running (compensated) sums whenever a window shares no row with
        the previous one, so each asset's numbers are bit for bit those of its own call.
        """
        if not len(values):
            return np.empty(0)
        seconds = (self._axis(window_days) * 86_400).astype("datetime64[s]")
        rolling = pd.Series(values, index=pd.DatetimeIndex(seconds)).rolling(
            f"{int(window_days)}D", min_periods=1, closed=closed)
        return rolling.mean().to_numpy(float)

    def window_count(self, values: np.ndarray, rows: np.ndarray, window_days: int
                     ) -> np.ndarray:
        """Number of non-NaN ``values`` of each row's asset dated in ``(t - w, t]``, ``t`` the
        date of each of ``rows`` (what the rolling count gives there, without the pass)."""
        axis = self._axis(window_days)
        known = np.r_[0, np.cumsum(~np.isnan(values))]
        rows = np.asarray(rows, dtype=np.int64)
        first = np.searchsorted(axis, axis[rows] - int(window_days), side="right")
        return (known[rows + 1] - known[first]).astype(float)


def latest_inputs(
    days: np.ndarray, variance: np.ndarray, frame_day: np.ndarray, long_loss: np.ndarray,
    ret_today: float, adv_usd: float, loss_is_proxy: bool, u: int, hours: float, window: int,
) -> PolicyInputs:
    """:func:`policy_inputs` of the last cutoff, from arrays (what the batch job needs).

    Equal to ``policy_inputs(asset_history(frame, fc, cfg), len(fc) - 1, ...)`` when ``days``
    (forecast cutoffs, days since epoch, strictly increasing, the last one the as-of) and
    ``variance`` are the forecast series, and ``frame_day`` / ``long_loss`` the asset's rows
    dated ``<=`` the as-of (strictly increasing days) and their covered loss
    (:func:`covered_loss`). ``ret_today``, ``adv_usd`` and ``loss_is_proxy`` are those of
    the as-of row.
    """
    i = len(days) - 1
    sigma = np.sqrt(variance)
    known = int(np.searchsorted(days, days[i] - u, side="right"))
    lo = max(known - window, 0)
    # loss of the interval after cutoff s: the covered loss dated s + u, NaN when no such row
    target = days[lo:known] + u
    at = np.minimum(np.searchsorted(frame_day, target), max(len(frame_day) - 1, 0))
    hit = frame_day[at] == target if len(frame_day) else np.zeros(len(target), bool)
    loss_next = np.where(hit, long_loss[at] if len(frame_day) else np.nan, np.nan)
    z = loss_next / sigma[lo:known]
    known_loss = ~np.isnan(long_loss)
    realized_loss, realized_day = long_loss[known_loss], frame_day[known_loss]
    seen = int(np.searchsorted(realized_day, days[i], side="right"))
    return PolicyInputs(
        as_of=dt.date(1970, 1, 1) + dt.timedelta(days=int(days[i])), variance=float(variance[i]),
        variance_prev=float(variance[i - 1]) if i else math.nan,
        ret_today=float(ret_today), z_window=z, sigma_history=sigma[: i + 1],
        loss_history=realized_loss[:seen], loss_age_days=days[i] - realized_day[:seen],
        adv_usd=float(adv_usd), loss_is_proxy=bool(loss_is_proxy), hours=hours,
    )


def covered_loss_arrays(panel: pd.DataFrame, cfg: PolicyConfig) -> np.ndarray:
    """The long covered loss of :func:`covered_loss` for every row of ``panel`` (float64)."""
    if cfg.loss == "close_to_close":
        loss = -panel["ret_1d"].to_numpy(dtype=float, na_value=np.nan)
        # Series.clip(lower=0) keeps NaN and -0.0 (it replaces only values below the bound)
        return np.where(np.isnan(loss) | (loss >= 0.0), loss, 0.0)
    return panel["worst_loss_long"].to_numpy(dtype=float, na_value=np.nan)


def series_by_asset(frame: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A forecast frame as ``asset -> (cutoff days since epoch, variance)``, rows in order."""
    if frame.empty:
        return {}
    codes, names = pd.factorize(frame["asset"].to_numpy(dtype=object))
    order = np.argsort(codes, kind="stable")
    day = frame["cutoff"].to_numpy().astype("datetime64[D]").astype(np.int64)[order]
    var = frame["variance"].to_numpy(dtype=float)[order]
    cut = np.cumsum(np.bincount(codes, minlength=len(names)))[:-1]
    return {str(a): (d, v) for a, d, v in zip(names, np.split(day, cut), np.split(var, cut),
                                              strict=True)}


def stored_by_asset(bundle: dict[str, Any], assets: list[str], limit: pd.Timestamp
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The bundle's forecasts of ``assets`` with cutoff ``<= limit``, parsed in one call
    (None when a date is not a plain ISO date: those take the per-asset path)."""
    stored = bundle["forecasts"]
    names = [a for a in assets if a in stored]
    if not names:  # np.split of an empty array by no cut still yields one (empty) piece
        return {}
    dates = [d for a in names for d in stored[a]["dates"]]
    # numpy reads "YYYY-MM-DD" as pandas does, but would truncate a time and misread other
    # forms ("20220601" as a year): anything else takes the per-asset path
    try:
        if dates and set(map(len, dates)) != {10}:
            return None
        day = np.array(dates, dtype="datetime64[D]")
    except (TypeError, ValueError):
        return None
    var = np.array([v for a in names for v in stored[a]["variance"]], dtype=float)
    last = (limit.normalize() - pd.Timestamp(0)).days
    cut = np.cumsum([len(stored[a]["dates"]) for a in names])[:-1]
    out = {}
    for a, d, v in zip(names, np.split(day.astype(np.int64), cut), np.split(var, cut),
                       strict=True):
        keep = d <= last
        out[a] = (d[keep], v[keep])
    return out


def merged_series(old_day: np.ndarray, old_var: np.ndarray, new_day: np.ndarray,
            new_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stored forecasts not recomputed, then the new ones, sorted by cutoff (as
    :func:`serving.apply._forecast_series` merges
    them)."""
    if not len(old_day) or not len(new_day) or (
            new_day[0] > old_day[-1] and np.all(old_day[1:] > old_day[:-1])
            and np.all(new_day[1:] > new_day[:-1])):
        # the serve's case: new cutoffs all after the stored ones, each series increasing
        return np.concatenate([old_day, new_day]), np.concatenate([old_var, new_var])
    keep = ~np.isin(old_day, new_day)
    day = np.concatenate([old_day[keep], new_day])
    order = np.argsort(day, kind="stable")
    return day[order], np.concatenate([old_var[keep], new_var])[order]


def per_asset_lists(frame: pd.DataFrame, columns: Mapping[str, str]) -> dict[str, Any]:
    """``{asset: {"dates": [ISO dates of cutoff], key: [floats of column], ...}}`` of a
    forecast frame (``asset``, ``cutoff`` and ``columns``' values), each asset's rows by
    cutoff: the JSON a policy bundle stores its walk-forward forecasts in."""
    out: dict[str, Any] = {}
    for asset, fc in frame.sort_values("cutoff").groupby("asset"):
        out[str(asset)] = {"dates": [d.date().isoformat() for d in fc["cutoff"]],
                           **{key: [float(v) for v in fc[col]] for key, col in columns.items()}}
    return out

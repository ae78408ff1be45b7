r"""How many trailing days of raw data a serve needs, so that a trimmed build reads the same rows.

A daily serve reads few rows of the panel: the as-of row, and for each asset the look-backs of
the margin policy (:mod:`serving.inputs`, :mod:`serving.decide`). Building features over the
whole history for that wastes time and, stored, disk. This module derives from the config (and
the served model's state) how many calendar days ending at the as-of must be built so that
the panel rows the serve reads are those of a full build, up to float round-off (rolling
means and prefix sums accumulate from the first row they see: ~1e-10 relative at most).

Two spans, each :math:`P + F + 1` days (the ``+ 1`` counts the as-of day):

* **every column** over ``days``: :math:`P` the policy terms that read full feature rows
  (``policy.*``: the ADV window, the plausibility bound's trailing realized variance, the
  days forecast since ``fit_cutoff``, a forecaster that reads feature rows) and :math:`F`
  the look-back of the features themselves (``feature.*``, :func:`feature_lookback_days`: a
  row dated :math:`t` reads raw data dated ``t - F .. t``);
* **the tail columns** (:data:`features.build.TAIL_COLUMNS`: close, return, covered loss)
  over ``tail_days``: :math:`P` the look-backs over realized losses (``tail.*``: stress floor,
  loss memory, FHS losses; the whole history for a forecaster that filters every past
  return) and :math:`F` the loss and return look-backs.

Anything with unbounded memory makes a span ``None`` (full history), never a silently
shortened window: GARCH and EWMA recursions and EGARCH's residual pool and running worst
return read every past return (``tail_days`` None); a learnt model whose inputs are not
audited here is given every column in full (``days`` None). The long-run :math:`\sigma` of the
APC floor (RMS of *all* past :math:`\sigma`) is not a panel term: past :math:`\sigma` come from
the model bundle's stored walk-forward forecasts; only those made since ``fit_cutoff`` come
from the panel (``policy.since_fit``).

DVOL series are never trimmed (a few thousand rows, reindexed to each asset's calendar).
Macro series are cut at the first crypto day built: a macro session pairs with the crypto
return since the previous session, so a session whose previous one is before that day has no
pair in a full build either; every pair, and hence every correlation and beta, is unchanged.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import Config, FeaturesConfig, PolicyConfig
from features.build import YANG_ZHANG_WINDOW, build_panel, build_with_tail
from features.crossasset import BASKET_WINDOW, BETA_WINDOW
from features.fast import fast_columns, fast_panel, macro_since
from features.liquidity import LIQUIDITY_WINDOW
from features.loaders import MarketData
from features.loss_days import LossDays
from features.losses import PROXY_FLAG, SIDES, loss_column
from features.macro import CORR_WINDOWS
from features.store import panel_fingerprint

# Forecaster kinds (``state()["kind"]``) by what their forecast at a cutoff reads.
ROW_WISE_KINDS = frozenset({"har"})  # that row's columns (har_rv_{1,7,30}d, dvol_var_1d)
RETURN_PATH_KINDS = frozenset({"garch", "ewma"})  # every past ret_1d, nothing else
DVOL_CHANGE_DAYS = 7    # dvol_change_7d
# Memory terms older than this many half-lives are dropped by serving.policy.loss_memory.
MEMORY_HALF_LIVES = 20.0
_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class TrailingWindow:
    """Raw calendar days to build, ending at the as-of; None = full history.

    ``days`` for every column, ``tail_days`` (>= ``days``) for the tail columns. ``terms``
    holds each contribution (days, or None for unbounded) so a report can say which binds.
    """

    days: int | None
    tail_days: int | None
    terms: dict[str, int | None]

    def _binding(self, prefix: str) -> str:
        group = {k: v for k, v in self.terms.items() if k.startswith(prefix)}
        unbounded = [k for k, v in group.items() if v is None]
        if unbounded or not group:
            return unbounded[0] if unbounded else ""
        return max(group, key=lambda k: group[k] or 0)

    @property
    def binding(self) -> str:
        """The term that sets ``days``."""
        return self._binding("policy.")

    @property
    def tail_binding(self) -> str:
        """The term that sets ``tail_days``."""
        return self._binding("tail.")


def max_session_gap_days(macro: Mapping[str, pd.DataFrame]) -> int:
    """Largest number of calendar days between consecutive sessions of any macro series."""
    gaps = [int(np.diff(np.asarray(f.index, dtype="datetime64[D]")).max().astype(int))
            for f in macro.values() if len(f) > 1]
    return max(gaps, default=1)


def feature_lookback_days(cfg: FeaturesConfig, session_gap_days: int) -> dict[str, int]:
    r"""Days before row :math:`t` whose raw data row :math:`t`'s features read, per group.

    ``ret_1d`` 1 (previous close); hourly measures 1 (a day's first hourly return starts at
    the previous day's 23:00 candle); HAR :math:`\max w` (rows :math:`t-w+1..t` of ``rv``, each
    1 day back); Yang-Zhang 30 (the overnight return of the window's first day needs the
    close before it); liquidity 30 (``volume_z``: days :math:`t-30..t`; Amihud: returns of
    days :math:`t-29..t`); cross-asset 30 (returns of the 30-row window); DVOL changes 7
    (``dvol_var_1d`` and VRP/IV-RV read ``har_rv_30d``, already counted); worst loss
    :math:`U - 1 + \lceil (H + B)/24 \rceil` for hourly windows (the first window of the interval
    starts :math:`H` hours before its first day, and up to :math:`B` more across an outage,
    ``outage_bridge_hours``) and :math:`U` for the range proxy (close
    before the interval); macro :math:`\mathrm{lag} + \mathrm{carry} + (w_{max} - 1) + G`:
    the row reads a session at most ``lag + carry`` days old, whose statistic uses the
    sessions of its trailing :math:`w_{max}` = 90 calendar days, each paired with the crypto
    return since the previous session, at most :math:`G` (``session_gap_days``) days earlier.
    """
    u, h = cfg.update_interval_days, cfg.liquidation_delay_hours + cfg.outage_bridge_hours
    return {
        "feature.ret_1d": 1,
        "feature.hourly_rv": 1,
        "feature.har": max(cfg.har_windows),
        "feature.yang_zhang": YANG_ZHANG_WINDOW,
        "feature.liquidity": LIQUIDITY_WINDOW,
        "feature.cross_asset": max(BETA_WINDOW, BASKET_WINDOW),
        "feature.dvol_change": DVOL_CHANGE_DAYS,
        "feature.worst_loss": max(u, u - 1 + math.ceil(h / 24)),
        "feature.macro": (cfg.macro_lag_days + cfg.macro_max_carry_days + max(CORR_WINDOWS) - 1
                          + session_gap_days),
    }


def fhs_rows_days(forecast_dates: Mapping[str, Sequence[str]], as_of: dt.date, u: int,
                  fhs_window: int) -> int:
    """Days back to the oldest stored forecast date whose loss can enter the FHS window.

    The window is the last ``fhs_window`` forecast rows dated ``<= as_of - u``
    (:func:`serving.inputs.policy_inputs`); forecasts added after the stored ones only push
    it later, so the stored ``fhs_window``-th last one (per asset; the oldest over assets) is
    a safe bound even where forecasts have gaps. The calendar bound ``fhs_window + u`` (exact
    for daily forecasts without gaps) is the least returned.
    """
    last = np.datetime64(as_of - dt.timedelta(days=u), "D")
    days = fhs_window + u
    for dates in forecast_dates.values():
        stamps = np.asarray(dates, dtype="datetime64[D]")
        k = int(np.searchsorted(stamps, last, side="right"))
        if k:
            first = stamps[max(k - fhs_window, 0)]
            days = max(days, int((np.datetime64(as_of, "D") - first).astype(int)))
    return days


def policy_lookback_days(
    policy: PolicyConfig, u: int, forecaster_kind: str, as_of: dt.date, fit_cutoff: dt.date,
    forecast_dates: Mapping[str, Sequence[str]] | None = None, plausibility_days: int = 0,
) -> dict[str, int | None]:
    """Days before the as-of whose panel rows the serve reads, per look-back.

    Full rows (``policy.*``): ``adv`` the ADV window (it ends the day before);
    ``plausibility`` the calendar days of ``rv`` the as-of forecast is checked against
    (``backtest.plausibility.window_days``, 0 when disabled); ``since_fit``
    the days forecast by the forecaster itself (after ``fit_cutoff``), whose σ enter the σ
    history; ``forecaster`` 0 for a row-wise or return-path forecaster, None (every column in
    full) for any other. Tail rows (``tail.*``): ``stress`` the stress floor's
    ``stress_lookback_days`` (losses aged ``<=`` it; 0 when its weight is 0); ``memory`` 20
    half-lives of the loss memory (older weights are below 1e-6 and dropped; 0 when off);
    ``fhs`` the rows whose realized loss enters the FHS window (:func:`fhs_rows_days`;
    ``fhs_window + u`` from the config alone); ``forecaster`` None (every past return) for a
    return-path forecaster, else 0.
    """
    fhs = (fhs_rows_days(forecast_dates, as_of, u, policy.fhs_window)
           if forecast_dates is not None else policy.fhs_window + u)
    known = forecaster_kind in ROW_WISE_KINDS | RETURN_PATH_KINDS
    return {
        "policy.adv": policy.liquidity.adv_window,
        "policy.plausibility": plausibility_days,
        "policy.since_fit": max((as_of - fit_cutoff).days, 1),
        "policy.forecaster": 0 if known else None,
        "tail.stress": policy.stress_lookback_days if policy.stress_floor_weight > 0 else 0,
        "tail.memory": (math.floor(MEMORY_HALF_LIVES * policy.memory_half_life_days)
                        if policy.memory_weight > 0 else 0),
        "tail.fhs": fhs,
        "tail.forecaster": None if forecaster_kind in RETURN_PATH_KINDS else 0,
    }


def _span(terms: dict[str, int | None], policy: str, feature: list[str]) -> int | None:
    group = [v for k, v in terms.items() if k.startswith(policy)]
    if any(v is None for v in group):
        return None
    return max(v for v in group if v is not None) + max(terms[k] or 0 for k in feature) + 1


def serve_window(
    features: FeaturesConfig, policy: PolicyConfig, u: int, forecaster_kind: str,
    as_of: dt.date, fit_cutoff: dt.date, session_gap_days: int,
    forecast_dates: Mapping[str, Sequence[str]] | None = None, plausibility_days: int = 0,
) -> TrailingWindow:
    """Both spans (module docstring). ``features`` is the config the panel is built with,
    ``policy``, ``u`` (update interval) and ``plausibility_days`` those the served model
    applies."""
    terms: dict[str, int | None] = {
        **policy_lookback_days(policy, u, forecaster_kind, as_of, fit_cutoff, forecast_dates,
                               plausibility_days),
        **feature_lookback_days(features, session_gap_days),
    }
    days = _span(terms, "policy.", [k for k in terms if k.startswith("feature.")])
    tail = _span(terms, "tail.", ["feature.ret_1d", "feature.worst_loss"])
    if days is None:
        return TrailingWindow(None, None, terms)
    return TrailingWindow(days, None if tail is None else max(tail, days), terms)


def bundle_window(bundle: Mapping[str, Any], features: FeaturesConfig, as_of: dt.date,
                  macro: Mapping[str, pd.DataFrame]) -> TrailingWindow:
    """:func:`serve_window` for a policy bundle (:mod:`serving.apply`): the policy section and
    update interval the model applies are its bundled ones, its stored forecasts bound the FHS
    rows; ``features``: the settings the panel is built with (the serve passes the model's,
    :func:`serving.serve.model_features`). A tail-driven bundle
    (``tail``: :mod:`serving.tail_source`) reads the whole history: its tail model's inputs
    (a GARCH filter from the first return, every past loss of a historical simulation) are
    not bounded here."""
    if bundle.get("tail"):
        return TrailingWindow(None, None, {"policy.tail_model": None})
    bundled = Config.model_validate(bundle["config"])
    dates = {a: fc["dates"] for a, fc in bundle.get("forecasts", {}).items()}
    bound = bundled.backtest.plausibility
    return serve_window(features, bundled.policy, bundled.features.update_interval_days,
                        str(bundle["forecaster"].get("kind", "")), as_of,
                        dt.date.fromisoformat(str(bundle["fit_cutoff"])),
                        max_session_gap_days(macro), dates,
                        bound.window_days if bound.enabled else 0)


def trailing_market(market: MarketData, as_of: dt.date, days: int | None) -> MarketData:
    """``market`` with each asset's daily and hourly rows cut to the trailing ``days``.

    The span ends at the as-of, or at the asset's last daily row when that is earlier (a
    stale or delisted asset keeps its last rows, so the serve still sees how old its data is).
    Macro sessions are cut at the first daily row kept (module docstring); DVOL is kept
    whole. ``days`` None returns ``market`` unchanged.
    """
    if days is None:
        return market
    end = pd.Timestamp(as_of)
    daily, hourly = {}, {}
    for asset, frame in market.daily.items():
        last = frame.index.max().normalize() if len(frame) else end
        start = min(end, last) - (days - 1) * _DAY
        daily[asset] = frame.loc[frame.index >= start]
        if asset in market.hourly:
            hours = market.hourly[asset]
            hourly[asset] = hours.loc[hours.index >= start]
    hourly.update({a: f for a, f in market.hourly.items() if a not in daily})
    return replace(market, daily=daily, hourly=hourly, macro=macro_since(market, as_of, days),
                   gaps=market.deferred("gaps"))


# What every serve reads (serving/apply.py, serving/inputs.py): the close (the data's age),
# the return (close-to-close loss, the jump check), rv (the plausibility bound), the dollar
# volume (ADV) and the proxy flag; the covered loss and the forecaster's inputs come on top.
SERVE_BASE_COLUMNS = ("close", "ret_1d", "rv", "log_dollar_volume", PROXY_FLAG)


def _forecaster_columns(state: Mapping[str, Any]) -> set[str] | None:
    """The columns a variance forecaster's state reads (:func:`serve_columns`); None: not
    audited."""
    kind = str(state.get("kind", ""))
    if kind in ROW_WISE_KINDS and "regressors" in state:
        regressors = {str(r) for r in state["regressors"]}
        return regressors | ({"dvol_available"} if "dvol_var_1d" in regressors else set())
    if kind in RETURN_PATH_KINDS:
        return {"ret_1d"}
    if kind == "gbm" and "columns" in state:  # a tree model's state lists its inputs' columns
        return {str(c) for c in state["columns"]}
    return None


def _tail_columns(state: Mapping[str, Any]) -> set[str] | None:
    """The columns a tail model's state reads beyond the covered losses; None: not audited
    (a learnt or regression tail model: ``tail_nn``, ``qr_har``, ``caviar``). Filtered
    historical simulation and EVT read their variance model's inputs, the unfiltered
    historical simulation the losses alone (:mod:`models.tail.classical`)."""
    kind = str(state.get("kind", ""))
    if kind == "hs":
        return set()
    if kind in ("fhs", "evt") and "variance_state" in state:
        return _forecaster_columns(state["variance_state"])
    return None


def serve_columns(bundle: Mapping[str, Any]) -> frozenset[str] | None:
    """The panel columns a serve of ``bundle`` reads; None (every column) for a forecaster
    whose inputs are not audited here (a learnt network: ``harx_mlp``, ``mlp_har``; a
    ``gbm`` state written before it listed its ``columns``;
    a tail-driven bundle's learnt or regression tail model).

    :data:`SERVE_BASE_COLUMNS`; ``worst_loss_long``/``worst_loss_short`` unless the bundled
    ``policy.loss`` is ``close_to_close`` (:func:`serving.inputs.covered_loss`); a row-wise
    forecaster's ``regressors`` (HAR: ``har_rv_{1,7,30}d``, HARX-IV also ``dvol_var_1d`` and the
    ``dvol_available`` flag its mask reads); a return-path one's ``ret_1d``. A tail-driven
    bundle (:mod:`serving.tail_source`) adds its tail model's: the covered losses of both
    sides in its loss variant (:data:`features.losses.LOSS_VARIANTS`) and, for FHS and EVT,
    their variance model's inputs.
    """
    model = _forecaster_columns(bundle["forecaster"])
    if model is None:
        return None
    tail = bundle.get("tail")
    if tail:
        extra = _tail_columns(tail["state"])
        if extra is None:
            return None
        variant = str(tail["state"].get("config", {}).get("loss_variant", "close"))
        model |= extra | {loss_column(side, variant) for side in SIDES}
    policy = Config.model_validate(bundle["config"]).policy
    loss = set() if policy.loss == "close_to_close" else {"worst_loss_long", "worst_loss_short"}
    return frozenset({*SERVE_BASE_COLUMNS, *loss, *model})


def serve_panel(market: MarketData, cfg: FeaturesConfig, as_of: dt.date,
                window: TrailingWindow, columns: Collection[str] | None = None,
                losses: LossDays | None = None) -> tuple[pd.DataFrame, str]:
    """(panel, fingerprint) built in memory over ``window``: every column over ``days``, the
    tail columns over ``tail_days`` (:func:`features.build.build_with_tail`).

    ``columns`` (e.g. :func:`serve_columns`) are those the caller reads: when
    :func:`features.fast.fast_columns` has them all, only they are built, for every asset at
    once (:func:`features.fast.fast_panel`: same index and values, the hourly worst losses of
    the days in ``losses`` read from it, :mod:`features.loss_days`); otherwise (or None)
    every column, asset by asset. The fingerprint hashes the built panel, the feature config and
    code, the as-of and both spans (:func:`features.store.panel_fingerprint`).
    """
    fast = columns is not None and set(columns) <= fast_columns(cfg)
    spans = f"days={window.days}:tail={window.tail_days}"
    if window.days is None or window.tail_days == window.days:
        panel = (fast_panel(market, cfg, as_of, window.days, window.days, columns or (), losses)
                 if fast else build_panel(trailing_market(market, as_of, window.days), cfg))
    else:
        panel = (fast_panel(market, cfg, as_of, window.days, window.tail_days, columns or (),
                            losses)
                 if fast else build_with_tail(trailing_market(market, as_of, window.days),
                                              trailing_market(market, as_of, window.tail_days),
                                              cfg))
    # the lineage of what the serve read: the built panel, not every loaded candle (5 s of
    # hashing at 1,000 assets against ~0.2 s)
    return panel, panel_fingerprint(panel, cfg, as_of, spans)

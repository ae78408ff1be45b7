"""Model selection: an optional forecast-quality screen, then the policy acceptance rule.

1. **Screen** (off by default): at the selection horizon a model must be inside the 90% Model
   Confidence Set on at least ``min_mcs_share`` of the assets and its 1-day FHS VaR99 must pass
   on at least ``min_var_share`` of them. If no model passes, all are kept and the reason says
   so.
2. **Choose**: ``rule="policy"`` (default) freezes the candidate (forecaster × policy
   settings) that is acceptable (:mod:`pipelines.policy_eval.acceptance`) on the most assets
   of the *selection period*, then has the least capital, mean(1 - LTV)
   (:func:`pipelines.policy_eval.protocol.choose`); ``rule="forecast"`` takes the lowest
   mean QLIKE with the configured policy settings.

Whatever reads forecast quality to choose (the screen, ``rule="forecast"``) reads it from
:func:`period_comparison`: the comparison recomputed on the forecasts whose target days all
lie in the selection period, never from the whole out-of-sample table the report shows, which
runs into the evaluation period. With neither on (the default), the whole-period QLIKE is only
quoted in the reason, and labelled so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from configs.schema import SelectionConfig
from pipelines.evaluation.common import common_assets
from pipelines.policy_eval.protocol import choose

if TYPE_CHECKING:
    from models.backtest import Mapper


@dataclass(frozen=True)
class Selection:
    model: str                   # the forecaster
    reason: str
    table: pd.DataFrame          # one row per model: shares, QLIKE, acceptable assets, capital
    policy: str = ""             # the frozen candidate's name
    overrides: dict[str, Any] = field(default_factory=dict)  # frozen policy settings


class NothingToSelectError(RuntimeError):
    """The selection period gave the rule nothing to choose from: nothing can be frozen,
    registered or published (said, not a traceback: ``volmargin run`` exits 1)."""


def reads_forecast_quality(cfg: SelectionConfig) -> bool:
    """Whether the choice reads forecast-quality figures (a screen, or ``rule="forecast"``),
    which must then come from the selection period (:func:`period_comparison`)."""
    return cfg.rule == "forecast" or cfg.min_mcs_share > 0 or cfg.min_var_share > 0


def in_window(forecasts: dict[str, pd.DataFrame], start: dt.date, end: dt.date | None
              ) -> dict[str, pd.DataFrame]:
    """Each model's forecasts whose target days (``cutoff + 1`` … ``cutoff + horizon``) all
    lie in ``[start, end]`` (``end`` None: no upper bound): what was known, and realized, by
    the end of the window. The policy's periods count a loss day ``date + 1`` the same way."""
    lo = pd.Timestamp(start)
    hi = None if end is None else pd.Timestamp(end)
    out = {}
    for model, fc in forecasts.items():
        cutoff = pd.to_datetime(fc["cutoff"])
        keep = cutoff + pd.Timedelta(days=1) >= lo
        if hi is not None:
            keep &= cutoff + pd.to_timedelta(fc["horizon_days"].astype(int), unit="D") <= hi
        out[model] = fc[keep.to_numpy()]
    return out


def period_comparison(forecasts: dict[str, pd.DataFrame], panel: pd.DataFrame,
                      start: dt.date, end: dt.date | None, mapper: Mapper | None = None,
                      chunk_assets: int = 50) -> pd.DataFrame | None:
    """The model comparison (QLIKE, DM, MCS, MZ, VaR backtests) on the forecasts of one period
    (:func:`in_window`), None when no model has a scored forecast there."""
    # imported here: the comparison's statistics (arch, scipy) cost ~3 s to import, and the
    # console imports this module for the rule alone
    from pipelines.evaluation.comparison import comparison
    from pipelines.evaluation.evaluate import loss_table, scored

    window = {m: f for m, f in in_window(forecasts, start, end).items() if len(f)}
    if not window:
        return None
    scores = scored(window, panel)
    if scores.empty:
        return None
    # the VaR backtest counts the period's days on the whole forecast path, each day's FHS
    # quantile built from the losses realized before it (pipelines.evaluation.comparison.
    # var_table); the scores above are the period's alone
    return comparison(scores, loss_table(scores), {m: forecasts[m] for m in window}, panel,
                      mapper=mapper, chunk_assets=chunk_assets,
                      var_window=(pd.Timestamp(start),
                                  None if end is None else pd.Timestamp(end)))


def _qlike_over_common_assets(per: pd.DataFrame, comparison: pd.DataFrame, horizon: int,
                              pool: list[str]) -> int:
    """Each model's QLIKE at ``horizon`` over the assets every model of ``pool`` scored (into
    ``per``: ``qlike``, ``qlike_assets``); returns how many those are (0: none in common, each
    model's own assets then). A model that failed an asset (often the hardest) would otherwise
    be averaged over fewer, easier ones and ranked first by rule="forecast" for it; the pool's
    (the models the screen kept): a model screened out does not narrow the comparison of the
    others."""
    at_h = comparison[(comparison["horizon_days"] == horizon) & comparison["qlike"].notna()]
    common = common_assets(at_h, pool).get(horizon, set())
    kept = at_h[at_h["asset"].isin(common)] if common else at_h
    per["qlike"] = kept.groupby("model")["qlike"].mean()
    per["qlike_assets"] = kept.groupby("model")["asset"].nunique()
    per["qlike_assets"] = per["qlike_assets"].fillna(0).astype(int)
    return len(common)


def _screen(comparison: pd.DataFrame, cfg: SelectionConfig) -> pd.DataFrame:
    at_h = comparison[comparison["horizon_days"] == cfg.horizon]
    if at_h.empty:
        raise ValueError(f"no forecasts at the selection horizon {cfg.horizon} to select from")
    one_day = comparison[comparison["horizon_days"] == 1]
    per = at_h.groupby("model").agg(mcs_share=("in_mcs", lambda x: x.fillna(False).mean()))
    # over the assets with a verdict: one passing its VaR test on fewer days than a verdict
    # needs (var_unproven, a young asset) counts neither way; an undefined test counts as a fail
    judged = (one_day[~one_day["var_unproven"].fillna(False).astype(bool)]
              if "var_unproven" in one_day else one_day)
    per["var_share"] = judged.groupby("model")["var_pass"].apply(
        lambda x: x.fillna(False).astype(bool).mean())
    # a share with no verdict behind it (every asset unproven) is 0: it passes no screen
    # above 0, and with the screens off (0) every model stays in the pool, whatever the
    # table says (with them off the table is the whole period's, which is never read to choose)
    per["screened"] = (per["mcs_share"].fillna(0.0) >= cfg.min_mcs_share) & (
        per["var_share"].fillna(0.0) >= cfg.min_var_share)
    return per


def select(comparison: pd.DataFrame, selection_table: pd.DataFrame | None,
           settings: Mapping[str, Mapping[str, Any]] | None, cfg: SelectionConfig,
           default_names: Mapping[str, str] | None = None,
           screened_on: pd.DataFrame | None = None) -> Selection:
    """Pick the forecaster and the policy settings.

    ``comparison`` is the whole out-of-sample comparison (quoted in the reason only);
    ``screened_on`` the selection period's (:func:`period_comparison`), which the screen and
    ``rule="forecast"`` read when :func:`reads_forecast_quality` (None there: no model has a
    forecast scored in the selection period, so none is screened out and
    ``rule="forecast"`` cannot choose). ``selection_table`` is the selection-period acceptance
    table (policy × asset, from :func:`pipelines.policy_eval.protocol.judge`), ``settings``
    maps each candidate name to its forecaster and settings, ``default_names`` each forecaster
    to the name of its candidate with the configured settings (used by ``rule="forecast"``).
    """
    quality = reads_forecast_quality(cfg)
    if quality and screened_on is None and cfg.rule == "forecast":
        raise NothingToSelectError(
            "selection.rule=forecast: no forecast is scored in the selection period "
            "(evaluation.selection_start/selection_end), so there is no QLIKE to choose by")
    per = _screen(screened_on if quality and screened_on is not None else comparison, cfg)
    notes = []
    pool = list(per.index[per["screened"]])
    if quality and screened_on is None:
        pool = list(per.index)
        notes.append("no forecast scored in the selection period: nothing screened")
    elif not pool:
        pool = list(per.index)
        notes.append("no model passed the MCS/VaR screen; all considered")
    elif cfg.min_mcs_share > 0 or cfg.min_var_share > 0:
        notes.append("forecast screen on the selection period's forecasts")
    common = _qlike_over_common_assets(
        per, screened_on if quality and screened_on is not None else comparison, cfg.horizon,
        pool)
    settings = dict(settings or {})
    if cfg.rule == "policy" and selection_table is not None and len(selection_table):
        mine = {n: s for n, s in settings.items() if s["forecaster"] in pool}
        # counted over every candidate's assets, as the knob step is (a screened-out
        # forecaster's assets are still assets the policy must serve)
        frozen = choose(selection_table, mine, set(selection_table["asset"]))
        stats = frozen.table.assign(model=frozen.table["policy"].map(
            {n: s["forecaster"] for n, s in mine.items()}))
        # the frozen table is in the choice's order (like for like): each model's first row
        best = stats.groupby("model", sort=False).head(1).set_index("model")
        per = per.join(best[["policy", "acceptable", "assets", "capital"]])
        notes.insert(0, frozen.reason)
        model, name, overrides = frozen.forecaster, frozen.name, frozen.overrides
    elif cfg.rule == "policy":  # never the whole period's QLIKE in place of the protocol
        raise NothingToSelectError(
            "selection.rule=policy: no candidate was judged on the selection period "
            "(evaluation.selection_start/selection_end): no forecast of any candidate falls "
            "in it (e.g. a universe whose history starts too late for it: a first forecast "
            "needs backtest.min_train_days of history); move the selection period, or give "
            "the assets' older data")
    else:
        model = str(per.loc[pool, "qlike"].idxmin())
        name = dict(default_names or {}).get(model, f"policy:{model}")
        overrides = {k: v for k, v in settings.get(name, {}).items() if k != "forecaster"}
    where = ("selection period" if quality and screened_on is not None
             else "whole out-of-sample period")
    whose = "every model" if len(pool) == len(per) else "every model the screen kept"
    over = (f"the {common} assets {whose} scored" if common
            else "each model's own assets, none common to all")
    notes.append(f"QLIKE h={cfg.horizon} ({where}, over {over}): " + ", ".join(
        f"{m}={v:.4f}" for m, v in per["qlike"].sort_values().items()))
    reason = f"{model} selected (rule={cfg.rule}): " + "; ".join(notes)
    return Selection(model, reason, per.reset_index(), name, overrides)

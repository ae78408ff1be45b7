"""Comparing tail forecasters: FZ0 scores, DM and MCS on FZ0, VaR and ES backtests.

Protocol (``evaluation`` section of the config): every tail model is walked forward over the
selection and the evaluation periods with the same refits; the **best classical model** is
chosen by pooled FZ0 at 99 % on the selection period only (by code,
:func:`best_classical`), and every figure reported comes from the evaluation period.

Pooling: the FZ0 of a (model, side, level) is averaged over assets per day first, and DM and
the MCS run on that daily series (assets move together: treating asset-days as independent
would overstate significance).

Entry point: :func:`run_tail_backtest`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from configs.schema import Config
from models.tail.backtest import tail_walk_forward
from models.tail.base import LOSS_VARIANTS, SIDES, to_fraction
from models.tail.registry import build_tail_forecaster
from pipelines.evaluation.coverage import christoffersen_independence
from pipelines.evaluation.stats import diebold_mariano, model_confidence_set
from pipelines.evaluation.tail_tests import (
    acerbi_szekely_z2,
    dq_test,
    fz0_loss,
    kupiec_one_sided,
    mcneil_frey,
)

CLASSICAL = ("fhs_ewma", "fhs_garch", "evt_garch", "qr_har", "caviar")
LEARNED = ("tail_nn",)
HEADLINE_LEVEL = 0.99
TEST_SIZE = 0.05


def realized(panel: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Long frame ``asset, cutoff, side, loss, is_proxy`` of the realized covered loss."""
    blocks = []
    for side in SIDES:
        col = "target_" + LOSS_VARIANTS[variant].format(side=side)
        frame = pd.DataFrame({
            "asset": panel.index.get_level_values("asset"),
            "cutoff": panel.index.get_level_values("date"), "side": side,
            "loss": to_fraction(panel[col].to_numpy(dtype=float), side),
            "is_proxy": panel["target_worst_loss_is_proxy"].eq(True).fillna(False).to_numpy(),
        })
        blocks.append(frame)
    return pd.concat(blocks, ignore_index=True)


def score(forecasts: pd.DataFrame, panel: pd.DataFrame, variant: str = "close") -> pd.DataFrame:
    """Forecast rows (with a ``model`` column) joined to their loss, with ``fz0`` and ``hit``."""
    out = forecasts.merge(realized(panel, variant), on=["asset", "cutoff", "side"], how="left")
    out = out[np.isfinite(out["loss"])].copy()
    fz = np.full(len(out), np.nan)
    for level, rows in out.groupby("level").groups.items():
        r = out.loc[rows]
        fz[out.index.get_indexer(rows)] = fz0_loss(r["loss"], r["var"], r["es"], float(level))
    out["fz0"], out["hit"] = fz, out["loss"] > out["var"]
    return out.reset_index(drop=True)


def period(scores: pd.DataFrame, start: object, end: object | None) -> pd.DataFrame:
    """Rows with cutoff in ``[start, end]`` (``end`` None: to the last cutoff)."""
    c = scores["cutoff"]
    stop = c.max() if end is None else pd.Timestamp(end)
    return scores[(c >= pd.Timestamp(start)) & (c <= stop)]


def daily_fz0(scores: pd.DataFrame, side: str, level: float) -> pd.DataFrame:
    """(date × model) FZ0 averaged over the assets every model forecast that day."""
    s = scores[(scores["side"] == side) & np.isclose(scores["level"], level)]
    wide = s.pivot_table(index=["cutoff", "asset"], columns="model", values="fz0").dropna()
    return wide.groupby(level="cutoff").mean()


def fz0_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Pooled mean FZ0 per model, side and level (rows every model has), lower is better."""
    rows = []
    for (side, level), _ in scores.groupby(["side", "level"]):
        daily = daily_fz0(scores, str(side), float(level))
        for model in daily.columns:
            rows.append({"side": side, "level": level, "model": model,
                         "fz0": float(daily[model].mean()), "days": len(daily)})
    return pd.DataFrame(rows)


def best_classical(selection_scores: pd.DataFrame, side: str = "long") -> str:
    """The classical model with the lowest pooled FZ0 at 99 % on the selection period."""
    t = fz0_table(selection_scores)
    t = t[(t["side"] == side) & np.isclose(t["level"], HEADLINE_LEVEL)
          & t["model"].isin(CLASSICAL)]
    return str(t.sort_values("fz0")["model"].iloc[0])


def dm_table(scores: pd.DataFrame, benchmarks: list[str], side: str = "long",
             level: float = HEADLINE_LEVEL) -> pd.DataFrame:
    """DM (HLN) of each model against each benchmark on the daily pooled FZ0; one-sided p."""
    daily = daily_fz0(scores, side, level)
    rows = []
    for bench in benchmarks:
        for model in daily.columns:
            if model == bench:
                continue
            r = diebold_mariano(daily[model], daily[bench], horizon=1)
            rows.append({"model": model, "benchmark": bench, "mean_diff": r.mean_diff,
                         "dm": r.statistic, "p_better": r.p_value_a_better,
                         "p_two_sided": r.p_value, "days": r.n})
    return pd.DataFrame(rows)


def mcs_frame(scores: pd.DataFrame, side: str = "long", level: float = HEADLINE_LEVEL,
              size: float = 0.10, reps: int = 1000) -> pd.DataFrame:
    """Hansen-Lunde-Nason MCS on the daily pooled FZ0 (seeded stationary bootstrap)."""
    return model_confidence_set(daily_fz0(scores, side, level), size=size, reps=reps).to_frame()


def backtest_table(scores: pd.DataFrame, level: float = HEADLINE_LEVEL, dq_lags: int = 4
                   ) -> pd.DataFrame:
    """Per model, side and asset: breaches, one-sided Kupiec, independence, DQ, ES tests.

    ``passes`` = one-sided coverage and Christoffersen independence both not rejected at 5 %.
    """
    rows = []
    s = scores[np.isclose(scores["level"], level)].sort_values("cutoff")
    for (model, side, asset), g in s.groupby(["model", "side", "asset"]):
        loss, var, es = (g[c].to_numpy(float) for c in ("loss", "var", "es"))
        cov = kupiec_one_sided(loss, var, level)
        ind = christoffersen_independence(loss > var)
        dq = dq_test(loss, var, level, lags=dq_lags)
        rows.append({
            "model": model, "side": side, "asset": asset, "n": cov.n,
            "hourly": bool((~g["is_proxy"]).mean() > 0.5), "breaches": cov.breaches,
            "expected": cov.expected, "p_coverage": cov.p_value, "p_independence": ind.p_value,
            "p_dq": dq.p_value, "p_mcneil_frey": mcneil_frey(loss, var, es).p_value,
            "p_z2": acerbi_szekely_z2(loss, var, es, level).p_value,
            "passes": bool(cov.p_value >= TEST_SIZE and ind.p_value >= TEST_SIZE),
        })
    return pd.DataFrame(rows)


def walk_forward_all(panel: pd.DataFrame, cfg: Config,
                     progress: Callable[[str, int, int], None] | None = None
                     ) -> pd.DataFrame:
    """Tail forecasts of every ``tail.enabled`` model over selection + evaluation periods."""
    t, ev, u = cfg.tail, cfg.evaluation, cfg.features.update_interval_days
    blocks = []
    for alias in t.enabled:
        hook = None if progress is None else (lambda k, n, a=alias: progress(a, k, n))
        fc = tail_walk_forward(lambda a=alias: build_tail_forecaster(a, t, u), panel,
                               ev.selection_start, ev.evaluation_end, t.refit_every,
                               t.levels, t.min_train_days, hook)
        fc.insert(0, "model", alias)
        blocks.append(fc)
    return pd.concat(blocks, ignore_index=True)


def select_scale_model(panel: pd.DataFrame, cfg: Config,
                       candidates: tuple[str, ...] = ("fhs_ewma", "evt_garch")
                       ) -> tuple[str, pd.DataFrame]:
    """``tail_nn.scale_model`` with the lowest pooled FZ0 at 99 % (long) on the selection period.

    Each candidate is walked forward from ``selection_start`` to ``selection_end`` only, so
    the evaluation period is never read (its rows are not even in the panel handed over).
    """
    ev, u = cfg.evaluation, cfg.features.update_interval_days
    upto = panel[panel.index.get_level_values("date") <= pd.Timestamp(ev.selection_end)]
    rows = []
    for name in candidates:
        tail = cfg.tail.model_copy(update={"tail_nn": cfg.tail.tail_nn.model_copy(
            update={"scale_model": name})})
        fc = tail_walk_forward(lambda t=tail: build_tail_forecaster("tail_nn", t, u), upto,
                               ev.selection_start, ev.selection_end, tail.refit_every,
                               tail.levels, tail.min_train_days)
        fc.insert(0, "model", "tail_nn")
        s = score(fc, upto, cfg.tail.tail_nn.loss_variant)
        daily = daily_fz0(s, "long", HEADLINE_LEVEL)
        rows.append({"scale_model": name, "fz0": float(daily["tail_nn"].mean()),
                     "days": len(daily)})
    table = pd.DataFrame(rows)
    return str(table.sort_values("fz0")["scale_model"].iloc[0]), table


def score_tables(forecasts: pd.DataFrame, panel: pd.DataFrame, cfg: Config
                 ) -> dict[str, pd.DataFrame]:
    """Every table of :func:`run_tail_backtest` from walk-forward ``forecasts``."""
    ev = cfg.evaluation
    models = list(forecasts["model"].unique())
    variants = {getattr(cfg.tail, a).loss_variant for a in models}
    if len(variants) != 1:
        raise ValueError(f"tail models must score one loss variant, got {variants}")
    scores = score(forecasts, panel, variants.pop())
    sel = period(scores, ev.selection_start, ev.selection_end)
    evl = period(scores, ev.evaluation_start, ev.evaluation_end)
    best = best_classical(sel)
    benchmarks = [b for b in dict.fromkeys([best, "fhs_garch", "fhs_ewma"]) if b in models]
    return {
        "fz0_selection": fz0_table(sel), "fz0_evaluation": fz0_table(evl),
        "dm": dm_table(evl, benchmarks), "mcs": mcs_frame(evl).reset_index(),
        "backtests": backtest_table(evl, dq_lags=ev.dq_lags),
        "choice": pd.DataFrame({"best_classical": [best]}),
    }


def run_tail_backtest(panel: pd.DataFrame, cfg: Config,
                      progress: Callable[[str, int, int], None] | None = None
                      ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Walk forward every enabled tail model and score it (module docstring).

    Returns the forecasts (``model`` + :data:`models.tail.base.TAIL_COLUMNS` +
    ``fitted_through``) and the tables: ``fz0_selection``, ``fz0_evaluation`` (pooled FZ0
    per model, side and level), ``dm`` (evaluation, each model against the best classical
    model of the selection period and the two FHS), ``mcs`` (evaluation), ``backtests``
    (evaluation, per model/side/asset at 99 %) and ``choice`` (the best classical model).
    """
    forecasts = walk_forward_all(panel, cfg, progress)
    return forecasts, score_tables(forecasts, panel, cfg)

"""Markdown tables of the last run's results (``volmargin report``), read from ``outputs/``.

The README's result tables are this command's output, so every figure there can be
reproduced with ``make run && .venv/bin/volmargin report``.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipelines.evaluation.common import common_assets
from pipelines.evaluation.coverage import MIN_VERDICT_DAYS
from pipelines.policy_eval.frontier import knob_family
from pipelines.policy_eval.protocol import assets_without
from pipelines.report_extra import (
    EmptyTableError,
    as_safe_markdown,
    by_year_section,
    capital_section,
    guarded,
    missing_line,
    read_table,
    stability_section,
    stress_section,
    tail_section,
)

HOURLY = ("BTC", "ETH")  # assets whose realized proxy is intraday RV


def _fmt(frame: pd.DataFrame, digits: int = 4, empty: str = "no rows") -> str:
    """A Markdown table, or a line saying why there is none (a header alone reads as a bug)."""
    if frame.empty:
        return f"_None: {empty}._"
    return frame.round(digits).to_markdown(index=False)


def forecast_tables(comparison: pd.DataFrame) -> str:
    """QLIKE by model (all assets, BTC/ETH, the rest) and the DM/MCS/VaR summary, each
    horizon's over the assets every model listed scored there (:func:`common_assets`;
    ``assets h=H``), so that the models' means are comparable, and the line naming what was
    left out (:func:`left_out_note`)."""
    c = comparison.copy()
    c["group"] = c["asset"].isin(HOURLY).map({True: "BTC/ETH", False: "other assets"})
    scored = c[c["qlike"].notna()]
    common = common_assets(c)
    kept = scored[pd.Series([a in common.get(h, set()) for a, h in zip(
        scored["asset"], scored["horizon_days"], strict=True)], index=scored.index, dtype=bool)]
    models, horizons = sorted(c["model"].unique()), sorted(c["horizon_days"].unique())
    # a model with no scored asset stays, listed with its failure (left_out_note)
    wide = kept.groupby(["model", "horizon_days"])["qlike"].mean().unstack().reindex(
        index=models, columns=horizons)
    wide.columns = [f"QLIKE h={h}" for h in wide.columns]
    shown = sorted(set(zip(scored["group"], scored["horizon_days"], strict=True)))  # as before
    groups = kept.groupby(["model", "group", "horizon_days"])["qlike"].mean().unstack(
        ["group", "horizon_days"]).reindex(index=models, columns=pd.MultiIndex.from_tuples(
            shown, names=["group", "horizon_days"]))
    groups.columns = [f"{g} h={h}" for g, h in groups.columns]
    one = kept[kept["horizon_days"] == 1].groupby("model").agg(
        in_mcs_h1=("in_mcs", "mean"),
        dm_better_p05=("dm_p_better", lambda x: int((x < 0.05).sum())),
        dm_worse_p05=("dm_p_better", lambda x: int((x > 0.95).sum())),
        var99_pass=("var_pass", lambda x: int(x.fillna(False).astype(bool).sum())))
    counts = (kept.groupby(["model", "horizon_days"])["asset"].nunique().unstack()
              .reindex(index=models, columns=horizons).fillna(0).astype(int))
    counts.columns = [f"assets h={h}" for h in counts.columns]
    table = wide.join(groups).join(one).join(counts).sort_values(wide.columns[0]).reset_index()
    return _fmt(table) + left_out_note(c, common)


MOST_LEFT_OUT = 12  # assets left out named under a forecast table (all in comparison.csv)


def _reasons(comparison: pd.DataFrame) -> dict[tuple[str, str, int], str]:
    """Per (model, asset, horizon) row without a QLIKE: its ``failure``, or ``no score``."""
    rows = comparison[comparison["qlike"].isna()]
    failure = (rows["failure"] if "failure" in rows else pd.Series("", index=rows.index)
               ).fillna("").astype(str).str.strip()
    return {(m, a, int(h)): f"failed: {f}" if f else "no score" for m, a, h, f in zip(
        rows["model"], rows["asset"], rows["horizon_days"], failure, strict=True)}


def _by_horizon(whys: dict[int, str]) -> str:
    """``reason`` where every horizon has the same, else ``h=1 reason; h=7 reason``."""
    if len(set(whys.values())) == 1:
        return next(iter(whys.values()))
    return "; ".join(f"h={h} {why}" for h, why in sorted(whys.items()))


def left_out_note(comparison: pd.DataFrame, common: dict[int, set[str]]) -> str:
    """The line under a forecast table naming what its means leave out: the assets some model
    did not score (so every model's means leave them out), with the models that did not and
    why (their ``failure``), and the models that scored no asset; '' where nothing was."""
    scored = comparison[comparison["qlike"].notna()]
    horizons = sorted(int(h) for h in comparison["horizon_days"].unique())
    models = sorted(comparison["model"].unique())
    scoring = {h: set(scored.loc[scored["horizon_days"] == h, "model"]) for h in horizons}
    done = set(zip(scored["model"], scored["asset"], scored["horizon_days"], strict=True))
    reasons = _reasons(comparison)

    def why(model: str, asset: str, h: int) -> str:
        return reasons.get((model, asset, h), "no row")

    # asset -> model -> horizon -> why, for the assets some scoring model did not score
    gaps: dict[str, dict[str, dict[int, str]]] = {}
    for h in horizons:
        present = set(comparison.loc[comparison["horizon_days"] == h, "asset"])
        for asset in sorted(present - common.get(h, set())):
            for model in sorted(scoring[h]):
                if (model, asset, h) not in done:
                    gaps.setdefault(asset, {}).setdefault(model, {})[h] = why(model, asset, h)
    silent = {m: [h for h in horizons if m not in scoring[h]] for m in models}
    silent = {m: hs for m, hs in silent.items() if hs}
    if not gaps and not silent:
        return ""
    parts = []
    for asset, by_model in list(gaps.items())[:MOST_LEFT_OUT]:
        hs = sorted({h for whys in by_model.values() for h in whys})
        parts.append(f"{asset} at {', '.join(f'h={h}' for h in hs)} (not scored by "
                     + "; ".join(f"`{m}`: {_by_horizon(whys)}" for m, whys in by_model.items())
                     + ")")
    if len(gaps) > MOST_LEFT_OUT:
        parts.append(f"{len(gaps) - MOST_LEFT_OUT} more assets (`backtest/comparison.csv`)")
    text = ("\n\nMeans and counts are over the assets every model listed scored at that horizon "
            "(`assets h=H`; `in_mcs_h1`, the DM and VaR counts: those of h=1), so that models "
            "are compared on the same assets.")
    if parts:
        text += " Left out of every model's means: " + "; ".join(parts) + "."
    for model, hs in silent.items():
        whys: dict[str, list[str]] = {}  # reason -> assets
        for h in hs:
            rows = comparison[(comparison["model"] == model) & (comparison["horizon_days"] == h)]
            for asset in sorted(set(rows["asset"])):
                where = whys.setdefault(why(model, asset, h), [])
                if asset not in where:
                    where.append(asset)
        listed = "; ".join(f"{why} ({shortened(','.join(where), MOST_LEFT_OUT)})"
                           for why, where in whys.items()) or "no row"
        text += (f" `{model}` scored no asset at {', '.join(f'h={h}' for h in hs)}, listed "
                 f"without means there: {listed}.")
    return text


def evaluation_forecasts(bt: Path) -> str:
    """The forecast comparison of the evaluation period, then the heading of the whole
    out-of-sample period's (``''`` where the run wrote no evaluation-period table)."""
    path = bt / "comparison_evaluation.csv"
    if not path.is_file():
        return ""
    return ("### Evaluation period (settings frozen before it)\n\n"
            + guarded(bt, [path.name], "backtest", lambda: forecast_tables(read_table(path)))
            + "\n\n### Whole out-of-sample period\n\nFrom `backtest.oos_start` on. It runs "
            "through the selection period, on which some forecasters' settings were chosen "
            "(`harx_mlp`'s DVOL and weekday terms, `gbm_sklearn`'s asset one-hot), so it "
            "flatters those there; the evaluation period above is the headline.\n\n")


def forecast_section(bt: Path) -> str:
    """The forecast comparison (evaluation period, whole period, per asset), or the line
    saying the backtest step did not write it."""
    def whole() -> str:
        comparison = read_table(bt / "comparison.csv")
        return (forecast_tables(comparison) + "\n\n### QLIKE per asset, h=1\n\n"
                + per_asset_qlike(comparison, 1))
    return evaluation_forecasts(bt) + guarded(bt, ["comparison.csv"], "backtest", whole)


def per_asset_qlike(comparison: pd.DataFrame, horizon: int) -> str:
    c = comparison[comparison["horizon_days"] == horizon]
    models = sorted(c["model"].unique())  # a model that failed everywhere: its column empty
    return _fmt(c.pivot_table(index="asset", columns="model", values="qlike").reindex(
        columns=models).reset_index())


POLICY_FILES = ("frozen.json", "policy_headline.csv", "policy_summary.csv",
                "policy_frontier.csv", "stress_episodes.csv", "policy_joint_breaches.csv")


def policy_tables(bt: Path) -> str:
    """The policy evaluation: frozen settings, headline (evaluation beside selection), the
    frozen policy per asset, BTC/ETH against Aave v3, the frontier, stress episodes and the
    days on which several assets breached together. Each part is guarded on its own files:
    a line says which are missing (the policy step did not complete) in its place, one line
    for the whole where none is there."""
    if not any((bt / f).is_file() for f in POLICY_FILES):
        return missing_line(bt, POLICY_FILES, "policy")

    def frozen() -> dict:
        return json.loads((bt / "frozen.json").read_text())

    def part(files: tuple[str, ...], build: Callable[[], str]) -> str:
        return guarded(bt, ("frozen.json", *files), "policy", build)

    name = f" (`{frozen()['policy']}`)" if (bt / "frozen.json").is_file() else ""
    return ("### Protocol\n\n" + part((), lambda: protocol(bt, frozen()))
            + "\n\n### Policies, evaluation period beside selection period\n\n"
            + guarded(bt, ["policy_headline.csv"], "policy",
                      lambda: _fmt(read_table(bt / "policy_headline.csv")))
            + f"\n\n### Frozen policy{name} per asset, evaluation period\n\n"
            + part(("policy_summary.csv",),
                   lambda: _fmt(frozen_per_asset(read_table(bt / "policy_summary.csv"),
                                                 frozen()["policy"])))
            + "\n\n### BTC and ETH against Aave v3, evaluation period (LB held at 1.05)\n\n"
            + part(("policy_frontier.csv",),
                   lambda: _fmt(aave_points(read_table(bt / "policy_frontier.csv"), frozen()),
                                empty="no BTC or ETH among the assets, nothing to compare "
                                "with Aave v3"))
            + "\n\n### Capital vs bad debt, pooled over assets, evaluation period\n\n"
            + guarded(bt, ["policy_frontier.csv"], "policy",
                      lambda: _fmt(pooled_points(read_table(bt / "policy_frontier.csv"))))
            + as_safe_section(bt)
            + "\n\n### Stress episodes: assets breached and bad debt summed over assets\n\n"
              "`aave_v3` applies Aave v3's parameters of its 2023-01-27 launch on every "
              "episode: on those before the launch a hypothetical (the market did not exist, and "
              "parameters set in 2023 are hindsight for 2021-2022; the budgets use the static "
              "table's there).\n\n"
            + part(("stress_episodes.csv",),
                   lambda: _fmt(stress_summary(read_table(bt / "stress_episodes.csv"),
                                               [frozen()["policy"], "static", "aave_v3"])))
            + "\n\n### Days on which several assets breached together (frozen policy, "
              "whole period)\n\n"
            + guarded(bt, ["policy_joint_breaches.csv"], "policy",
                      lambda: _fmt(read_table(bt / "policy_joint_breaches.csv").fillna(
                          {"episode": ""}), empty="no day with that many breaches"))
            + stress_days_section(bt))


def protocol(bt: Path, frozen: dict) -> str:
    """The protocol paragraph (``frozen.json``; the assets the frozen policy does not serve
    from ``policy_summary.csv`` where it is there)."""
    name = frozen["policy"]
    try:
        unserved = (unserved_note(read_table(bt / "policy_summary.csv"), name)
                    if (bt / "policy_summary.csv").is_file() else "")
    except EmptyTableError:
        unserved = ""  # the per-asset part says so
    sel, ev = frozen["selection_period"], frozen["evaluation_period"]
    settings = frozen["settings"] or "as configured"
    return (f"Frozen on the selection period {sel[0]} → {sel[1]}: **`{name}`** "
            f"(forecaster `{frozen['forecaster']}`, settings {settings}; chosen among "
            f"{len(frozen['candidates'])} candidates{_knob_note(frozen)}). Figures below are from "
            f"the evaluation period {ev[0]} → {ev[1]} (`_eva`), selection period beside "
            "(`_sel`). `acceptable`: assets passing the one acceptance function (breaches ≤ "
            "one-sided Kupiec upper band at 99% (exact binomial), Christoffersen independence "
            "and DQ not rejecting at 5%, stress bad debt within budget, on at least "
            f"{MIN_VERDICT_DAYS} days: fewer, or no budget for the asset, and "
            "passing is unproven); capital = mean(1 − LTV); bad "
            "debt = Σ (x − cushion)/LB for a position at LT; `short_breaches`: days on "
            "which the short side's worst loss over the delay (a perp short's) exceeded MMF, "
            "and `short_bad_debt_sum` its loss beyond MMF per unit of notional, Σ (y − MMF), "
            "reported, not judged (the acceptance is a lender's, on the long side)."
            + unserved + later_failure_note(frozen)
            + stability_note(frozen) + preferred_note(frozen))


def frozen_per_asset(summary: pd.DataFrame, name: str) -> pd.DataFrame:
    """The frozen policy's rows of ``policy_summary.csv``, the report's columns."""
    return summary[summary["policy"] == name][[c for c in [
        "asset", "n", "breaches", "short_breaches", "short_bad_debt_sum", "breach_upper",
        "band_low",
        "under_coverage",
        "over_coverage", "independence_p", "dq_p", "stress_bad_debt", "stress_budget",
        "capital", "mean_mmf", "mean_lt", "bad_debt_lt_sum", "bad_debt_ltv_sum", "acceptable",
        "why_not"] if c in summary.columns]].fillna({"why_not": ""})


def aave_points(frontier: pd.DataFrame, frozen: dict) -> pd.DataFrame:
    """BTC and ETH's evaluation-period frontier points of the frozen policy, Aave v3 and the
    static table at the frozen confidence."""
    knob = frozen["settings"].get("policy.confidence")
    pts = frontier[(frontier["period"] == "evaluation") & frontier["asset"].isin(HOURLY)]
    fam = _frozen_points(pts, frozen)
    aave = pts[fam | pts["family"].isin(["aave_v3"]) | ((pts["family"] == "static") & (
        pts["knob"].round(6) == round(float(knob or 0.975), 6)))][[
            "asset", "family", "knob", "capital", "bad_debt", "stress_bad_debt", "breaches"]]
    return aave.sort_values(["asset", "family"])


def pooled_points(frontier: pd.DataFrame) -> pd.DataFrame:
    """The evaluation-period frontier pooled over assets."""
    pooled = frontier[(frontier["period"] == "evaluation") & (frontier["asset"] == "pooled")]
    return pooled[["family", "knob", "capital", "bad_debt", "stress_bad_debt", "breaches",
                   "frontier_bad_debt", "frontier_stress_bad_debt"]]


def stress_days_section(bt: Path) -> str:
    """The market-wide stress days found by rule (``policy_stress_days.csv``), each with the
    configured episode that lists it; '' where the run did not write it (rule disabled)."""
    path = bt / "policy_stress_days.csv"
    if not path.is_file():
        return ""
    try:
        days = pd.read_csv(path)
    except pd.errors.EmptyDataError:  # the rule was disabled: a table without columns
        return ""
    days = days.fillna({"episode": ""})
    unlisted = days[days["episode"] == ""]
    if "beyond_assets" in days:  # the names in full stay in the CSV; a large universe's
        days["beyond_assets"] = days["beyond_assets"].fillna("").map(  # would fill the page
            lambda names: shortened(names, MOST_NAMED))
    return ("\n\n### Market-wide stress days found by rule (selection and evaluation periods)"
            "\n\nLoss days on which at least `min_share` of the assets judged that day (and "
            "at least `co_breach_min_assets`) lost more than their own trailing quantile of "
            "covered losses (`evaluation.stress_days`: the quantile over the previous "
            "`window_days`, ending the day before), found in the data rather than listed. "
            "`episode`: the configured episode that lists the day; empty: none does, so the "
            "stress budget does not judge it (the run warns for such a day of the evaluation "
            "period). `beyond` of `assets` past their threshold; `<policy>_breached` / "
            "`_bad_debt`: assets breached and bad debt at LT summed over assets that day, for "
            f"the frozen policy, EWMA-FHS and the static table. {len(days)} days, "
            f"{len(unlisted)} not listed.\n\n"
            + _fmt(days, empty="no day of either period met the rule"))


MOST_NAMED = 12  # asset names listed per stress day in the report (all in the CSV)


def shortened(names: str, most: int) -> str:
    """A comma-joined list cut to its first ``most`` names and how many more there are."""
    parts = [p for p in str(names).split(",") if p]
    if len(parts) <= most:
        return ",".join(parts)
    return ",".join(parts[:most]) + f" (+{len(parts) - most} more)"


AS_SAFE_COLUMNS = ["measure", "period", "family", "knob", "capital", "bad_debt", "as_safe",
                   "acceptable", "policy_capital", "policy_bad_debt", "policy_acceptable",
                   "capital_vs", "pooled_assets"]


def as_safe_section(bt: Path) -> str:
    """The comparators' cheapest levels as safe as the frozen policy, both periods
    (``policy_as_safe.csv``); '' where the run did not write it."""
    table = as_safe_markdown(bt / "policy_as_safe.csv", ["measure", "period", "family"],
                             AS_SAFE_COLUMNS)  # the evaluation period first
    if not table:
        return ""
    return ("\n\n### Capital at equal-or-better bad debt (pooled, LB 1.05)\n\n"
            "For each comparator, the cheapest level of its sweep (the grid and "
            "`evaluation.comparator_levels`, replayed for this comparison only) with no more "
            "bad debt (`bad_debt`: all days; `stress_bad_debt`: the stress episodes) than the "
            "frozen policy; `capital_vs`: the policy's capital relative to it (negative: the "
            "policy needs less). `as_safe` False: no level of the sweep is as safe; the row is "
            "then its safest level, which the policy beats on bad debt. `acceptable` / "
            "`policy_acceptable`: assets on which that level / the frozen policy passes the "
            "acceptance function in that period; `pooled_assets`: the assets both cover, "
            "over which both are pooled.\n\n" + table)


def stability_note(frozen: dict) -> str:
    """How often the first step's choice survives leaving one asset out of the selection
    period (``frozen.json``), '' where the record has none."""
    loo = frozen.get("leave_one_asset_out") or {}
    if not loo:
        return ""
    others = ", ".join(f"`{k}` {v}" for k, v in loo["others"].items())
    runs = loo["runs"] + loo.get("not_run", 0)
    drawn = (f" ({runs} of {loo['assets']} assets left out in turn)"
             if loo.get("assets", runs) > runs else "")
    failed = (f"; {loo['not_run']} could not choose" if loo.get("not_run") else "")
    return (f" Leave one asset out (the first step, selection period only{drawn}): "
            f"`{loo['first_step']}` is chosen in {loo['kept']} of {loo['runs']} runs"
            + (f"; otherwise {others}" if others else "") + failed + ".")


def preferred_note(frozen: dict) -> str:
    """The comparators the choice's rule ranks above the frozen policy on the selection
    period (``frozen.json``), '' where there are none."""
    ahead = frozen.get("comparators_the_rule_prefers") or []
    if not ahead:
        return ""
    listed = "; ".join(f"`{c['policy']}` ({c['acceptable']}/{c['assets']}, capital "
                       f"{c['capital']:.4f})" for c in ahead)
    return (" **The rule prefers a comparator**: on the selection period it ranks " + listed
            + " above the frozen policy; comparators are not candidates, so it was not "
            "frozen (README, Known limitations).")


def later_failure_note(frozen: dict) -> str:
    """The forecaster-asset pairs the choice judged on their forecasts made before a failure
    that came after the selection period (``frozen.json``), '' where there are none."""
    triples = frozen.get("judged_before_a_later_failure") or []
    if not triples:
        return ""
    return (" Judged in the choice on the forecasts made before a failure after the selection "
            "period (brought back up to the selection period's last day, so the choice does "
            "not know of the later failure; left out after it, so the evaluation period has no "
            "row of that asset for that forecaster): " + "; ".join(triples) + ".")


def unserved_note(summary: pd.DataFrame, name: str) -> str:
    """The assets judged for some policy of the evaluation period but not for the frozen one
    (its forecaster failed there, so the backtest has no path), said so that its per-asset
    table is not read as the whole universe."""
    missing = assets_without(summary, name)
    if not missing:
        return ""
    return (f" **Not judged on {', '.join(map(str, missing))}**: the frozen forecaster has no "
            "path there (failed in the walk-forward, `backtest/failures.csv`); an asset of the "
            "selection period counted as not acceptable for it in the choice.")


def _knob_note(frozen: dict) -> str:
    """How the knobs were chosen, for the protocol paragraph ('' where none was)."""
    knobs = frozen.get("knobs") or {}
    if not knobs:
        return ""
    swept = "; ".join(f"{k} in {v}" for k, v in knobs.items())
    return (f", then its knob variants ({swept}) judged beside it on the same period by the "
            "same rule")


def _frozen_points(points: pd.DataFrame, frozen: dict) -> pd.Series:
    """The frozen policy's rows among frontier ``points``: its forecaster's family at its
    confidence, or, where a knob was chosen beside it (``frozen["knobs"]``), that knob's
    family (``<forecaster>:<knob>``) at the chosen value."""
    settings, knobs = frozen["settings"] or {}, frozen.get("knobs") or {}
    moved = [k for k in settings if k in knobs]
    if moved:
        key = moved[0]  # each variant moves one knob
        return (points["family"] == knob_family(frozen["forecaster"], key)) & (
            points["knob"].round(6) == round(float(settings[key]), 6))
    fam = points["family"] == frozen["forecaster"]
    if settings.get("policy.confidence") is not None:
        fam &= points["knob"].round(6) == round(float(settings["policy.confidence"]), 6)
    return fam


def stress_summary(stress: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Per episode and policy: assets present, assets breached, worst loss, bad debt (at LT
    and at max LTV) summed over assets."""
    g = stress[stress["policy"].isin(names)].groupby(["episode", "policy"], sort=True)
    return g.agg(assets=("asset", "size"),
                 assets_breached=("breaches", lambda b: int((b > 0).sum())),
                 worst_loss=("worst_loss", "max"), bad_debt_lt=("bad_debt_lt", "sum"),
                 bad_debt_ltv=("bad_debt_ltv", "sum")).reset_index()


def report(outputs_dir: Path) -> str:
    """The whole Markdown report from a run's ``outputs/`` files. A part whose files are
    missing (its step did not complete) is a line saying so; FileNotFoundError only where
    nothing at all is there to render."""
    outputs_dir = Path(outputs_dir)
    bt = outputs_dir / "backtest"
    extra = [part for part in (stability_section(outputs_dir), capital_section(outputs_dir),
                               by_year_section(outputs_dir), tail_section(outputs_dir),
                               stress_section(outputs_dir)) if part]
    if not extra and not any((bt / f).is_file() for f in (
            "comparison.csv", "comparison_evaluation.csv", *POLICY_FILES)):
        raise FileNotFoundError(errno.ENOENT, "no run outputs", str(bt))
    return ("## Forecasts\n\n" + forecast_section(bt)
            + "\n\n## Policy backtest\n\n" + policy_tables(bt) + "\n"
            + "".join("\n" + part for part in extra))

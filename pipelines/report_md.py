"""Markdown tables of the last run's results (``volmargin report``), read from ``outputs/``.

The README's result tables are this command's output, so every figure there can be
reproduced with ``make run && .venv/bin/volmargin report``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipelines.evaluation.coverage import MIN_VERDICT_DAYS
from pipelines.policy_eval.frontier import knob_family
from pipelines.policy_eval.protocol import assets_without
from pipelines.report_extra import (
    as_safe_markdown,
    by_year_section,
    capital_section,
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
    """QLIKE by model (all assets, BTC/ETH, the rest) and the DM/MCS/VaR summary."""
    c = comparison.copy()
    c["group"] = c["asset"].isin(HOURLY).map({True: "BTC/ETH", False: "other assets"})
    wide = c.pivot_table(index="model", columns="horizon_days", values="qlike", aggfunc="mean")
    wide.columns = [f"QLIKE h={h}" for h in wide.columns]
    groups = c.pivot_table(index="model", columns=["group", "horizon_days"], values="qlike",
                           aggfunc="mean")
    groups.columns = [f"{g} h={h}" for g, h in groups.columns]
    one = c[c["horizon_days"] == 1].groupby("model").agg(
        in_mcs_h1=("in_mcs", "mean"),
        dm_better_p05=("dm_p_better", lambda x: int((x < 0.05).sum())),
        dm_worse_p05=("dm_p_better", lambda x: int((x > 0.95).sum())),
        var99_pass=("var_pass", lambda x: int(x.fillna(False).astype(bool).sum())))
    table = wide.join(groups).join(one).sort_values(wide.columns[0]).reset_index()
    return _fmt(table)


def evaluation_forecasts(bt: Path) -> str:
    """The forecast comparison of the evaluation period, then the heading of the whole
    out-of-sample period's (``''`` where the run wrote no evaluation-period table)."""
    path = bt / "comparison_evaluation.csv"
    if not path.is_file():
        return ""
    return ("### Evaluation period (settings frozen before it)\n\n"
            + forecast_tables(pd.read_csv(path))
            + "\n\n### Whole out-of-sample period\n\nFrom `backtest.oos_start` on. It runs "
            "through the selection period, on which some forecasters' settings were chosen "
            "(`harx_mlp`'s DVOL and weekday terms, `gbm_sklearn`'s asset one-hot), so it "
            "flatters those there; the evaluation period above is the headline.\n\n")


def per_asset_qlike(comparison: pd.DataFrame, horizon: int) -> str:
    c = comparison[comparison["horizon_days"] == horizon]
    return _fmt(c.pivot_table(index="asset", columns="model", values="qlike").reset_index())


def policy_tables(bt: Path) -> str:
    """The policy evaluation: frozen settings, headline (evaluation beside selection), the
    frozen policy per asset, BTC/ETH against Aave v3, the frontier, stress episodes and the
    days on which several assets breached together."""
    frozen = json.loads((bt / "frozen.json").read_text())
    name = frozen["policy"]
    headline = pd.read_csv(bt / "policy_headline.csv")
    summary = pd.read_csv(bt / "policy_summary.csv")
    frontier = pd.read_csv(bt / "policy_frontier.csv")
    stress = pd.read_csv(bt / "stress_episodes.csv")
    joint = pd.read_csv(bt / "policy_joint_breaches.csv")
    sel, ev = frozen["selection_period"], frozen["evaluation_period"]
    settings = frozen["settings"] or "as configured"
    head = (f"Frozen on the selection period {sel[0]} → {sel[1]}: **`{name}`** "
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
            + unserved_note(summary, name) + later_failure_note(frozen)
            + stability_note(frozen) + preferred_note(frozen))
    mine = summary[summary["policy"] == name][[c for c in [
        "asset", "n", "breaches", "short_breaches", "short_bad_debt_sum", "breach_upper",
        "band_low",
        "under_coverage",
        "over_coverage", "independence_p", "dq_p", "stress_bad_debt", "stress_budget",
        "capital", "mean_mmf", "mean_lt", "bad_debt_lt_sum", "bad_debt_ltv_sum", "acceptable",
        "why_not"] if c in summary.columns]].fillna({"why_not": ""})
    knob = frozen["settings"].get("policy.confidence")
    pts = frontier[(frontier["period"] == "evaluation") & frontier["asset"].isin(HOURLY)]
    fam = _frozen_points(pts, frozen)
    aave = pts[fam | pts["family"].isin(["aave_v3"]) | ((pts["family"] == "static") & (
        pts["knob"].round(6) == round(float(knob or 0.975), 6)))][[
            "asset", "family", "knob", "capital", "bad_debt", "stress_bad_debt", "breaches"]]
    pooled = frontier[(frontier["period"] == "evaluation") & (frontier["asset"] == "pooled")]
    return ("### Protocol\n\n" + head
            + "\n\n### Policies, evaluation period beside selection period\n\n"
            + _fmt(headline)
            + f"\n\n### Frozen policy (`{name}`) per asset, evaluation period\n\n"
            + _fmt(mine)
            + "\n\n### BTC and ETH against Aave v3, evaluation period (LB held at 1.05)\n\n"
            + _fmt(aave.sort_values(["asset", "family"]),
                   empty="no BTC or ETH among the assets, nothing to compare with Aave v3")
            + "\n\n### Capital vs bad debt, pooled over assets, evaluation period\n\n"
            + _fmt(pooled[["family", "knob", "capital", "bad_debt", "stress_bad_debt",
                           "breaches", "frontier_bad_debt", "frontier_stress_bad_debt"]])
            + as_safe_section(bt)
            + "\n\n### Stress episodes: assets breached and bad debt summed over assets\n\n"
            + _fmt(stress_summary(stress, [name, "static", "aave_v3"]))
            + "\n\n### Days on which several assets breached together (frozen policy, "
              "whole period)\n\n" + _fmt(joint.fillna({"episode": ""}),
                                          empty="no day with that many breaches")
            + stress_days_section(bt))


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
    """The whole Markdown report from a run's ``outputs/backtest`` files."""
    bt = Path(outputs_dir) / "backtest"
    comparison = pd.read_csv(bt / "comparison.csv")
    return ("## Forecasts\n\n" + evaluation_forecasts(bt) + forecast_tables(comparison)
            + "\n\n### QLIKE per asset, h=1\n\n" + per_asset_qlike(comparison, 1)
            + "\n\n## Policy backtest\n\n" + policy_tables(bt) + "\n"
            + "".join("\n" + part for part in (stability_section(outputs_dir),
                                               capital_section(outputs_dir),
                                               by_year_section(outputs_dir),
                                               tail_section(outputs_dir),
                                               stress_section(outputs_dir)) if part))

"""The tail-forecast and stress-test sections of ``volmargin report``, from what their steps
wrote under ``outputs/`` (nothing is recomputed; a section is left out when its step has not
run)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipelines.policy_eval.stability import stability_table
from pipelines.tail_step import headline


def tail_section(outputs_dir: Path) -> str:
    """Evaluation-period pooled FZ0 at 99% per tail model (``volmargin tail``)."""
    root = Path(outputs_dir) / "tail"
    names = ("fz0_evaluation", "dm", "backtests", "choice")
    if not all((root / f"{n}.csv").is_file() for n in names):
        return ""
    tables = {n: pd.read_csv(root / f"{n}.csv") for n in names}
    best = str(tables["choice"].iloc[0]["best_classical"])
    return ("## Tail forecasts (evaluation period, long side, 99%)\n\n"
            f"Best classical model on the selection period: `{best}`. `fz0`: pooled mean "
            "FZ0 loss (lower is better); `dm_p`: one-sided Diebold-Mariano p-value that the "
            "model beats it; `assets_passing`: one-sided Kupiec and Christoffersen "
            "independence not rejected at 5%.\n\n"
            + headline(tables).round(4).to_markdown(index=False) + "\n"
            + tail_policy_section(outputs_dir))


TAIL_POLICY_COLUMNS = ["policy", "acceptable_eva", "acceptable_sel", "assets_eva",
                       "capital_eva", "capital_sel", "capital_saving_eva",
                       "capital_saving_sel", "bad_debt_lt_sum_eva", "bad_debt_lt_sum_sel",
                       "stress_bad_debt_eva", "stress_bad_debt_sel", "bad_debt_ok_eva"]


def tail_policy_section(outputs_dir: Path) -> str:
    """The tail-driven policies (``outputs/tail/policy_*``), evaluation beside selection."""
    root = Path(outputs_dir) / "tail"
    if not ((root / "policy_headline.csv").is_file() and (root / "policy_frozen.json").is_file()):
        return ""
    frozen = json.loads((root / "policy_frozen.json").read_text())
    table = pd.read_csv(root / "policy_headline.csv")
    table = table[[c for c in TAIL_POLICY_COLUMNS if c in table.columns]]
    return ("\n### Tail-driven policy (MMF from a tail model's ES)\n\n"
            f"Frozen on the selection period: **`{frozen['policy']}`** ({frozen['reason']}). "
            f"σ (LB, APC, jump check) from `{frozen['sigma_model']}`; `capital_saving`: "
            f"1 − capital / capital of `{frozen['comparator']}` (EWMA-FHS); `bad_debt_ok`: "
            "summed and stress-episode bad debt no higher than its.\n\n"
            + table.round(4).to_markdown(index=False) + "\n")


def _latest_stress(outputs_dir: Path) -> Path | None:
    runs = sorted(Path(outputs_dir).glob("forecasts/_stress/asof=*/rev=*/stress_summary.json"),
                  key=lambda p: (p.parent.parent.name, int(p.parent.name.split("=")[1])))
    return runs[-1] if runs else None


def stress_section(outputs_dir: Path) -> str:
    """Per-scenario bad debt and the Monte Carlo distribution of the latest stress run."""
    path = _latest_stress(outputs_dir)
    if path is None:
        return ""
    summary = json.loads(path.read_text())
    book, mc = summary["book"], summary.get("monte_carlo", {})
    rows = [{"scenario": s["scenario"], "kind": s["kind"],
             "accounts_liquidated": s.get("accounts_liquidated"),
             "liquidated_usd_m": s.get("liquidated_value_usd", 0.0) / 1e6,
             "bad_debt_usd_m": s.get("bad_debt_usd", 0.0) / 1e6,
             "bad_debt_share": s.get("bad_debt_share"),
             "excluded_accounts": s.get("excluded_accounts"),
             "missing_assets": ",".join(s.get("missing_assets", []))}
            for s in summary["scenarios"] if s["kind"] != "monte_carlo"]
    table = pd.DataFrame(rows).sort_values("bad_debt_usd_m", ascending=False)
    mc_line = ""
    if mc:
        mc_line = (f"\nMonte Carlo ({mc['paths']:,} joint-FHS one-day paths): P(any bad debt) "
                   f"{mc['prob_bad_debt']:.2%}; VaR95 ${mc['bad_debt_var95']:,.0f}, ES95 "
                   f"${mc['bad_debt_es95']:,.0f}, VaR99 ${mc['bad_debt_var99']:,.0f}, ES99 "
                   f"${mc['bad_debt_es99']:,.0f}.\n")
    return (f"## Stress test of the parameters published for {summary['as_of']}\n\n"
            f"Book: {book['source']}, {book['accounts']:,} accounts, debt "
            f"${book['debt_usd'] / 1e6:,.1f}M against collateral "
            f"${book['collateral_usd'] / 1e6:,.1f}M (`{path.parent.relative_to(outputs_dir)}`)."
            "\n\n" + table.round(4).to_markdown(index=False) + "\n" + mc_line)


def stability_section(outputs_dir: Path, window: int = 7) -> str:
    """Parameter-change liquidations and threshold swings of the frozen policy, its variant
    without anti-procyclicality and the comparators, on the evaluation period."""
    bt = Path(outputs_dir) / "backtest"
    if not (bt / "policy_paths.parquet").is_file() or not (bt / "frozen.json").is_file():
        return ""
    frozen = json.loads((bt / "frozen.json").read_text())
    paths = pd.read_parquet(bt / "policy_paths.parquet",
                            columns=["policy", "asset", "date", "mmf", "lt", "ltv"])
    name = frozen["policy"]
    names = [name, f"{name}:no_apc", "static", "aave_v3"]
    start = pd.Timestamp(frozen["evaluation_period"][0])
    table = stability_table(paths, [n for n in names if n in set(paths["policy"])], window,
                            start)
    return ("### Open positions: parameter-change liquidations and threshold swings "
            "(evaluation period)\n\n"
            f"`liquidated_by_parameters`: asset-days on which LT fell below an LTV admitted in "
            f"the previous {window} days (a position opened at max LTV made liquidatable with no "
            "price move); swings are means over assets.\n\n"
            + table.to_markdown(index=False) + "\n")

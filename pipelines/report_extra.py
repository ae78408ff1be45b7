"""The tail-forecast and stress-test sections of ``volmargin report``, from what their steps
wrote under ``outputs/`` (nothing is recomputed; a section is left out when its step has not
run)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from pipelines.evaluation.tail_compare import LEARNED, MIN_VERDICT_DAYS
from pipelines.policy_eval.acceptance import capital_by_policy
from pipelines.policy_eval.pipeline import EWMA
from pipelines.policy_eval.protocol import in_period
from pipelines.policy_eval.stability import stability_table
from pipelines.policy_eval.tail_driven import prefers_tail, ranked_text
from pipelines.tail_step import headline


class EmptyTableError(Exception):
    """A file a section reads is column-less (``pd.errors.EmptyDataError``): the section
    says so in its place (:func:`guarded`)."""


def shown(path: Path) -> str:
    """A run's file as the report names it: ``backtest/frozen.json``."""
    return f"`{path.parent.name}/{path.name}`"


def missing_line(root: Path, names: Sequence[str], step: str) -> str:
    """'' where every file of ``names`` is under ``root``, else the line that stands in for
    what they would have rendered: the step that writes them did not complete."""
    gone = [n for n in names if not (root / n).is_file()]
    if not gone:
        return ""
    return (f"_{step} step did not complete: {', '.join(shown(root / n) for n in gone)} "
            "missing._")


def read_table(path: Path) -> pd.DataFrame:
    """``path``'s CSV; :class:`EmptyTableError` where it has no column (a header-only file is
    an empty table, which the section renders as such)."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise EmptyTableError(f"{shown(path)} is empty (no columns)") from None


def guarded(root: Path, names: Sequence[str], step: str, build: Callable[[], str]) -> str:
    """``build()``, or the line saying why it cannot be: a file of ``names`` (under ``root``,
    written by ``step``) missing, or one it reads column-less."""
    line = missing_line(root, names, step)
    if line:
        return line
    try:
        return build()
    except EmptyTableError as exc:
        return f"_{exc}._"


TAIL_TABLES = ("fz0_evaluation", "dm", "backtests", "choice")


def tail_section(outputs_dir: Path) -> str:
    """Evaluation-period pooled FZ0 at 99% per tail model (``volmargin tail``); '' where the
    step has not run, a line in place of what it did not write."""
    root = Path(outputs_dir) / "tail"
    files = [f"{n}.csv" for n in TAIL_TABLES]
    if not any((root / f).is_file() for f in files):
        return ""
    return ("## Tail forecasts (evaluation period, long side, 99%)\n\n"
            + guarded(root, files, "tail", lambda: tail_table(root)) + "\n"
            + tail_by_year(root) + tail_policy_section(outputs_dir))


def tail_table(root: Path) -> str:
    """The pooled FZ0 table and its paragraph; a column-less ``dm`` / ``backtests`` /
    ``choice`` is said and rendered as no row (``fz0_evaluation``'s: no table)."""
    tables, empty = {}, []
    for n in TAIL_TABLES:
        try:
            tables[n] = read_table(root / f"{n}.csv")
        except EmptyTableError as exc:
            if n == "fz0_evaluation":
                raise
            tables[n] = pd.DataFrame()
            empty.append(str(exc))
    choice = tables["choice"]
    best = (f"`{choice.iloc[0]['best_classical']}`" if len(choice) and "best_classical" in choice
            else "none")
    said = "".join(f" {e}: read as no row." for e in empty)
    return (f"Best classical model on the selection period: {best}. `fz0`: pooled mean "
            "FZ0 loss (lower is better); `dm_p`: one-sided Diebold-Mariano p-value that the "
            "model beats it; `assets_passing`: one-sided Kupiec and Christoffersen "
            f"independence not rejected at 5%, on at least {MIN_VERDICT_DAYS} scored days; "
            "`asset_days`: the asset-days every pooled model forecast, the support of `fz0`, "
            "the DM and the MCS; `coverage`: the share of the period's asset-days the model "
            "forecast (a model under 95% of the best-covered one's is left out of the pool, "
            "its `fz0` empty, rather than shrinking every model's support)." + said + "\n\n"
            + headline(tables).round(4).to_markdown(index=False))


TAIL_POLICY_COLUMNS = ["policy", "acceptable_eva", "acceptable_sel", "assets_eva",
                       "capital_eva", "capital_sel", "capital_saving_eva",
                       "capital_saving_sel", "bad_debt_lt_sum_eva", "bad_debt_lt_sum_sel",
                       "stress_bad_debt_eva", "stress_bad_debt_sel", "bad_debt_ok_eva"]


TAIL_AS_SAFE_COLUMNS = ["measure", "period", "knob", "capital", "bad_debt", "as_safe",
                       "policy_knob", "policy_capital", "policy_bad_debt", "capital_vs",
                       "pooled_assets"]


def as_safe_markdown(path: Path, keys: list[str], columns: list[str]) -> str:
    """An as-safe table (``policy_as_safe.csv`` of the policy step or of the tail step) as
    Markdown, sorted by ``keys`` (``measure, period``: the evaluation period first) and cut to
    ``columns``; '' where the run did not write it or it has no row, the line saying so where
    it has no column."""
    if not path.is_file():
        return ""
    try:
        table = read_table(path)
    except EmptyTableError as exc:
        return f"_{exc}._"
    if table.empty:
        return ""
    table = table.sort_values(keys)
    return table[[c for c in columns if c in table.columns]].round(4).to_markdown(index=False)


def across_note(frozen: dict) -> str:
    """Which of the two frozen policies (the variance-driven one ``volmargin run`` froze, the
    tail-driven one) the choice's rule ranks first on the selection period
    (``policy_frozen.json`` ``across_kinds``), '' where the tail step had none to rank."""
    across = frozen.get("across_kinds") or {}
    if not across:
        return ""
    t, v = across["tail_driven"], across["variance_driven"]
    first, second = (t, v) if prefers_tail(across) else (v, t)
    served = ("" if first is not t else
              "; this run's choice spanned both kinds and registered it (the gate decides its "
              "promotion)" if frozen.get("one_choice") else
              "; `volmargin run` registers the variance-driven one unless the tail step runs "
              "inside it (`tail.in_run: true`)")
    return (f" One choice spanning both kinds, by the same rule on the selection period, "
            f"would keep `{first['policy']}` ({ranked_text(first)}) over `{second['policy']}` "
            f"({ranked_text(second, counted=False)}){served}.")


def tail_policy_section(outputs_dir: Path) -> str:
    """The tail-driven policies (``outputs/tail/policy_*``), evaluation beside selection; ''
    where they were not evaluated, a line in place of what the step did not write."""
    root = Path(outputs_dir) / "tail"
    files = ("policy_headline.csv", "policy_frozen.json")
    if not any((root / f).is_file() for f in files):
        return ""
    text = guarded(root, files, "tail", lambda: tail_policy_tables(root))
    return ("\n### Tail-driven policy (MMF from a tail model's ES)\n\n" + text
            + ("" if text.endswith("\n") else "\n"))


def tail_policy_tables(root: Path) -> str:
    """The tail-driven policies' paragraph and tables (:func:`tail_policy_section`)."""
    frozen = json.loads((root / "policy_frozen.json").read_text())
    table = read_table(root / "policy_headline.csv")
    table = table[[c for c in TAIL_POLICY_COLUMNS if c in table.columns]]
    out = (f"Frozen on the selection period: **`{frozen['policy']}`** ({frozen['reason']}). "
           f"σ (LB, APC, jump check) from `{frozen['sigma_model']}`; `capital_saving`: "
           f"1 − capital / capital of `{frozen['comparator']}` (EWMA-FHS); `bad_debt_ok`: "
           "summed and stress-episode bad debt no higher than its." + across_note(frozen)
           + "\n\n" + table.round(4).to_markdown(index=False) + "\n")
    if (root / "policy_capital.csv").is_file():
        try:
            capital = read_table(root / "policy_capital.csv").round(4).to_markdown(index=False)
        except EmptyTableError as exc:
            capital = f"_{exc}._"
        out += ("\n#### Where the tail-driven capital goes (evaluation period)\n\n"
                "Capital parts as in \"Where the capital goes\"; `tail_es`: mean ES of the "
                "covered loss the candidate's model forecast (long side, its level), the tail "
                "term before the stress floor, the loss memory and the parameter roles; "
                "`tail_es_daily_move`: its mean absolute day-to-day log change (the roles "
                "tighten at once and loosen by announced steps, so jitter ratchets the margin "
                "up); `mmf_peak_to_trough`, `mmf_max_rise_30d`: how far the margin in force "
                "moved (means over assets).\n\n" + capital + "\n")
    safe = as_safe_markdown(root / "policy_as_safe.csv", ["measure", "period"],
                            TAIL_AS_SAFE_COLUMNS)
    if safe:
        out += ("\n#### The tail-driven policy against EWMA-FHS at equal-or-better bad "
                "debt (pooled, LB 1.05)\n\n"
                "EWMA-FHS's cheapest level (its grid and `evaluation.comparator_levels`) "
                "with no more bad debt than the "
                "frozen tail-driven policy, as under \"Capital at equal-or-better bad "
                "debt\"; `as_safe` False: none is, the row is its safest level.\n\n"
                + safe + "\n")
    return out


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
             # stress schema 2: the share of the debt the scenario could price
             "bad_debt_share_evaluated": s.get("bad_debt_share_evaluated"),
             "excluded_accounts": s.get("excluded_accounts"),
             "excluded_debt_usd_m": (s["excluded_debt_usd"] / 1e6
                                     if s.get("excluded_debt_usd") is not None else None),
             "missing_assets": ",".join(s.get("missing_assets", []))}
            for s in summary["scenarios"] if s["kind"] != "monte_carlo"]
    table = pd.DataFrame(rows).sort_values("bad_debt_usd_m", ascending=False)
    table = table.dropna(axis=1, how="all")  # a schema-1 summary has neither new column
    skipped = "".join(f"\nSkipped: `{item['scenario']}` ({item['reason']})."
                      for item in summary.get("skipped_scenarios", []))
    mc_line = ""
    if mc and mc.get("prob_bad_debt") is None:
        mc_line = (f"\nMonte Carlo ({mc['paths']:,} joint-FHS one-day paths): not evaluated, "
                   "every account excluded (the `fhs_joint` row of the stress table says "
                   "why).\n")
    elif mc:
        mc_line = (f"\nMonte Carlo ({mc['paths']:,} joint-FHS one-day paths): P(any bad debt) "
                   f"{mc['prob_bad_debt']:.2%}; VaR95 ${mc['bad_debt_var95']:,.0f}, ES95 "
                   f"${mc['bad_debt_es95']:,.0f}, VaR99 ${mc['bad_debt_var99']:,.0f}, ES99 "
                   f"${mc['bad_debt_es99']:,.0f}.\n")
    return (f"## Stress test of the parameters published for {summary['as_of']}\n\n"
            f"Book: {book['source']}, {book['accounts']:,} accounts, debt "
            f"${book['debt_usd'] / 1e6:,.1f}M against collateral "
            f"${book['collateral_usd'] / 1e6:,.1f}M (`{path.parent.relative_to(outputs_dir)}`)."
            "\n\n" + table.round(4).to_markdown(index=False) + "\n" + skipped
            + ("\n" if skipped else "") + mc_line)


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
    # the roles' notice window and the loss-day split of the run (records before they were
    # written: the defaults, 7 days and a daily update)
    window = int(frozen.get("protect_days", window))
    first, last = frozen["evaluation_period"][:2]  # ISO dates; no realized loss: no end
    start = dt.date.fromisoformat(first)
    end = dt.date.fromisoformat(last) if last[:1].isdigit() else None
    table = stability_table(paths, [n for n in names if n in set(paths["policy"])], window,
                            (start, end), int(frozen.get("update_interval_days", 1)))
    return ("### Open positions: parameter-change liquidations and threshold swings "
            "(evaluation period)\n\n"
            f"`liquidated_by_parameters`: asset-days on which LT fell below an LTV admitted in "
            f"the previous {window} days (a position opened at max LTV made liquidatable with no "
            "price move); swings are means over assets.\n\n"
            + table.to_markdown(index=False) + "\n")


def policy_name_parts(name: str) -> tuple[str, dict[str, str], str]:
    """(forecaster, {setting: value}, suffix) of a replayed policy's name,
    ``policy:<alias>[@k=v,...][:suffix]`` (:func:`pipelines.policy_eval.compare.candidate_name`;
    a comparator's name, such as ``static``, is its own forecaster with no settings)."""
    body = name.removeprefix("policy:")
    body, _, suffix = body.partition(":")
    alias, _, listed = body.partition("@")
    settings = dict(item.split("=", 1) for item in listed.split(",") if "=" in item)
    return alias, settings, suffix


def _at_base(frozen: dict) -> tuple[set[str], Callable[[str, str, bool], bool]]:
    """(the swept knobs' short names, a test ``(name, alias, swept)``: is ``name`` the
    policy of ``alias`` at the frozen policy's settings but the knobs — with any knob
    values when ``swept``, with none set otherwise)."""
    knobs = {k.split(".")[-1] for k in (frozen.get("knobs") or {})}
    _, own, _ = policy_name_parts(frozen["policy"])
    base = {k: v for k, v in own.items() if k not in knobs}

    def at_base(name: str, alias: str, swept: bool) -> bool:
        a, settings, suffix = policy_name_parts(name)
        rest = {k: v for k, v in settings.items() if k not in knobs}
        return (name.startswith("policy:") and a == alias and not suffix and rest == base
                and (swept or not knobs & settings.keys()))

    return knobs, at_base


def knob_variants(frozen: dict, names: list[str]) -> list[str]:
    """The frozen policy's first choice and knob variants among ``names`` (its forecaster at
    its settings but the swept knobs, ``frozen["knobs"]``), the frozen policy excluded: the
    configured value first, then by knob value."""
    knobs, at_base = _at_base(frozen)
    return sorted((n for n in names if n != frozen["policy"]
                   and at_base(n, frozen["forecaster"], True)),
                  key=lambda n: [(k in policy_name_parts(n)[1],   # as configured first
                                  float(policy_name_parts(n)[1].get(k, 0.0)))
                                 for k in sorted(knobs)])


def capital_rows(frozen: dict, names: list[str]) -> list[str]:
    """The policies whose capital the report takes apart, in order: the frozen policy, its
    first choice and knob variants (:func:`knob_variants`), its variant without APC, EWMA-FHS
    at the same settings, the static table, the comparators the choice's rule would prefer
    (``frozen["comparators_the_rule_prefers"]``: where their capital goes beside the frozen
    policy's) and Aave v3."""
    _, at_base = _at_base(frozen)
    ewma = [n for n in names if at_base(n, EWMA, False)]
    preferred = [c["policy"] for c in frozen.get("comparators_the_rule_prefers") or []]
    wanted = [frozen["policy"], *knob_variants(frozen, names), f"{frozen['policy']}:no_apc",
              *ewma, "static", *preferred, "aave_v3"]
    present = set(names)
    return [n for n in dict.fromkeys(wanted) if n in present]


def capital_table(paths: pd.DataFrame, names: list[str], start: dt.date,
                  end: dt.date | None) -> pd.DataFrame:
    """Per policy of ``names``: capital and its parts
    (:func:`pipelines.policy_eval.acceptance.capital_by_policy`); ``vs_ewma_fhs``: capital
    relative to EWMA-FHS (``policy:`` + :data:`pipelines.policy_eval.pipeline.EWMA`) where it
    is among them."""
    ewma = [n for n in names if n.startswith("policy:") and policy_name_parts(n)[0] == EWMA]
    table = capital_by_policy(in_period(paths[paths["policy"].isin(names)], start, end), names,
                              ewma[0] if ewma else None)
    return table.rename(columns={"vs_reference": "vs_ewma_fhs"}).reset_index()


def capital_section(outputs_dir: Path) -> str:
    """Where the capital of the frozen policy, its variants and the comparators goes, on the
    evaluation period."""
    bt = Path(outputs_dir) / "backtest"
    if not (bt / "policy_paths.parquet").is_file() or not (bt / "frozen.json").is_file():
        return ""
    frozen = json.loads((bt / "frozen.json").read_text())
    paths = pd.read_parquet(bt / "policy_paths.parquet", columns=[
        "policy", "asset", "date", "mmf", "imf", "ltv", "lb", "loss_frac"])
    first, last = frozen["evaluation_period"]
    try:
        end: dt.date | None = dt.date.fromisoformat(last)
    except ValueError:   # an open period with no realized loss yet
        end = None
    table = capital_table(paths, capital_rows(frozen, sorted(set(paths["policy"]))),
                          dt.date.fromisoformat(first), end)
    return ("### Where the capital goes (evaluation period)\n\n"
            "Capital = mean(1 − LTV) = `mmf` (the margin in force: tail, stress floor and loss "
            "memory through the parameter roles) + `imf_over_mmf` (what new borrowing keeps on "
            "top: the anti-procyclical IMF terms and the gap under LT) + `lb_part` (LTV·(LB − "
            "1), the liquidation bonus) + `freeze_part` (what fail-safe days give up beyond "
            "MMF); means over each asset's days, then over assets. `vs_ewma_fhs`: capital "
            "relative to EWMA-FHS at the same settings, over the assets both have (Aave v3: "
            "BTC and ETH).\n\n"
            + table.round(4).to_markdown(index=False) + "\n")


def by_year_section(outputs_dir: Path) -> str:
    """The frozen policy, EWMA-FHS and the comparators on each twelve-month block of the
    evaluation period (``outputs/backtest/policy_by_year.csv``)."""
    path = Path(outputs_dir) / "backtest" / "policy_by_year.csv"
    if not path.is_file():
        return ""
    try:
        table = read_table(path).drop(columns=["start", "end"], errors="ignore").round(
            4).to_markdown(index=False)
    except EmptyTableError as exc:
        table = f"_{exc}._"
    return ("### Year by year (evaluation period)\n\n"
            "The frozen policy, EWMA-FHS (`capital_vs_reference`: capital relative to it, over "
            "the assets both have) and "
            "the comparators judged on each twelve-month block of the evaluation period by the "
            "same acceptance function, with each block's own stress budgets; read after the "
            "freeze, nothing is chosen on it. An asset with fewer than "
            f"{MIN_VERDICT_DAYS} days in a block is unproven there (`unproven`), so not "
            "acceptable.\n\n" + table + "\n")


def tail_by_year(root: Path) -> str:
    """Pooled FZ0 at 99% per model on each twelve-month block of the evaluation period, both
    sides, with the learned models' DM p-values against the best classical model
    (``outputs/tail/fz0_by_year.csv``); '' where the step did not write it."""
    path = Path(root) / "fz0_by_year.csv"
    if not path.is_file():
        return ""
    try:
        years = read_table(path)
    except EmptyTableError as exc:
        return f"\n#### Year by year (pooled FZ0 at 99%, both sides)\n\n_{exc}._\n"
    if years.empty:
        return ""
    wide = years.pivot_table(index=["block", "side"], columns="model", values="fz0",
                             sort=False)
    best = str(years["benchmark"].dropna().iloc[0]) if years["benchmark"].notna().any() else ""
    for model in (m for m in LEARNED if m in wide.columns):
        p = years[years["model"] == model].set_index(["block", "side"])["p_better"]
        wide[f"{model}_dm_p_vs_{best}"] = p.reindex(wide.index).to_numpy()
    wide["days"] = years.groupby(["block", "side"], sort=False)["days"].max().reindex(
        wide.index).to_numpy()
    return ("\n#### Year by year (pooled FZ0 at 99%, both sides)\n\n"
            "Each model's pooled FZ0 on each twelve-month block of the evaluation period, and "
            f"the learned model's one-sided DM p-value against `{best}` in that block.\n\n"
            + wide.reset_index().round(4).to_markdown(index=False) + "\n")

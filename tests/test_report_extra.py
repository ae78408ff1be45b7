"""volmargin report's tail and stress sections render what their steps wrote, or nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.evaluation.tail_compare import fz0_by_year
from pipelines.report_extra import by_year_section, stress_section, tail_by_year, tail_section


def test_sections_are_left_out_when_their_steps_have_not_run(tmp_path):
    assert tail_section(tmp_path) == "" and stress_section(tmp_path) == ""
    assert by_year_section(tmp_path) == "" and tail_by_year(tmp_path) == ""


def test_year_tables_put_each_block_on_its_own_rows(tmp_path):
    rows = []
    for block, fz in (("2023-07-01 → 2024-06-30", (-2.5, -2.4)),
                      ("2024-07-01 → 2025-06-30", (-2.7, -2.6))):
        for model, value, p in (("tail_nn", fz[0], 0.01), ("evt_garch", fz[1], float("nan"))):
            rows.append({"block": block, "side": "long", "level": 0.99, "model": model,
                         "fz0": value, "days": 365, "benchmark": "evt_garch", "p_better": p})
    pd.DataFrame(rows).to_csv(tmp_path / "fz0_by_year.csv", index=False)
    text = tail_by_year(tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("| 20")]
    assert len(lines) == 2 and "-2.7" in lines[1] and "tail_nn_dm_p_vs_evt_garch" in text
    assert lines[0].split("|")[1].strip() == "2023-07-01 → 2024-06-30"
    # an empty table (no realized day in the evaluation period) renders nothing
    pd.DataFrame(columns=list(rows[0])).to_csv(tmp_path / "fz0_by_year.csv", index=False)
    assert tail_by_year(tmp_path) == ""
    assert fz0_by_year(pd.DataFrame(columns=["level", "target_date"]), "evt", "2023-07-01"
                       ).empty


def test_tail_section_ranks_models_by_fz0_with_dm_and_coverage(tmp_path):
    root = tmp_path / "tail"
    root.mkdir()
    pd.DataFrame({"side": ["long"] * 2, "level": [0.99] * 2, "model": ["nn", "evt"],
                  "fz0": [-2.6, -2.5], "days": [730, 730]}).to_csv(root / "fz0_evaluation.csv")
    pd.DataFrame({"model": ["nn"], "benchmark": ["evt"], "p_better": [0.03]}).to_csv(
        root / "dm.csv")
    pd.DataFrame({"model": ["nn", "nn", "evt", "evt"], "side": ["long"] * 4,
                  "passes": [True, True, True, False]}).to_csv(root / "backtests.csv")
    pd.DataFrame({"best_classical": ["evt"]}).to_csv(root / "choice.csv")
    text = tail_section(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| nn") or
            line.startswith("| evt")]
    assert rows[0].startswith("| nn") and "0.03" in rows[0] and "-2.6" in rows[0]
    assert rows[1].split("|")[-3].strip() == "1"  # evt passes on 1 of 2 assets


def test_stress_section_sorts_scenarios_by_bad_debt_and_states_the_monte_carlo(tmp_path):
    run = tmp_path / "forecasts" / "_stress" / "asof=2025-06-30" / "rev=1"
    run.mkdir(parents=True)
    summary = {"as_of": "2025-06-30",
               "book": {"source": "synthetic (seed 1)", "accounts": 10, "debt_usd": 2e6,
                        "collateral_usd": 3e6},
               "monte_carlo": {"paths": 100, "prob_bad_debt": 0.02, "bad_debt_var95": 0.0,
                               "bad_debt_es95": 5.0, "bad_debt_var99": 7.0,
                               "bad_debt_es99": 9.0},
               "scenarios": [
                   {"scenario": "mild", "kind": "historical", "bad_debt_usd": 1e5},
                   {"scenario": "crash", "kind": "hypothetical", "bad_debt_usd": 4e6,
                    "missing_assets": ["MATIC"]},
                   {"scenario": "mc", "kind": "monte_carlo", "bad_debt_usd": 1.0}]}
    (run / "stress_summary.json").write_text(json.dumps(summary))
    text = stress_section(tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| crash") and lines[2].startswith("| mild")
    assert "| mc" not in text and "P(any bad debt) 2.00%" in text and "ES99 $9" in text
    assert "excluded_debt_usd_m" not in text and "Skipped" not in text  # a schema-1 summary
    summary["scenarios"][1].update(excluded_debt_usd=7e5, bad_debt_share_evaluated=0.25)
    summary["skipped_scenarios"] = [{"scenario": "BTC_drop30_corr1", "kind": "hypothetical",
                                     "reason": "BTC is unusable (stale)"}]
    (run / "stress_summary.json").write_text(json.dumps(summary))
    text = stress_section(tmp_path)
    crash = next(line for line in text.splitlines() if line.startswith("| crash"))
    cells = [cell.strip() for cell in crash.split("|")]
    assert "0.25" in cells and "0.7" in cells and "excluded_debt_usd_m" in text
    assert "Skipped: `BTC_drop30_corr1` (BTC is unusable (stale))." in text
    # a joint scenario that priced no account: said, no figure
    summary["monte_carlo"] = {"paths": 100, **{k: None for k in (
        "prob_bad_debt", "bad_debt_var95", "bad_debt_es95", "bad_debt_var99",
        "bad_debt_es99")}}
    (run / "stress_summary.json").write_text(json.dumps(summary))
    text = stress_section(tmp_path)
    assert "not evaluated, every account excluded" in text and "P(any" not in text


def test_a_periods_open_position_count_sees_the_ltvs_admitted_before_it(tmp_path):
    """The period's first days are checked against the LTVs admitted in the notice window
    before the period (a cut first saw none), and a day counts in the period of its loss day
    (``date + 1``), as every other period figure: the decision of the period's last day is
    the next period's."""
    import datetime as dt

    from pipelines.policy_eval.stability import liquidated_by_parameters, stability_table

    dates = pd.date_range("2024-01-01", periods=20)
    lt, ltv = [0.80] * 20, [0.60] * 20
    ltv[8] = 0.75  # admitted on the decision of 01-09 (loss day 01-10, before the period)
    lt[10] = 0.72  # 01-11: below it, two days later, in the period
    lt[16] = 0.50  # 01-17: the decision whose loss day is 01-18, after the period
    path = pd.DataFrame({"policy": "p", "asset": "X", "date": dates, "lt": lt, "ltv": ltv,
                         "mmf": 0.1})
    period = (dt.date(2024, 1, 11), dt.date(2024, 1, 17))
    liq = liquidated_by_parameters(path, window=3, period=period).iloc[0]
    assert (liq["days"], liq["violations"]) == (7, 1)  # decisions 01-10 … 01-16
    assert liq["worst_gap"] == pytest.approx(0.03)
    row = stability_table(path, ["p"], 3, period).iloc[0]
    assert (row["asset_days"], row["liquidated_by_parameters"]) == (7, 1)
    assert liquidated_by_parameters(path, 3).iloc[0]["violations"] == 2  # the whole path
    # swings are the period's: a fall of LT before it is not one of them
    assert row["lt_max_fall_30d"] == pytest.approx(0.08)  # 0.80 → 0.72 on 01-11

    # the report reads the window and the period from the run's frozen.json
    from pipelines.report_extra import stability_section

    bt = tmp_path / "backtest"
    bt.mkdir()
    path.assign(lt=[0.55, *lt[1:]]).to_parquet(bt / "policy_paths.parquet")
    frozen = {"policy": "p", "evaluation_period": ["2024-01-11", "2024-01-17"],
              "protect_days": 3, "update_interval_days": 1}
    (bt / "frozen.json").write_text(json.dumps(frozen))
    line = next(r for r in stability_section(tmp_path).splitlines() if r.startswith("| p "))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[1:3] == ["7", "1"]
    assert "previous 3 days" in stability_section(tmp_path)
    (bt / "frozen.json").write_text(json.dumps({**frozen, "protect_days": 1}))
    line = next(r for r in stability_section(tmp_path).splitlines() if r.startswith("| p "))
    assert [c.strip() for c in line.split("|")[1:-1]][1:3] == ["7", "0"]  # 01-09 out of reach


def test_a_threshold_cut_below_an_admitted_ltv_is_counted_and_swings_measured():
    from pipelines.policy_eval.stability import liquidated_by_parameters, threshold_swings

    dates = pd.date_range("2024-01-01", periods=10)
    lt = [0.80] * 10
    ltv = [0.70] * 10
    lt[5] = 0.69          # day 5: LT below the 0.70 admitted on days 1..4 → one violation
    ltv[8] = 0.60         # LT may fall to just above what was admitted in the window
    path = pd.DataFrame({"asset": "X", "date": dates, "lt": lt, "ltv": ltv,
                         "mmf": [0.1] * 5 + [0.2] * 5})
    liq = liquidated_by_parameters(path, window=3).iloc[0]
    assert liq["violations"] == 1 and liq["worst_gap"] == pytest.approx(0.01)
    assert liquidated_by_parameters(path.assign(lt=0.80), 3).iloc[0]["violations"] == 0
    swings = threshold_swings(path).iloc[0]
    assert swings["mmf_peak_to_trough"] == pytest.approx(2.0)
    assert swings["mmf_max_rise_30d"] == pytest.approx(0.1)
    assert swings["lt_max_fall_30d"] == pytest.approx(0.11)

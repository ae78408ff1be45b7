"""`volmargin report` on a partial output directory renders what is there and says what is not,
and its model means are over the assets every model scored."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.report_extra import by_year_section, tail_section
from pipelines.report_md import forecast_tables, per_asset_qlike, report


def comparison(failed: dict[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """A small comparison table: models a, b, c on BTC, B and C at h=1 and h=7; a beats b on
    every asset they both score but is poor on C; ``failed``: (model, asset) -> the failure of
    that pair (NaN metrics), at both horizons."""
    failed = failed or {}
    qlike = {"a": {"BTC": 0.1, "B": 0.1, "C": 0.9}, "b": {"BTC": 0.2, "B": 0.2, "C": 0.3},
             "c": {"BTC": 0.5, "B": 0.5, "C": 0.5}}
    rows = []
    for h in (1, 7):
        for model, by_asset in qlike.items():
            for asset, q in by_asset.items():
                reason = failed.get((model, asset))
                ok = reason is None
                rows.append({"model": model, "asset": asset, "horizon_days": h,
                             "qlike": q if ok else None, "in_mcs": (model == "a") if ok else None,
                             "dm_p_better": 0.01 if ok else None,
                             "var_pass": True if ok else None, "failure": reason})
    return pd.DataFrame(rows)


def written(frame: pd.DataFrame, path) -> pd.DataFrame:
    """``frame`` as the run writes it and the report reads it back (a CSV)."""
    frame.to_csv(path, index=False)
    return pd.read_csv(path)


def model_rows(text: str) -> dict[str, list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return {cells[0]: dict(zip(header, cells, strict=True)) for cells in (
        [cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:])}


def test_model_means_are_over_the_assets_every_model_scored(tmp_path):
    """b failed on C: every model's means leave C out (a's would otherwise carry its poor C
    and rank it behind b), the count of assets is a column and the line under the table says
    what was left out and why; c failed everywhere and is listed with its failure."""
    failed = {("b", "C"): "3 implausible forecasts", **{("c", a): "no convergence"
                                                         for a in ("BTC", "B", "C")}}
    c = written(comparison(failed), tmp_path / "comparison.csv")
    text = forecast_tables(c)
    rows = model_rows(text)
    assert list(rows) == ["a", "b", "c"]  # a first on the assets both scored
    assert float(rows["a"]["QLIKE h=1"]) == 0.1 and float(rows["b"]["QLIKE h=7"]) == 0.2
    assert float(rows["a"]["other assets h=1"]) == 0.1  # B only: C left out
    assert rows["a"]["assets h=1"] == rows["b"]["assets h=7"] == "2"
    assert rows["a"]["dm_better_p05"] == "2" and rows["a"]["in_mcs_h1"] == "1"
    assert rows["c"]["assets h=1"] == "0" and rows["c"]["QLIKE h=1"] == "nan"
    assert ("Left out of every model's means: C at h=1, h=7 (not scored by `b`: failed: 3 "
            "implausible forecasts).") in text
    assert ("`c` scored no asset at h=1, h=7, listed without means there: failed: no "
            "convergence (B,BTC,C).") in text
    assert "|   c |" in per_asset_qlike(c, 1).splitlines()[0]  # its column kept, empty
    # every model scored every asset: no line, the counts all the assets
    whole = forecast_tables(written(comparison(), tmp_path / "comparison.csv"))
    assert "Left out" not in whole and "Means and counts" not in whole
    assert {r["assets h=1"] for r in model_rows(whole).values()} == {"3"}


def test_the_forecasts_are_reported_when_the_policy_step_did_not_complete(tmp_path,
                                                                          monkeypatch):
    """A run whose policy step failed wrote the comparison only: the report renders it and
    says which policy files are missing; with nothing at all there the report fails."""
    bt = tmp_path / "out" / "backtest"
    bt.mkdir(parents=True)
    c = comparison({("b", "C"): "boom"})
    c.to_csv(bt / "comparison.csv", index=False)
    c.to_csv(bt / "comparison_evaluation.csv", index=False)
    pd.DataFrame({"model": ["b"], "asset": ["C"], "horizon_days": [1], "stage": ["fit"],
                  "reason": ["boom"], "rows": [0]}).to_csv(bt / "failures.csv", index=False)
    monkeypatch.setenv("VOLMARGIN__PATHS__OUTPUTS_DIR", str(tmp_path / "out"))
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "### Evaluation period" in text and "### QLIKE per asset, h=1" in text
    assert text.count("(not scored by `b`: failed: boom)") == 2  # both periods' tables
    policy = text.split("## Policy backtest")[1]
    assert "_policy step did not complete: `backtest/frozen.json`, " in policy
    assert "`backtest/policy_joint_breaches.csv` missing._" in policy
    for name in ("comparison.csv", "comparison_evaluation.csv", "failures.csv"):
        (bt / name).unlink()
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 1 and "no results yet" in result.output


FROZEN = {"policy": "policy:a@confidence=0.99", "forecaster": "a",
          "settings": {"policy.confidence": 0.99}, "candidates": ["policy:a@confidence=0.99"],
          "selection_period": ["2021-01-01", "2023-06-30"],
          "evaluation_period": ["2023-07-01", "2025-06-30"]}


def test_each_policy_part_says_which_of_its_files_is_missing(tmp_path):
    """frozen.json and the headline were written, the rest not (and the joint-breach table
    has no column): each part renders or says why not on its own."""
    bt = tmp_path / "backtest"
    bt.mkdir()
    (bt / "frozen.json").write_text(json.dumps(FROZEN))
    pd.DataFrame({"policy": ["policy:a@confidence=0.99"], "acceptable_eva": [3]}).to_csv(
        bt / "policy_headline.csv", index=False)
    (bt / "policy_joint_breaches.csv").write_text("\n")  # no column
    text = report(tmp_path)

    def part(heading: str) -> str:
        return text.split(heading)[1].split("###")[0]

    assert "_backtest step did not complete: `backtest/comparison.csv` missing._" in part(
        "## Forecasts")
    assert "**`policy:a@confidence=0.99`**" in part("### Protocol")
    assert "| policy:a@confidence=0.99 |" in part("### Policies, evaluation period")
    assert "_policy step did not complete: `backtest/policy_summary.csv` missing._" in part(
        "### Frozen policy (`policy:a@confidence=0.99`) per asset")
    for heading in ("### BTC and ETH against Aave v3", "### Capital vs bad debt, pooled"):
        assert "`backtest/policy_frontier.csv` missing._" in part(heading)
    assert "`backtest/stress_episodes.csv` missing._" in part("### Stress episodes")
    assert "_`backtest/policy_joint_breaches.csv` is empty (no columns)._" in part(
        "### Days on which several assets breached together")


def test_a_column_less_or_missing_tail_table_is_said(tmp_path):
    """A tail table without a column is said in its place, not raised; a tail step that
    wrote some of its tables says which it did not."""
    root = tmp_path / "tail"
    root.mkdir()
    pd.DataFrame({"side": ["long"] * 2, "level": [0.99] * 2, "model": ["nn", "evt"],
                  "fz0": [-2.6, -2.5], "days": [730, 730]}).to_csv(
        root / "fz0_evaluation.csv", index=False)
    pd.DataFrame({"model": ["nn", "evt"], "side": ["long"] * 2, "passes": [True, False]}
                 ).to_csv(root / "backtests.csv", index=False)
    pd.DataFrame({"best_classical": ["evt"]}).to_csv(root / "choice.csv", index=False)
    for name in ("dm.csv", "fz0_by_year.csv", "policy_capital.csv", "policy_as_safe.csv"):
        (root / name).write_text("\n")
    pd.DataFrame({"policy": ["tail:nn"], "acceptable_eva": [2]}).to_csv(
        root / "policy_headline.csv", index=False)
    (root / "policy_frozen.json").write_text(json.dumps({
        "policy": "tail:nn", "reason": "cheapest acceptable", "sigma_model": "ewma94",
        "comparator": "policy:ewma94"}))
    (tmp_path / "backtest").mkdir()
    (tmp_path / "backtest" / "policy_by_year.csv").write_text("\n")
    tail = tail_section(tmp_path)
    assert "`tail/dm.csv` is empty (no columns): read as no row." in tail
    assert "| nn " in tail and "| evt " in tail  # the FZ0 table all the same
    assert "_`tail/fz0_by_year.csv` is empty (no columns)._" in tail
    assert "**`tail:nn`**" in tail and "| tail:nn " in tail
    assert "_`tail/policy_capital.csv` is empty (no columns)._" in tail
    assert "_`tail/policy_as_safe.csv` is empty (no columns)._" in tail
    assert "_`backtest/policy_by_year.csv` is empty (no columns)._" in by_year_section(
        tmp_path)
    (root / "choice.csv").unlink()
    (root / "policy_frozen.json").unlink()
    tail = tail_section(tmp_path)
    assert "_tail step did not complete: `tail/choice.csv` missing._" in tail
    assert "_tail step did not complete: `tail/policy_frozen.json` missing._" in tail


def test_the_means_logged_to_mlflow_are_over_the_assets_every_model_scored() -> None:
    """The per-forecaster MLflow means (``qlike_h1.mean``) as the report's: a model that
    failed an asset does not get a mean over fewer, easier assets than the others."""
    from pipelines.steps import common_means

    scores = pd.DataFrame({
        "model": ["a", "a", "a", "b", "b", "b"],
        "asset": ["BTC", "ETH", "TRX", "BTC", "ETH", "TRX"],
        "horizon_days": 1,
        "qlike": [0.2, 0.4, 3.0, 0.3, 0.5, float("nan")]})  # b failed TRX
    means = common_means(scores, "qlike_h{h}")
    assert means[("a", "qlike_h1.mean")] == pytest.approx(0.3)  # BTC and ETH, not TRX
    assert means[("b", "qlike_h1.mean")] == pytest.approx(0.4)
    assert means[("a", "qlike_h1.assets")] == means[("b", "qlike_h1.assets")] == 2


def test_a_run_starts_its_backtest_outputs_afresh(isolated_config) -> None:
    """What an earlier run left in ``outputs/backtest`` (its frozen policy, a table this run
    would not write) is gone once this run's backtest step starts, so that the report and
    the tail step never read another run's files as this one's."""
    import datetime as dt

    from features.build import build_panel
    from features.loaders import load_market
    from pipelines.steps import step_backtest
    from serving.ops.tracking import setup
    from tests.conftest import MARKET

    cfg = isolated_config.with_overrides({
        "models.enabled": ["ewma94"], "backtest.oos_start": "2024-01-01",
        "evaluation.selection_start": "2024-01-01", "evaluation.selection_end": "2024-06-30",
        "evaluation.evaluation_start": "2024-07-01", "evaluation.evaluation_end": "2025-06-30"})
    bt = Path(cfg.paths.outputs_dir) / "backtest"
    bt.mkdir(parents=True)
    for name in ("frozen.json", "policy_headline.csv", "comparison_evaluation.csv",
                 "forecasts_garch11_t.parquet"):  # the last: a model this run does not enable
        (bt / name).write_text("an earlier run's\n")
    market = load_market(MARKET, ["BTC"], dt.date(2025, 6, 30))
    panel = build_panel(market, cfg.features)
    setup(cfg)
    step_backtest(cfg, panel[panel.index.get_level_values("date") >= "2022-06-01"])
    assert not (bt / "frozen.json").exists() and not (bt / "policy_headline.csv").exists()
    assert not (bt / "forecasts_garch11_t.parquet").exists()
    assert (bt / "comparison.csv").is_file() and (bt / "forecasts_ewma94.parquet").is_file()
    assert "an earlier run's" not in (bt / "comparison_evaluation.csv").read_text()

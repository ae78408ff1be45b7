"""The whole pipeline on a small real slice: 2 assets, two years, through the CLI."""

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from serving.ops.tracking import tracking_uri
from serving.ops.version import code_version
from serving.publish import read_partition
from tests.conftest import REPO, write_slice

AS_OF = "2025-06-30"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A project directory with a 2-asset slice and a shrunken copy of the default config."""
    root = tmp_path_factory.mktemp("project")
    write_slice(root / "market", ["BTC", "SOL"], "2023-07-01", AS_OF)
    cfg = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    cfg["backtest"].update(oos_start="2024-09-01", refit_every=120, min_train_days=300)
    cfg["models"]["enabled"] = ["garch11_t", "mlp_har"]  # one classic, one neural: fast
    cfg["models"]["mlp_har"].update(max_epochs=4, hidden=8)
    cfg["policy"]["fhs_min_obs"] = 60
    cfg["evaluation"].update(selection_start="2024-09-01", selection_end="2025-01-31",
                             evaluation_start="2025-02-01", evaluation_end=AS_OF,
                             grid={"policy.confidence": [0.975]})
    # five months cannot prove the policy acceptable: the gate's coverage test off, so that
    # the first version is served as the policy (a refused one serves its assets frozen)
    cfg["registry"]["gate"]["require_coverage"] = False
    (root / "configs").mkdir()
    (root / "configs" / "default.yaml").write_text(yaml.safe_dump(cfg))
    return root


@pytest.fixture(scope="module")
def ran(workdir):
    runner = CliRunner()
    mp = pytest.MonkeyPatch()
    mp.chdir(workdir)
    mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    try:
        result = runner.invoke(app, ["run", "--data-dir", "market", "--quiet"])
        yield workdir, result
    finally:
        mp.undo()


def test_run_exits_cleanly_and_prints_the_summary(ran):
    _, result = ran
    assert result.exit_code == 0, result.output
    assert "garch11_t" in result.output and "mlp_har" in result.output
    assert "(selected)" in result.output
    assert f"asof={AS_OF}" in result.output and "volmargin ui" in result.output
    assert "warning: stale" not in result.output  # every series of the slice runs to the as-of


def test_published_partition_has_one_consistent_row_per_asset(ran):
    workdir, _ = ran
    part = workdir / "outputs" / "forecasts" / f"asof={AS_OF}"
    assert sorted(p.name for p in part.iterdir()) == [
        "_SUCCESS", "manifest.json", "parameters.csv", "parameters.parquet", "updates.json"]
    params = read_partition(part)  # verifies every sha256 in the manifest
    assert list(params["asset"]) == ["BTC", "SOL"]
    assert (params["as_of"].astype(str) == AS_OF).all()
    assert not params["flag_fallback"].any()
    assert (params["ltv"] < params["lt"]).all() and (params["lt"] * params["lb"] <= 1).all()
    assert ((params["mmf"] > 0.02) & (params["mmf"] < 0.6)).all()
    # SOL is more volatile than BTC, so it must carry the larger margin
    by = params.set_index("asset")
    assert by.loc["SOL", "sigma_1d"] > by.loc["BTC", "sigma_1d"]
    assert by.loc["SOL", "mmf"] > by.loc["BTC", "mmf"]
    manifest = json.loads((part / "manifest.json").read_text())
    assert manifest["files"]["parameters.parquet"]["rows"] == 2
    csv = pd.read_csv(part / "parameters.csv")
    assert list(csv["asset"]) == ["BTC", "SOL"]
    assert csv["mmf"].to_numpy() == pytest.approx(params["mmf"].to_numpy())


def test_policy_is_registered_as_champion_and_loads_without_pickle(ran, monkeypatch):
    workdir, _ = ran
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    mlflow.set_tracking_uri(tracking_uri(workdir / "mlruns"))
    mlflow.set_registry_uri(tracking_uri(workdir / "mlruns"))
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("volmargin-policy", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["forecaster"] in {"garch11_t", "mlp_har"}
    params = pd.read_parquet(workdir / "outputs" / "forecasts" / f"asof={AS_OF}"
                             / "parameters.parquet")
    assert set(params["model_version"]) == {"1"}
    assert set(params["run_id"]) == {champion.run_id}
    model = mlflow.pyfunc.load_model("models:/volmargin-policy@champion")
    flavor = model.metadata.flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # models-from-code
    local = mlflow.artifacts.download_artifacts(champion.source)
    files = [p.name for p in Path(local).rglob("*") if p.is_file()]
    assert "policy_model.py" in files and "policy_bundle.json" in files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".joblib"))]
    runs = mlflow.search_runs(experiment_names=["volmargin"])
    steps = set(runs["tags.volmargin.step"])
    assert {"features", "backtest", "policy-backtest", "register", "serve"} <= steps
    nested = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert set(nested["tags.model"]) == {"garch11_t", "mlp_har"}  # one child run per model
    assert nested["metrics.qlike_h1.mean"].notna().all()
    # the evaluation period's scores beside the whole period's, named apart
    evaluation = pd.read_csv(workdir / "outputs" / "backtest" / "comparison_evaluation.csv")
    for model, g in evaluation[evaluation["horizon_days"] == 1].groupby("model"):
        run = nested[nested["tags.model"] == model].iloc[0]
        assert run["metrics.qlike_eva_h1.mean"] == pytest.approx(g["qlike"].mean(), rel=1e-12)
        assert run["metrics.qlike_eva_h1.BTC"] == pytest.approx(
            g.set_index("asset").loc["BTC", "qlike"], rel=1e-12)
    assert champion.tags["policy.acceptable"].endswith("/2")
    assert champion.tags["policy.period"] == f"evaluation 2025-02-01..{AS_OF}"
    assert "selected (rule=" in champion.tags["selection"]
    # the registered policy applies every setting frozen on the selection period, a knob
    # chosen beside the first choice included (the manifest states what was applied)
    frozen = json.loads((workdir / "outputs" / "backtest" / "frozen.json").read_text())
    assert champion.tags["policy"] == frozen["policy"]
    assert frozen["knobs"] == {"policy.stress_floor_weight": [0.0, 0.25, 0.75, 1.0]}
    bundle = json.loads(next(Path(local).rglob("policy_bundle.json")).read_text())
    for key, value in frozen["settings"].items():
        section, name = key.split(".")
        assert bundle["config"][section][name] == value, key
    # what the version was fitted on and by: the feature panel's fingerprint, the code's
    features = runs[runs["tags.volmargin.step"] == "features"].iloc[0]
    assert champion.tags["feature_fingerprint"] == features["params.fingerprint"]
    assert champion.tags["code_version"] == code_version()
    assert set(runs["tags.volmargin.code_version"]) == {code_version()}
    # the serve run carries the config the model applied (its bundle's), not the file's
    serve_run = runs[runs["tags.volmargin.step"] == "serve"].iloc[0]
    applied = mlflow.artifacts.load_dict(f"runs:/{serve_run['run_id']}/config/applied.json")
    assert applied == bundle["config"]
    meta = mlflow.artifacts.load_dict(f"runs:/{serve_run['run_id']}/manifest_metadata.json")
    assert meta["model_version"] == "1" and meta["frozen_settings"]


def test_serving_the_same_as_of_again_is_a_no_op(ran, monkeypatch):
    workdir, _ = ran
    monkeypatch.chdir(workdir)
    part = workdir / "outputs" / "forecasts" / f"asof={AS_OF}"
    before = (part / "parameters.parquet").read_bytes()
    result = CliRunner().invoke(app, ["serve", "--data-dir", "market", "--as-of", AS_OF])
    assert result.exit_code == 0, result.output
    assert "no-op" in result.output
    assert (part / "parameters.parquet").read_bytes() == before


def test_serving_with_an_asset_removed_publishes_only_the_rest(ran, monkeypatch):
    workdir, _ = ran
    monkeypatch.chdir(workdir)
    subset = workdir / "market_btc_only"
    shutil.copytree(workdir / "market", subset)
    for path in subset.rglob("SOL*"):
        path.unlink()
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(subset), "--as-of", "2025-06-29"])
    assert result.exit_code == 0, result.output
    params = read_partition(workdir / "outputs" / "forecasts" / "asof=2025-06-29")
    assert list(params["asset"]) == ["BTC"]


def test_serving_without_a_champion_fails_clearly(tmp_path, monkeypatch, workdir):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(workdir / "configs", tmp_path / "configs")
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(workdir / "market")])
    assert result.exit_code == 1
    assert "no @champion" in result.output


def test_report_renders_the_run_as_markdown_tables(ran, monkeypatch):
    workdir, _ = ran
    monkeypatch.chdir(workdir)
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "## Forecasts" in text and "## Policy backtest" in text
    assert "| garch11_t" in text and "| mlp_har" in text
    assert "aave_v3" in text and "static" in text and "policy:ewma94" in text
    assert "### BTC and ETH against Aave v3" in text
    assert "### Where the capital goes (evaluation period)" in text
    assert "### Year by year (evaluation period)" in text
    # EWMA-FHS and the static table beyond the grid, read at the frozen policy's bad debt
    assert "### Capital at equal-or-better bad debt" in text
    per_asset = text.split("per asset, evaluation period")[1].split("###")[0]
    assert "short_breaches" in per_asset  # a perp short's side, reported beside the long
    assert "short_bad_debt_sum" in per_asset
    as_safe = pd.read_csv(workdir / "outputs" / "backtest" / "policy_as_safe.csv")
    assert set(as_safe["family"]) == {"ewma94", "static"}
    assert set(as_safe["period"]) == {"selection", "evaluation"}
    # market-wide stress days by rule: two assets can never be co_breach_min_assets (3)
    days = pd.read_csv(workdir / "outputs" / "backtest" / "policy_stress_days.csv")
    assert days.empty and {"loss_day", "episode", "frozen_breached"} <= set(days.columns)
    assert "_None: no day of either period met the rule._" in text.split(
        "### Market-wide stress days found by rule")[1]
    # the forecast comparison of the evaluation period first, then the whole period's
    head = text.index("### Evaluation period (settings frozen before it)")
    assert head < text.index("### Whole out-of-sample period") < text.index("## Policy")
    bt = workdir / "outputs" / "backtest"
    evaluation = pd.read_csv(bt / "comparison_evaluation.csv")
    whole = pd.read_csv(bt / "comparison.csv")
    assert len(evaluation) and pd.to_datetime(evaluation["start"]).min() >= pd.Timestamp(
        "2025-01-31")  # the cutoff of the first evaluation-period target
    assert pd.to_datetime(whole["start"]).min() < pd.Timestamp("2025-01-31")


def test_report_says_why_a_table_is_empty(ran, tmp_path):

    from pipelines.report_md import policy_tables

    workdir, _ = ran
    bt = shutil.copytree(workdir / "outputs" / "backtest", tmp_path / "backtest")
    frontier = pd.read_csv(bt / "policy_frontier.csv")
    assert (frontier["asset"] == "BTC").any()
    frontier[frontier["asset"] != "BTC"].to_csv(bt / "policy_frontier.csv", index=False)
    text = policy_tables(bt)  # a universe without BTC or ETH: no Aave comparison
    section = text.split("### BTC and ETH against Aave v3")[1].split("###")[0]
    assert "_None: no BTC or ETH among the assets, nothing to compare with Aave v3._" in section
    assert "| asset" not in section  # not a header without rows

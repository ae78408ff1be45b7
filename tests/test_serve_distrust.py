"""Assets the model's forecaster failed in the walk-forward it was selected on are served
the fail-safe, whatever a day's forecast looks like: the run records them in the bundle
(``failed_assets``) and the serve freezes them, flagged with the reason but not stale. So
are the assets on which a champion that its own gate refused (the store's first version,
promoted all the same) was not acceptable (``not_acceptable``)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from pipelines.selection.gate import not_acceptable
from pipelines.steps import failed_in_walk_forward
from serving.ops import registry
from serving.ops.tracking import tracking_uri
from serving.ops.version import code_version
from serving.publish import read_manifest, read_partition
from serving.serve import failed_assets, gate_refused, refused_note, unvalidated
from tests.project import copy_project
from tests.test_asof import D29, invoke


def test_the_failed_assets_of_the_selected_model_at_the_update_horizon() -> None:
    failures = pd.DataFrame([
        {"model": "gbm", "asset": "PEG", "horizon_days": 1, "stage": "plausibility",
         "rows": 600, "reason": "612 implausible forecasts, first at 2023-04-11: ..."},
        {"model": "gbm", "asset": "PEG", "horizon_days": 7, "stage": "plausibility",
         "rows": 800, "reason": "..."},
        {"model": "gbm", "asset": "GAP", "horizon_days": 1, "stage": "unverifiable",
         "rows": 3, "reason": "3 forecasts dropped (the others kept)"},
        {"model": "gbm", "asset": "NEW", "horizon_days": 1, "stage": "no_forecast",
         "rows": 0, "reason": "no forecast at any cutoff"},
        {"model": "har", "asset": "TRX", "horizon_days": 1, "stage": "plausibility",
         "rows": 3, "reason": "3 implausible forecasts"},
    ])
    got = failed_in_walk_forward(failures, "gbm", 1)
    assert set(got) == {"PEG", "NEW"}  # a triple kept (forecasts dropped alone) is no failure
    assert got["PEG"].startswith("plausibility: 612 implausible forecasts")
    assert failed_in_walk_forward(failures.iloc[:0], "gbm", 1) == {}
    bundle = {"failed_assets": got}
    why = unvalidated(bundle, ["BTC", "PEG"])
    assert list(why) == ["PEG"] and "never validated" in why["PEG"]
    assert unvalidated({}, ["PEG"]) == {}  # a bundle written before the record: none


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory, "distrust-serving")


def test_an_unvalidated_asset_is_frozen_on_its_thresholds_not_stale(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_distrust"}
    d28 = dt.date(2025, 6, 28)
    assert invoke(project, "serve", "--as-of", str(d28), "--data-dir", "market", "--quiet",
                  env=env).exit_code == 0
    import serving.serve as serve_module

    monkeypatch.setattr(serve_module, "unvalidated", lambda bundle, assets: {
        a: f"the model's forecaster failed {a} in its walk-forward (test)"
        for a in assets if a == "SOL"})
    result = invoke(project, "serve", "--as-of", str(D29), "--data-dir", "market", env=env)
    assert result.exit_code == 0, result.output
    assert "SOL: the model's forecaster failed SOL" in " ".join(result.output.split())
    out = project / "out_distrust" / "forecasts"
    before = read_partition(out / f"asof={d28}").set_index("asset")
    sol = read_partition(out / f"asof={D29}").set_index("asset").loc["SOL"]
    assert sol["flag_fallback"] and not sol["flag_stale"] and sol["ltv"] == 0.0
    assert sol["lt"] == before.loc["SOL", "lt"] and sol["lb"] == before.loc["SOL", "lb"]
    assert "failed SOL in its walk-forward" in sol["reason"]


def test_the_refused_assets_of_a_champion_its_gate_refused() -> None:
    rows = pd.DataFrame({
        "asset": ["BTC", "ETH", "NEW", "BNB"], "acceptable": [True, False, False, False],
        "unproven": [False, False, True, False],
        "why_not": ["", "stress bad debt 0.046 > budget 0", "too few days", None]})
    refused = not_acceptable(rows)
    # the gate's require_coverage refuses on these; an unproven (young) asset is not one
    assert refused == {"BNB": "", "ETH": "stress bad debt 0.046 > budget 0"}
    bundle = {"not_acceptable": refused}
    refusal = {"gate.passed": "false", "gate.reason": "first version promoted ..."}
    why = gate_refused(bundle, refusal, "3", ["BTC", "ETH", "BNB", "SOL"])
    assert list(why) == ["ETH", "BNB"]
    assert "version 3 is champion although its gate refused it" in why["ETH"]
    assert "(stress bad debt 0.046 > budget 0)" in why["ETH"] and "()" not in why["BNB"]
    # a champion that passed its gate (or one tagged before the tag existed) is served as is
    assert gate_refused(bundle, {"gate.passed": "true"}, "3", ["ETH"]) == {}
    assert gate_refused(bundle, {}, "3", ["ETH"]) == {}
    assert gate_refused({}, refusal, "3", ["ETH"]) == {}  # a bundle without the record
    # what the serve says: frozen now, or already frozen for another reason (not published live)
    frozen_now = gate_refused(bundle, refusal, "3", ["ETH", "SOL"])
    assert refused_note(bundle, frozen_now) == ("frozen where its policy was not acceptable: "
                                                "ETH; not acceptable and already frozen: BNB")
    assert refused_note({}, {}) == "no asset was refused on its own, none is frozen for it"


def test_a_champion_its_gate_refused_serves_its_refused_assets_frozen(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The champion's own bundle registered again with SOL not acceptable and promoted as a
    first version is (registry.promote(first=True)): SOL is frozen, BTC served, the manifest
    and the serve's notes say that the gate refused the version."""
    env = {"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_refused"}
    d28 = dt.date(2025, 6, 28)
    assert invoke(project, "serve", "--as-of", str(d28), "--data-dir", "market", "--quiet",
                  env=env).exit_code == 0
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    uri = tracking_uri(project / "mlruns")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = "volmargin-policy"
    champion = mlflow.MlflowClient().get_model_version_by_alias(name, registry.CHAMPION)
    local = mlflow.artifacts.download_artifacts(champion.source)
    bundle = json.loads(next(Path(local).rglob("policy_bundle.json")).read_text())
    bundle["not_acceptable"] = {"SOL": "stress bad debt 0.05 > budget 0"}
    mlflow.set_experiment("volmargin")
    with mlflow.start_run(run_name="register-refused"):
        info = registry.log_policy_model(bundle)
    tags = {k: v for k, v in champion.tags.items()
            if not k.startswith(("integrity.", "gate."))}
    tags["code_version"] = "git:" + "0" * 40  # fitted by other code than the serving one
    version = registry.register(info.model_uri, name, tags)
    reason = "first version promoted with its gate result: refused: not acceptable on SOL"
    assert registry.promote(name, version, False, reason, first=True,
                            judged_against=registry.champion_version(name))
    assert registry.champion_version(name) == version
    assert registry.version_tag(name, version, "gate.passed") == "false"  # what the gate said
    assert registry.version_tag(name, version, "gate.promoted_anyway") == "first version"
    result = invoke(project, "serve", "--as-of", str(D29), "--data-dir", "market", env=env)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert f"version {version} serves as @champion although its gate refused it" in flat
    assert "frozen where its policy was not acceptable: SOL" in flat
    out = project / "out_refused" / "forecasts" / f"asof={D29}"
    assert read_manifest(out)["metadata"]["gate_refused"] == reason
    # registered by other code than the serving one: said beside the serving code's version
    manifest = read_manifest(out)
    assert manifest["metadata"]["code_version_registered"] == "git:" + "0" * 40
    assert manifest["code_version"] == code_version()
    before = read_partition(project / "out_refused" / "forecasts" / f"asof={d28}")
    today = read_partition(out).set_index("asset")
    sol, btc = today.loc["SOL"], today.loc["BTC"]
    assert sol["flag_fallback"] and not sol["flag_stale"] and sol["ltv"] == 0.0
    assert sol["lt"] == before.set_index("asset").loc["SOL", "lt"]  # held, never lowered
    assert "its gate refused it" in sol["reason"] and "budget 0" in sol["reason"]
    assert not btc["flag_fallback"] and btc["ltv"] > 0.0


def test_a_failed_file_names_its_asset_whatever_the_prefix_case() -> None:
    assert failed_assets({"crypto/daily/SOL.csv.gz": "no rows", "iv/DVOL_ETH.csv.gz": "x",
                          "iv/dvol_BTC.csv.gz": "unknown_format"}) == {
        "SOL": "data file crypto/daily/SOL.csv.gz failed to load",
        "ETH": "data file iv/DVOL_ETH.csv.gz failed to load",
        "BTC": "data file iv/dvol_BTC.csv.gz failed to load"}

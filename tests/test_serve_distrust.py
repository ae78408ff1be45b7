"""Assets the model's forecaster failed in the walk-forward it was selected on are served
the fail-safe, whatever a day's forecast looks like: the run records them in the bundle
(``failed_assets``) and the serve freezes them, flagged with the reason but not stale."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from pipelines.steps import failed_in_walk_forward
from serving.publish import read_partition
from serving.serve import unvalidated
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

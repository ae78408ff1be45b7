"""One choice over both kinds: with ``tail.in_run`` the run registers the tail-driven policy
when the choice's rule ranks it first, and the batch job serves it (MMF's tail from the tail
model). A small real slice through the CLI, as ``test_end_to_end``."""

from __future__ import annotations

import datetime as dt
import json

import mlflow
import pytest
from mlflow import MlflowClient

from configs.schema import FeaturesConfig
from features.build import build_panel
from features.loaders import load_market
from features.schema import feature_view
from serving.ops.tracking import tracking_uri
from serving.publish import read_partition
from serving.tail_source import TailSource
from tests.conftest import write_slice
from tests.project import invoke_in, shrunken_config, write_config

AS_OF = "2025-06-30"


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A 2-asset slice where the rule must rank a tail-driven candidate first: every asset is
    unproven on a five-month selection period (fewer than 250 days), so capital decides, and
    the variance-driven candidates are at 99.9% against the tail-driven ones at 97.5-99%.
    No knob is swept (``frontier_knobs: {}``): the first choice of each kind stands."""
    root = tmp_path_factory.mktemp("tail_champion")
    _project(root)
    return root, invoke_in(root, ["run", "--data-dir", "market", "--quiet"])


def _project(root):
    write_slice(root / "market", ["BTC", "SOL"], "2023-07-01", AS_OF)
    cfg = shrunken_config()  # the recipe of test_end_to_end
    cfg["models"]["enabled"] = ["garch11_t", "ewma94"]
    cfg["policy"]["stress_floor_weight"] = 0.0
    cfg["evaluation"].update(grid={"policy.confidence": [0.999]}, frontier_knobs={},
                             choose_knobs=True, comparator_levels=[], budget="none")
    cfg["tail"].update(in_run=True, enabled=["fhs_ewma", "hs"], levels=[0.975, 0.99],
                       refit_every=120, min_train_days=300)
    write_config(root, cfg)


def test_the_run_registers_and_serves_the_tail_driven_policy_its_rule_ranks_first(ran):
    root, result = ran
    assert result.exit_code == 0, result.output
    frozen = json.loads((root / "outputs" / "tail" / "policy_frozen.json").read_text())
    tail, alias = frozen["policy"], frozen["tail_model"]
    assert tail == f"tail:{alias}@confidence=0.975" and alias in ("fhs_ewma", "hs")
    assert frozen["one_choice"] is True and frozen["across_kinds"]["rule_prefers"] == tail
    variance = json.loads((root / "outputs" / "backtest" / "frozen.json").read_text())["policy"]
    assert variance.startswith("policy:") and variance.endswith("confidence=0.999")
    assert f"({tail}): promoted to @champion" in result.output
    assert f"Registered instead: {tail}, the tail-driven policy the same rule ranks first" \
        in " ".join(result.output.split())
    assert "tail.in_run: true" not in result.output  # no "unless ..." warning: it registered

    mlflow.set_tracking_uri(tracking_uri(str(root / "mlruns")))
    client = MlflowClient()
    champion = client.get_model_version_by_alias("volmargin-policy", "champion")
    assert champion.tags["policy"] == tail
    assert champion.tags["tail_model"] == alias and champion.tags["forecaster"] == "ewma94"

    model = mlflow.pyfunc.load_model(f"models:/volmargin-policy/{champion.version}")
    bundle = model.unwrap_python_model().bundle
    assert bundle["tail"]["model"] == alias and bundle["tail"]["level"] == 0.975
    assert bundle["fit_cutoff"] == AS_OF
    assert bundle["config"]["policy"]["confidence"] == 0.975  # the frozen level, applied
    # an unconditional tail (historical simulation) is served, as replayed, without the
    # σ-rescaled anti-procyclical terms (pipelines.policy_eval.tail_driven.UNCONDITIONAL)
    apc = bundle["config"]["policy"]["apc"]
    assert (apc["stress_enabled"], apc["floor_enabled"]) == ((False, False) if alias == "hs"
                                                             else (True, True))

    # the published MMF's tail is the bundled tail model's forecast of the as-of
    part = root / "outputs" / "forecasts" / f"asof={AS_OF}"
    meta = json.loads((part / "manifest.json").read_text())["metadata"]
    assert (meta["policy"], meta["tail_model"], meta["forecaster"]) == (tail, alias, "ewma94")
    # the settings the protocol froze (the level; hs: its APC terms) are not "not applied"
    assert not any("apc" in key or "confidence" in key
                   for key in meta.get("config_not_applied", {}))
    assert meta["frozen_settings"]["policy.confidence"] == 0.975
    if alias == "hs":
        assert meta["frozen_settings"]["policy.apc.stress_enabled"] is False
    params = read_partition(part).set_index("asset")
    assert list(params.index) == ["BTC", "SOL"] and not params["flag_fallback"].any()
    panel = feature_view(build_panel(load_market(root / "market", ["BTC", "SOL"],
                                                 dt.date.fromisoformat(AS_OF)),
                                     FeaturesConfig()))
    source = TailSource.of(bundle)
    want, errors = source.values(panel, source.fit_cutoff, ["BTC", "SOL"])
    assert errors == {} and source.fitted == {"BTC", "SOL"}
    for asset in ("BTC", "SOL"):
        var, es = want[asset]
        assert params.at[asset, "loss_var"] == pytest.approx(var, rel=1e-9)
        assert params.at[asset, "loss_es"] == pytest.approx(es, rel=1e-9)
        assert "FHS tail" not in params.at[asset, "reason"]
    assert params.at["SOL", "loss_es"] > params.at["BTC", "loss_es"]  # the riskier asset
    # the serve builds only the columns the bundle reads (features.window.serve_columns) and
    # publishes what the policy computes on the whole panel
    from features.window import serve_columns
    from serving.apply import policy_frame

    columns = serve_columns(bundle)
    assert columns is not None and {"worst_loss_long", "ret_1d"} <= columns
    assert len(columns) < len(panel.columns) / 2
    whole = policy_frame(model.unwrap_python_model().forecaster, bundle, panel,
                         dt.date.fromisoformat(AS_OF)).set_index("asset")
    for name in ("mmf", "imf", "lt", "ltv", "lb", "sigma_1d", "target_mmf"):
        assert params[name].to_numpy() == pytest.approx(whole[name].to_numpy(), rel=1e-12), name


def test_a_later_run_without_the_tail_step_says_it_could_not_compare_capital(ran):
    """The champion is the tail-driven version; a run without the tail step (the default)
    registers a variance-driven challenger, which the gate cannot compare with a champion
    that was not replayed: it refuses it, and the reason says why and which policy."""
    root, _ = ran
    mlflow.set_tracking_uri(tracking_uri(str(root / "mlruns")))
    client = MlflowClient()
    before = client.get_model_version_by_alias("volmargin-policy", "champion")
    # the coverage test on (the slice's config has it off): the challenger is refused on
    # it, so the champion, and the partition it published for the as-of, stay
    result = invoke_in(root, ["run", "--data-dir", "market", "--quiet"],
                       VOLMARGIN__TAIL__IN_RUN="false",
                       VOLMARGIN__REGISTRY__GATE__REQUIRE_COVERAGE="true")
    assert result.exit_code == 0, result.output
    versions = client.search_model_versions("name='volmargin-policy'")
    latest = max(versions, key=lambda v: int(v.version))
    assert int(latest.version) == int(before.version) + 1
    assert latest.tags["policy"].startswith("policy:") and "tail_model" not in latest.tags
    assert ("capital not compared with the champion: " + before.tags["policy"]
            + " was not replayed in this run") in latest.tags["gate.reason"]
    assert latest.tags["gate.reason"].startswith("refused: ")
    assert "the champion was not replayed in this run" in latest.tags["gate.reason"]
    after = client.get_model_version_by_alias("volmargin-policy", "champion")
    assert after.version == before.version


def test_a_tail_step_that_fails_is_listed_and_the_variance_driven_choice_is_served(
        tmp_path, monkeypatch):
    """The tail step inside the run fails as a whole (here every call raises), and so does the
    stress after the serve: the run goes on, registers and serves the variance-driven choice,
    lists both failures and exits 4 ("completed with failures"), instead of ending with
    nothing registered (the tail) or saying nothing (the stress)."""
    import pipelines.stress.job as stress_job
    import pipelines.tail_step

    def broken(*args, **kwargs):
        raise KeyError("every tail model failed")  # whatever it raises

    def no_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(pipelines.tail_step, "step_tail", broken)
    monkeypatch.setattr(stress_job, "run_stress", no_disk)  # and the stress after the serve
    root = tmp_path / "tail_fails"
    _project(root)
    result = invoke_in(root, ["run", "--data-dir", "market", "--quiet"])
    assert result.exit_code == 4, result.output
    flat = " ".join(result.output.split())
    assert ("tail step failed: KeyError: 'every tail model failed'; the variance-driven "
            "choice was registered without it") in flat
    assert f"stress of {AS_OF} skipped: OSError: No space left on device" in flat
    variance = json.loads((root / "outputs" / "backtest" / "frozen.json").read_text())["policy"]
    mlflow.set_tracking_uri(tracking_uri(str(root / "mlruns")))
    mlflow.set_registry_uri(tracking_uri(str(root / "mlruns")))
    champion = MlflowClient().get_model_version_by_alias("volmargin-policy", "champion")
    assert champion.tags["policy"] == variance
    params = read_partition(root / "outputs" / "forecasts" / f"asof={AS_OF}")
    assert set(params["asset"]) == {"BTC", "SOL"}

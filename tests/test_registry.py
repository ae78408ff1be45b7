"""Registry governance: challenger → gate → champion, alias history, version_at, rollback."""

import datetime as dt
import platform
import re
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from configs.schema import GateConfig
from pipelines.selection.gate import gate
from serving.ops import registry
from serving.ops.tracking import setup

NAME = "volmargin-policy"


def _summary(capital: float, passing: bool = True, red: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"asset": ["BTC", "ETH"], "acceptable": [passing, True],
                         "red_windows": [red, 0], "capital": [capital, capital]})


def test_gate_passes_a_covering_cheaper_challenger():
    d = gate(_summary(0.10), _summary(0.11), GateConfig())
    assert d.passed and "acceptable on all 2 assets" in d.reason and "-9.1%" in d.reason


def test_gate_refuses_a_challenger_that_fails_coverage():
    d = gate(_summary(0.05, passing=False), _summary(0.10), GateConfig())
    assert not d.passed and "not acceptable on BTC" in d.reason


def test_gate_refuses_red_windows_and_capital_worse_than_allowed():
    assert not gate(_summary(0.10, red=1), None, GateConfig()).passed
    d = gate(_summary(0.12), _summary(0.10), GateConfig(max_capital_increase=0.05))
    assert not d.passed and "+20.0%" in d.reason


@pytest.fixture
def store(isolated_config):
    setup(isolated_config)
    yield isolated_config
    mlflow.set_tracking_uri("")


def _register(tag: str) -> str:
    bundle = {"format": 2, "forecaster": {"alias": "garch11_t", "kind": "garch",
                                          "config": {"dist": "t"}, "params": {}},
              "fit_cutoff": "2025-01-01", "config": {}, "forecasts": {}}
    with mlflow.start_run():
        info = registry.log_policy_model(bundle)
    return registry.register(info.model_uri, NAME, {"forecaster": tag})


def test_aliases_history_and_rollback(store):
    v1 = _register("garch11_t")
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    registry.set_alias(NAME, registry.CHAMPION, v1, "first", at=t0)
    v2 = _register("mlp_har")
    registry.set_alias(NAME, registry.CHALLENGER, v2, "new", at=t0 + dt.timedelta(days=5))
    assert not registry.promote(NAME, v2, False, "refused: coverage fails for BTC",
                                judged_against=v1)
    assert registry.champion_version(NAME) == v1  # a refused challenger never becomes champion
    assert registry.version_tag(NAME, v2, "gate.reason").startswith("refused")
    registry.set_alias(NAME, registry.CHAMPION, v2, "passed", at=t0 + dt.timedelta(days=10))
    registry.rollback(NAME, v1, "v2 misbehaved")
    history = registry.alias_history(NAME)
    assert [m["version"] for m in history] == [v1, v2, v1]
    assert history[-1]["reason"].startswith("rollback")
    assert registry.version_at(NAME, t0 + dt.timedelta(days=7)) == v1
    assert registry.version_at(NAME, t0 + dt.timedelta(days=11)) == v2
    assert registry.version_at(NAME, t0 - dt.timedelta(days=1)) is None
    assert registry.champion_version(NAME) == v1


def test_a_move_made_outside_volmargin_is_recorded_when_seen(store):
    """The MLflow UI moves an alias without the history: reconcile_alias records the move,
    dated when it is seen, so version_at answers from then on; in step, it records nothing."""
    v1, v2 = _register("garch11_t"), _register("mlp_har")
    registry.set_alias(NAME, registry.CHAMPION, v1, "first")
    assert registry.reconcile_alias(NAME) is None  # history and alias agree
    MlflowClient().set_registered_model_alias(NAME, registry.CHAMPION, v2)  # the UI's move
    note = registry.reconcile_alias(NAME)
    assert note is not None and f"from {v1} to {v2}" in note
    history = registry.alias_history(NAME)
    assert [m["version"] for m in history] == [v1, v2]
    assert history[-1]["reason"].startswith("moved outside volmargin")
    assert registry.version_at(NAME, dt.datetime.now(dt.UTC)) == v2
    assert registry.reconcile_alias(NAME) is None  # recorded once


def test_a_version_judged_against_a_champion_that_moved_meanwhile_is_not_promoted(store):
    """Two runs judged against v1: the first promotes v2; the second, whose gate passed
    against v1, is not promoted over v2 (compare-and-set), and its reason says why."""
    v1, v2, v3 = _register("garch11_t"), _register("mlp_har"), _register("har_rv")
    registry.set_alias(NAME, registry.CHAMPION, v1, "first")
    assert registry.promote(NAME, v2, True, "passed: gate", judged_against=v1)
    refused = registry.promote(NAME, v3, True, "passed: gate", judged_against=v1)
    assert not refused and refused.champion_moved and not refused.passed
    assert refused.reason.startswith(registry.CHAMPION_MOVED)
    assert registry.champion_version(NAME) == v2
    assert registry.version_tag(NAME, v3, "gate.passed") == "false"
    assert registry.version_tag(NAME, v3, "gate.reason").startswith(
        f"refused: @champion moved from {v1} to {v2} while this version was judged")
    # a first version judged against no champion, one having appeared meanwhile: not promoted
    v4 = _register("ewma94")
    assert not registry.promote(NAME, v4, False, "refused: x", first=True, judged_against=None)
    assert registry.version_tag(NAME, v4, "gate.promoted_anyway") is None
    assert [m["version"] for m in registry.alias_history(NAME)] == [v1, v2]


def test_alias_moves_wait_for_the_alias_lock_of_another_process(store, monkeypatch):
    """While another process holds the lock beside the store, a move here waits (and, past
    the timeout, gives up without moving anything)."""
    import subprocess
    import sys
    import textwrap

    import filelock

    v1 = _register("garch11_t")
    lock = str(Path(mlflow.get_tracking_uri().removeprefix("sqlite:///")).parent
               / ".aliases.lock")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, filelock
        with filelock.FileLock({lock!r}):
            print("held", flush=True)
            time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(registry, "ALIAS_LOCK_TIMEOUT_S", 0.3)
        with pytest.raises(filelock.Timeout):
            registry.set_alias(NAME, registry.CHAMPION, v1, "blocked")
        assert registry.champion_version(NAME) is None and registry.alias_history(NAME) == []
    finally:
        holder.kill()
        holder.wait()
    registry.set_alias(NAME, registry.CHAMPION, v1, "after")  # released: it goes through
    assert registry.champion_version(NAME) == v1


def test_rollback_to_a_missing_version_is_an_error(store):
    _register("garch11_t")
    with pytest.raises(mlflow.exceptions.MlflowException):
        registry.rollback(NAME, "99", "typo")


def test_missing_champion_is_a_clear_error(store):
    with pytest.raises(registry.ChampionMissingError, match="no @champion"):
        registry.champion_uri(NAME)


def test_a_bare_date_means_the_end_of_that_utc_day():
    assert registry.parse_when("2025-07-01") == dt.datetime(2025, 7, 1, 23, 59, 59, 999999)
    assert registry.parse_when("2025-07-01T12:00:00") == dt.datetime(2025, 7, 1, 12)


def test_environment_mismatches_name_what_the_stored_model_needs(store, tmp_path):
    bundle = {"format": 2, "forecaster": {"alias": "har_rv"}, "fit_cutoff": "2025-01-01",
              "config": {}, "forecasts": {}}
    with mlflow.start_run():
        info = registry.log_policy_model(bundle)
    stored = registry.local_path(mlflow.MlflowClient().get_logged_model(
        info.model_uri.removeprefix("models:/")).artifact_location)
    assert registry.environment_mismatches(stored) == []  # logged in this environment
    pins = (stored / "requirements.txt").read_text().splitlines()
    assert any(p.startswith("pandas==") for p in pins)
    copy = tmp_path / "model"
    shutil.copytree(stored, copy)
    (copy / "requirements.txt").write_text("\n".join(
        [p if not p.startswith("pandas==") else "pandas==0.0.1" for p in pins]
        + ["# a comment", "", "no-such-distribution-xyz==1.0", "numpy>=1.0",
           "scipy==0.1; python_version < '3'"]))  # a marker that does not apply
    meta = (copy / "MLmodel").read_text()
    (copy / "MLmodel").write_text(re.sub(r"python_version: \S+", "python_version: 2.7.18",
                                         meta))
    found = registry.environment_mismatches(copy)
    assert found == [
        f"pandas==0.0.1 required by the model, {pd.__version__} installed",
        "no-such-distribution-xyz==1.0 required by the model, not installed",
        f"model logged under Python 2.7.18, running {platform.python_version()}"]
    (copy / "requirements.txt").unlink()
    assert "environment not checked" in registry.environment_mismatches(copy)[0]

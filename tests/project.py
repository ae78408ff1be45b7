"""A small project with a registered @champion, built once per test session and copied.

``volmargin retrain --skip-ingest`` runs once on a 2-asset slice of the real data (BTC, SOL,
2023-07-01 → 2025-06-30) with a shrunken config (garch11_t only, short backtest), the same
recipe as ``tests/test_end_to_end.py``. Test modules that serve, retrain again or start the
UI take a *copy* (:func:`copy_project`) so that what one module publishes or registers never
changes what another sees. MLflow stores absolute artifact locations; the copy's first
``setup`` rewrites them to the copy's own ``mlruns/artifacts`` (:func:`serving.ops.tracking.
relocate`), so a copy never reads or writes the original's.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from pipelines.cli import app
from tests.conftest import REPO, write_slice

AS_OF = "2025-06-30"
ASSETS = ["BTC", "SOL"]


@dataclass(frozen=True)
class Project:
    root: Path
    retrain: Result  # the CLI result of the retrain that registered the champion


_BUILT: dict[str, Project] = {}


def shrunken_config() -> dict:
    cfg = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    cfg["backtest"].update(oos_start="2024-09-01", refit_every=120, min_train_days=300)
    cfg["models"]["enabled"] = ["garch11_t"]
    cfg["policy"]["fhs_min_obs"] = 60
    cfg["evaluation"].update(selection_start="2024-09-01", selection_end="2025-01-31",
                             evaluation_start="2025-02-01", evaluation_end=AS_OF,
                             grid={"policy.confidence": [0.975]},
                             # the served settings are the configured ones: no knob moves, so
                             # serving logs no config drift (the choice: tests/test_protocol.py)
                             choose_knobs=False)
    # five months of evaluation cannot prove a policy acceptable (it fails a test on both
    # assets): without this the store's first version would be promoted refused and serve
    # both assets frozen (serving.serve.gate_refused), and the tests that serve it read
    # the policy's parameters (tests/test_serve_distrust.py serves a refused champion)
    cfg["registry"]["gate"]["require_coverage"] = False
    return cfg


def write_config(root: Path, cfg: dict) -> None:
    """``cfg`` as the project's ``configs/default.yaml``."""
    (root / "configs").mkdir(exist_ok=True)
    (root / "configs" / "default.yaml").write_text(yaml.safe_dump(cfg))


def invoke_in(root: Path, args: list[str], **env: str) -> Result:
    """``volmargin ARGS`` run from the project directory ``root`` as a user would (no pickle
    allowed when a model loads; ``env`` set for the call only)."""
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(root)
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        for key, value in env.items():
            mp.setenv(key, value)
        return CliRunner().invoke(app, args)
    finally:
        mp.undo()


def champion_project(factory: pytest.TempPathFactory) -> Project:
    """The session's pristine project: built on first use, then returned as is."""
    if "project" not in _BUILT:
        root = factory.mktemp("champion-project")
        write_slice(root / "market", ASSETS, "2023-07-01", AS_OF)
        write_config(root, shrunken_config())
        result = invoke_in(root, ["retrain", "--data-dir", "market", "--as-of", AS_OF,
                                  "--skip-ingest"])
        assert result.exit_code == 0, result.output
        _BUILT["project"] = Project(root, result)
    return _BUILT["project"]


def copy_project(factory: pytest.TempPathFactory, name: str) -> Path:
    """A private copy of the champion project (config, data, MLflow store, outputs)."""
    source = champion_project(factory).root
    dest = factory.mktemp(name)
    for part in ("configs", "market", "mlruns", "outputs"):
        if (source / part).exists():
            shutil.copytree(source / part, dest / part)
    return dest

"""What ``kill -9`` and moves leave behind, and how the next start deals with it: runs left
RUNNING, temporary files and orphan feature panels, versions never aliased, a deleted or
changed model artifact, a project moved to another directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import Result
from mlflow import MlflowClient
from typer.testing import CliRunner

from configs.schema import Config
from pipelines.cli import app
from serving.layout import ORPHAN_AGE_S, sweep_outputs
from serving.ops.registry import INTEGRITY_FILES, ORPHAN_TAG
from serving.ops.tracking import ENDED_TAG, setup, tracking_uri
from serving.publish import read_manifest, read_partition
from tests.conftest import REPO
from tests.project import AS_OF, copy_project


def invoke(root: Path, *args: str) -> Result:
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(root)
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        return CliRunner().invoke(app, list(args))
    finally:
        mp.undo()


def killed(script: str, cwd: Path) -> None:
    """Run ``script`` in a fresh interpreter; it must end itself with ``KILL()`` (SIGKILL)."""
    code = ("import os, signal\nKILL = lambda: os.kill(os.getpid(), signal.SIGKILL)\n"
            + textwrap.dedent(script))
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == -9, done.stderr


def test_runs_of_a_killed_process_are_failed_and_its_unaliased_version_tagged(
        tmp_path: Path) -> None:
    killed(f"""
        from configs.schema import Config
        import mlflow
        from serving.ops import registry
        from serving.ops.tracking import log_context, setup
        cfg = Config().with_overrides({{"paths.mlruns_dir": {str(tmp_path / 'mlruns')!r}}})
        setup(cfg)
        with mlflow.start_run(run_name="register"):
            log_context(cfg, "register")
            info = registry.log_policy_model({{"format": 0}})
            registry.register(info.model_uri, cfg.registry.model_name, {{"forecaster": "x"}})
            with mlflow.start_run(run_name="child", nested=True):
                log_context(cfg, "register")
                KILL()
    """, tmp_path)
    cfg = Config().with_overrides({"paths.mlruns_dir": str(tmp_path / "mlruns")})
    client = MlflowClient(tracking_uri(cfg.paths.mlruns_dir), tracking_uri(cfg.paths.mlruns_dir))
    exp_id = setup(cfg)
    runs = client.search_runs([exp_id])
    assert len(runs) == 2
    for run in runs:  # the parent and its nested child
        assert run.info.status == "FAILED"
        assert "ended without closing the run" in run.data.tags[ENDED_TAG]
    version = client.get_model_version(cfg.registry.model_name, "1")
    assert "never aliased" in version.tags[ORPHAN_TAG]
    assert set(INTEGRITY_FILES) <= set(version.tags)  # hashes recorded at registration
    # a live run of this very process is left alone
    import mlflow
    with mlflow.start_run(run_name="alive") as live:
        setup(cfg)
        assert client.get_run(live.info.run_id).info.status == "RUNNING"


def test_sweep_removes_only_our_dead_temporaries_and_orphan_panels(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    features, retrain = tmp_path / "features", tmp_path / "retrain"
    features.mkdir()
    retrain.mkdir()
    files = {
        f"features/.panel-0123456789abcdef.parquet.tmp-{dead.pid}": True,
        f"features/.panel-0123456789abcdef.json.tmp-{os.getpid()}": False,  # alive
        "features/panel-0123456789abcdef.parquet": True,    # no sidecar, old
        "features/panel-fedcba9876543210.parquet": False,   # has its sidecar
        "features/panel-fedcba9876543210.json": False,
        "features/panel-1111111111111111.parquet": False,   # no sidecar, just written
        "features/notes.parquet": False,                    # not ours
        f"retrain/.asof=2025-06-30.json.tmp-{dead.pid}": True,
        "retrain/asof=2025-06-30.json": False,
    }
    now = time.time()
    for name in files:
        (tmp_path / name).write_text("x")
        age = 0 if "1111" in name else 2 * ORPHAN_AGE_S
        os.utime(tmp_path / name, (now - age, now - age))
    removed = sweep_outputs(tmp_path, now=now)
    assert sorted(removed) == sorted(name for name, gone in files.items() if gone)
    for name, gone in files.items():
        assert (tmp_path / name).exists() != gone, name


@pytest.fixture
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory, "leftovers")


def stored_model(project: Path) -> Path:
    (model,) = (project / "mlruns" / "artifacts" / "models").glob("m-*")
    return model / "artifacts"


def test_a_deleted_champion_artifact_names_the_version_and_path(project: Path) -> None:
    path = stored_model(project)
    shutil.rmtree(path)
    result = invoke(project, "serve", "--as-of", AS_OF, "--data-dir", "market")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "version 1 of 'volmargin-policy': its stored model is missing" in text
    assert str(path) in text.replace(" ", "") or path.name in text
    assert "No such artifact" not in text and "Traceback" not in text


def serve_a_changed_model(project: Path) -> tuple[Result, str]:
    """Append a line to the stored policy code (it would exit if imported), then serve
    AS_OF: the result and its output on one line."""
    code = stored_model(project) / "policy_model.py"
    code.write_text(code.read_text() + "\nraise SystemExit('imported')\n")
    result = invoke(project, "serve", "--as-of", AS_OF, "--data-dir", "market")
    return result, " ".join(result.output.split())


def test_a_changed_policy_model_file_is_refused_before_it_is_imported(project: Path) -> None:
    result, text = serve_a_changed_model(project)
    assert result.exit_code == 1
    assert "policy_model.py has sha256" in text and "refusing to load it" in text
    assert not (project / "outputs" / "forecasts" / f"asof={AS_OF}").exists()


def test_a_model_that_cannot_be_served_freezes_every_asset_on_the_parameters_in_force(
        project: Path) -> None:
    """The fail-safe's "missing model": parameters were published the day before, then the
    stored model is changed; the next day is published with every asset frozen on them
    (no new borrowing on parameters nobody can recompute), and the run still fails."""
    d29 = "2025-06-29"
    assert invoke(project, "serve", "--as-of", d29, "--data-dir", "market").exit_code == 0
    before = read_partition(project / "outputs" / "forecasts" / f"asof={d29}").set_index("asset")
    result, text = serve_a_changed_model(project)
    assert result.exit_code == 1
    assert "refusing to load it" in text and "with every asset frozen" in text
    partition = project / "outputs" / "forecasts" / f"asof={AS_OF}"
    after = read_partition(partition).set_index("asset")
    assert set(after.index) == set(before.index)
    assert (after["ltv"] == 0.0).all() and (after["imf"] == 1.0).all()
    assert (after["lt"] == before["lt"]).all() and (after["lb"] == before["lb"]).all()
    assert after["flag_fallback"].all() and not after["flag_stale"].any()
    assert after["reason"].str.contains("fail-safe: model unavailable: version 1").all()
    assert (after["model_version"] == before["model_version"]).all()
    manifest = read_manifest(partition)["metadata"]
    assert "refusing to load it" in manifest["model_unavailable"]
    # the day is published: the same failure again writes nothing new
    again = invoke(project, "serve", "--as-of", AS_OF, "--data-dir", "market")
    assert again.exit_code == 1 and "with every asset frozen" not in " ".join(
        again.output.split())


def test_a_moved_project_serves_from_its_own_artifacts(
        project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    moved = tmp_path_factory.mktemp("moved") / "project"
    shutil.move(str(project), moved)  # the old directory no longer exists
    result = invoke(moved, "serve", "--as-of", AS_OF, "--data-dir", "market")
    assert result.exit_code == 0, result.output
    assert not project.exists()  # nothing was written to the old place
    client = MlflowClient(tracking_uri(moved / "mlruns"))
    exp = client.get_experiment_by_name("volmargin")
    assert exp.artifact_location == (moved / "mlruns" / "artifacts").resolve().as_uri()
    serve_run = client.search_runs([exp.experiment_id], "tags.`volmargin.step` = 'serve'")[0]
    assert serve_run.info.artifact_uri.startswith(exp.artifact_location)


def test_integrity_covers_mlmodel_and_its_shape(tmp_path: Path) -> None:
    """``MLmodel`` names the code file the loader runs and what goes on the import path: a
    changed one is refused like a changed ``policy_model.py``; one pointing elsewhere is
    refused whatever the tags say (a version registered before MLmodel was hashed)."""
    from types import SimpleNamespace

    from serving.ops.registry import ModelIntegrityError, file_sha256, verify_integrity

    model = tmp_path / "model"
    (model / "artifacts").mkdir(parents=True)
    (model / "policy_model.py").write_text("x = 1\n")
    (model / "artifacts" / "policy_bundle.json").write_text("{}")
    (model / "evil.py").write_text("raise SystemExit('imported')\n")
    good = ("flavors:\n  python_function:\n    artifacts:\n      bundle:\n"
            "        path: artifacts/policy_bundle.json\n        uri: /tmp/b.json\n"
            "    code: null\n    loader_module: mlflow.pyfunc.loaders.code_model\n"
            "    model_code_path: /src/serving/policy_model.py\n")
    (model / "MLmodel").write_text(good)
    tags = {tag: file_sha256(model / rel) for tag, rel in INTEGRITY_FILES.items()}
    mv = SimpleNamespace(version="1", name="volmargin-policy", tags=tags)
    assert verify_integrity(mv, model) == []
    old = SimpleNamespace(version="1", name="volmargin-policy",
                          tags={k: v for k, v in tags.items() if "mlmodel" not in k})
    assert verify_integrity(old, model) == ["integrity.mlmodel.sha256"]  # said, not verified
    evil = good.replace("/src/serving/policy_model.py", "evil.py")
    for text, said in ((evil, "has model_code_path 'evil.py'"),
                       (good.replace("code: null", "code: ."), "to the import path"),
                       (good.replace("mlflow.pyfunc.loaders.code_model", "evil"),
                        "has loader_module 'evil'"),
                       ("flavors: {}\n", "cannot be read as a pyfunc model")):
        (model / "MLmodel").write_text(text)
        for version in (mv, old):
            with pytest.raises(ModelIntegrityError, match=said):
                verify_integrity(version, model)
    # the same shape with one byte changed: the recorded hash refuses it
    (model / "MLmodel").write_text(good + "# edited\n")
    with pytest.raises(ModelIntegrityError, match="MLmodel has sha256"):
        verify_integrity(mv, model)
    assert verify_integrity(old, model) == ["integrity.mlmodel.sha256"]


def test_a_version_whose_bundled_config_this_code_refuses_freezes_the_assets(
        project: Path) -> None:
    """A version registered by older code with a setting this code refuses (here
    ``features.macro_lag_days: 0``, now >= 1): its files are intact (hashes as registered),
    but its config does not validate. That is a model that cannot be served — every asset
    frozen on the parameters in force, exit 1 — not a traceback after the load."""
    import json

    from serving.ops.registry import file_sha256
    from serving.ops.tracking import tracking_uri

    d29 = "2025-06-29"
    assert invoke(project, "serve", "--as-of", d29, "--data-dir", "market").exit_code == 0
    bundle_path = stored_model(project) / "artifacts" / "policy_bundle.json"
    bundle = json.loads(bundle_path.read_text())
    bundle["config"]["features"]["macro_lag_days"] = 0
    bundle_path.write_text(json.dumps(bundle))
    client = MlflowClient(tracking_uri(project / "mlruns"), tracking_uri(project / "mlruns"))
    client.set_model_version_tag("volmargin-policy", "1", "integrity.policy_bundle.sha256",
                                 file_sha256(bundle_path))  # as its registration wrote it
    result = invoke(project, "serve", "--as-of", AS_OF, "--data-dir", "market")
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in text
    assert "its bundled config does not validate under this code" in text
    assert "macro_lag_days" in text and "with every asset frozen" in text
    after = read_partition(project / "outputs" / "forecasts" / f"asof={AS_OF}")
    assert (after["ltv"] == 0.0).all() and after["flag_fallback"].all()

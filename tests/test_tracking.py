"""The MLflow experiment opens on the training runs, not on the GenAI overview."""

from __future__ import annotations

import mlflow

from configs.schema import Config
from serving.ops.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, setup


def _config(tmp_path) -> Config:
    return Config.model_validate({"paths": {"mlruns_dir": str(tmp_path / "mlruns"),
                                            "outputs_dir": str(tmp_path / "outputs")}})


def test_experiment_is_tagged_as_model_development(tmp_path):
    exp_id = setup(_config(tmp_path))
    tags = mlflow.MlflowClient().get_experiment(exp_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"


def test_an_existing_untagged_experiment_gets_the_tag(tmp_path):
    cfg = _config(tmp_path)
    exp_id = setup(cfg)
    client = mlflow.MlflowClient()
    client.delete_experiment_tag(exp_id, EXPERIMENT_KIND_TAG)
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(exp_id).tags
    assert setup(cfg) == exp_id
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_code_version_names_the_checkout_commit():
    """Outputs name the git commit of this checkout (the module sits two levels below it)."""
    import subprocess

    from serving.ops.version import _CHECKOUT, code_version
    from tests.conftest import REPO

    assert _CHECKOUT == REPO
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    code_version.cache_clear()  # cached per process: another test may have asked earlier
    assert code_version().startswith(f"git:{head}")

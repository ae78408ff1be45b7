from pathlib import Path

import pytest

from configs.schema import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"


def test_default_config_file_matches_the_code_defaults():
    assert load_config(DEFAULT, environ={}) == Config()


def test_every_config_file_in_configs_validates():
    files = sorted((REPO / "configs").glob("*.yaml"))
    assert files
    for path in files:
        load_config(path, environ={})


def test_unknown_key_is_rejected_naming_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backtest:\n  refit_evry: 30\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad, environ={})
    assert "backtest.refit_evry" in str(exc.value)
    assert str(bad) in str(exc.value)


def test_wrong_type_is_rejected_naming_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  confidence: high\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad, environ={})
    assert "policy.confidence" in str(exc.value) and "bad.yaml" in str(exc.value)


def test_environment_overrides_any_leaf():
    cfg = load_config(DEFAULT, environ={
        "VOLMARGIN__BACKTEST__REFIT_EVERY": "30",
        "VOLMARGIN__MODELS__ENABLED": "[garch11_t]",
        "VOLMARGIN__POLICY__CONFIDENCE": "0.975",
    })
    assert cfg.backtest.refit_every == 30
    assert cfg.models.enabled == ["garch11_t"]
    assert cfg.policy.confidence == 0.975


def test_bad_environment_override_names_the_variable():
    with pytest.raises(ConfigError) as exc:
        load_config(DEFAULT, environ={"VOLMARGIN__BACKTEST__REFIT_EVERY": "-3"})
    assert "backtest.refit_every" in str(exc.value)
    assert "VOLMARGIN" in str(exc.value) or "env" in str(exc.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ={})

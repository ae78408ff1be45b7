import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from configs.schema import Config, ConfigError, load_config
from pipelines.cli import app

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


@pytest.mark.parametrize(("text", "needle"), [
    ("policy:\n  confidence: [0.9\n", "line"),           # unclosed flow sequence
    ("policy:\n\tconfidence: 0.9\n", "line"),            # a tab where YAML forbids one
])
def test_malformed_yaml_is_a_config_error_naming_the_file_and_line(tmp_path, text, needle):
    bad = tmp_path / "broken.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(bad, environ={})
    assert str(bad) in str(exc.value) and "not valid YAML" in str(exc.value)
    assert needle in str(exc.value)


@pytest.fixture
def defaults(tmp_path):
    """A config file that sets nothing: the code defaults, whatever else default.yaml holds."""
    path = tmp_path / "defaults.yaml"
    path.write_text("{}\n")
    return path


def test_malformed_yaml_in_an_environment_override_names_the_variable(defaults):
    with pytest.raises(ConfigError) as exc:
        load_config(defaults, environ={"VOLMARGIN__MODELS__ENABLED": "[garch11_t"})
    assert "VOLMARGIN__MODELS__ENABLED" in str(exc.value)


def test_duplicate_keys_are_rejected_with_both_lines(tmp_path):
    bad = tmp_path / "dup.yaml"
    bad.write_text("policy:\n  mmf_floor: 0.02\n  mmf_floor: 0.03\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad, environ={})
    text = str(exc.value)
    assert "duplicate key 'mmf_floor'" in text and "first at line 2" in text and "line 3" in text
    whole = tmp_path / "dup_section.yaml"
    whole.write_text("backtest:\n  refit_every: 30\npolicy: {}\nbacktest:\n  n_jobs: 1\n")
    with pytest.raises(ConfigError, match="duplicate key 'backtest'"):
        load_config(whole, environ={})


@pytest.mark.parametrize(("overrides", "keys"), [
    ({"VOLMARGIN__POLICY__MMF_FLOOR": "0.7", "VOLMARGIN__POLICY__MMF_CAP": "0.5"},
     ["policy.mmf_floor", "policy.mmf_cap"]),
    ({"VOLMARGIN__POLICY__LB_MIN": "1.2", "VOLMARGIN__POLICY__LB_MAX": "1.1"},
     ["policy.lb_min", "policy.lb_max"]),
    ({"VOLMARGIN__POLICY__FHS_MIN_OBS": "300", "VOLMARGIN__POLICY__FHS_WINDOW": "200"},
     ["policy.fhs_min_obs", "policy.fhs_window"]),
    ({"VOLMARGIN__FEATURES__CORR_MIN_OBS": "31"}, ["features.corr_min_obs"]),
    ({"VOLMARGIN__FEATURES__LIQUIDITY_MIN_OBS": "40"}, ["features.liquidity_min_obs"]),
    ({"VOLMARGIN__FEATURES__UPDATE_INTERVAL_DAYS": "3"},
     ["features.update_interval_days", "backtest.horizons"]),
    ({"VOLMARGIN__FEATURES__UPDATE_INTERVAL_DAYS": "7"},  # a backtested horizon, still not 1
     ["features.update_interval_days = 7: only 1 (a daily update) is supported"]),
    ({"VOLMARGIN__SELECTION__HORIZON": "30"}, ["selection.horizon", "backtest.horizons"]),
    ({"VOLMARGIN__BACKTEST__PLAUSIBILITY__MIN_RATIO": "3", "VOLMARGIN__BACKTEST__PLAUSIBILITY"
      "__MAX_RATIO": "2"}, ["backtest.plausibility.min_ratio", "backtest.plausibility.max_ratio"]),
    ({"VOLMARGIN__BACKTEST__PLAUSIBILITY__MIN_OBS": "31"},
     ["backtest.plausibility.min_obs", "backtest.plausibility.window_days"]),
    ({"VOLMARGIN__EVALUATION__STRESS_DAYS__WINDOW_DAYS": "100"},
     ["evaluation.stress_days.min_history", "evaluation.stress_days.window_days"]),
    ({"VOLMARGIN__EVALUATION__SELECTION_START": "2024-01-01",
      "VOLMARGIN__EVALUATION__SELECTION_END": "2023-01-01",
      "VOLMARGIN__EVALUATION__EVALUATION_START": "2024-02-01"},
     ["evaluation.selection_start", "evaluation.selection_end"]),
    ({"VOLMARGIN__EVALUATION__EVALUATION_END": "2023-01-01"},
     ["evaluation.evaluation_start", "evaluation.evaluation_end"]),
])
def test_cross_field_rules_reject_with_the_key_paths(defaults, overrides, keys):
    with pytest.raises(ConfigError) as exc:
        load_config(defaults, environ=overrides)
    for key in keys:
        assert key in str(exc.value)


def test_equal_bounds_and_the_boundary_values_are_accepted(defaults):
    cfg = load_config(defaults, environ={
        "VOLMARGIN__POLICY__MMF_FLOOR": "0.3", "VOLMARGIN__POLICY__MMF_CAP": "0.3",
        "VOLMARGIN__POLICY__FHS_MIN_OBS": "500", "VOLMARGIN__FEATURES__CORR_MIN_OBS": "30"})
    assert cfg.policy.mmf_floor == cfg.policy.mmf_cap == 0.3
    assert cfg.policy.fhs_min_obs == cfg.policy.fhs_window


def test_with_overrides_applies_the_cross_field_rules_too():
    with pytest.raises(ConfigError, match=r"policy\.lb_min"):
        Config().with_overrides({"policy.lb_min": 1.3})


def test_every_ordered_pair_names_fields_that_exist():
    from configs.schema import ORDERED_PAIRS, _leaf

    bound = {"evaluation.evaluation_end": "2025-06-30"}  # open (None) by default
    cfg = Config().with_overrides(bound)
    for small, large, _ in ORDERED_PAIRS:
        assert isinstance(_leaf(cfg, small), int | float | dt.date), small
        assert isinstance(_leaf(cfg, large), int | float | dt.date), large


def test_an_open_evaluation_end_is_not_compared(defaults):
    cfg = load_config(defaults, environ={"VOLMARGIN__EVALUATION__EVALUATION_END": "null"})
    assert cfg.evaluation.evaluation_end is None


def _cli(tmp_path, *args, env=None):
    """``volmargin <args>`` in ``tmp_path``; (result, the JSON log lines)."""
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(tmp_path)
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        result = CliRunner().invoke(app, list(args))
    finally:
        mp.undo()
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return result, lines


@pytest.mark.parametrize("command", ["serve", "retrain", "ingest"])
def test_a_malformed_config_file_exits_2_with_a_json_error_naming_it(tmp_path, command):
    (tmp_path / "bad.yaml").write_text("policy: {confidence: 0.9\n")
    result, lines = _cli(tmp_path, command, "--config", "bad.yaml", "--log-json")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (error,) = lines
    assert (error["level"], error["step"]) == ("error", "config")
    assert error["message"].startswith("bad.yaml: not valid YAML")


def test_a_malformed_environment_override_exits_2_naming_the_variable(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("{}\n")
    result, lines = _cli(tmp_path, "serve", "--log-json",
                         env={"VOLMARGIN__POLICY__CONFIDENCE": "[0.9"})
    assert result.exit_code == 2, result.output
    assert "environment variable VOLMARGIN__POLICY__CONFIDENCE" in lines[-1]["message"]
    plain, _ = _cli(tmp_path, "run", "--quiet", env={"VOLMARGIN__POLICY__MMF_FLOOR": "0.9"})
    assert plain.exit_code == 2
    assert "policy.mmf_floor = 0.9 > policy.mmf_cap = 0.6" in " ".join(plain.output.split())


@pytest.mark.parametrize(("names", "needle"), [
    (["a", "a"], "episode name 'a' is used twice"),
    (["vol_x3"], "episode name 'vol_x3' is the stress's own kind of name"),
    (["crash_filtered"], "'crash_filtered' is the stress's own kind of name"),
    (["BTC_drop30_beta"], "'BTC_drop30_beta' is the stress's own"),
    (["fhs_joint"], "'fhs_joint' is the stress's own"),
    (["SOL_collapse"], "'SOL_collapse' is the stress's own"),
])
def test_stress_episode_names_are_unique_and_not_the_stress_own(names, needle):
    """Scenario outcomes are stored by name: a repeated or built-in name would overwrite."""
    episodes = [{"name": n, "start": "2022-11-08", "end": "2022-11-10"} for n in names]
    with pytest.raises(ConfigError, match=needle):
        Config().with_overrides({"stress.episodes": episodes})
    names = ("ftx", "ftx2", "covid_drop", "vol_xtreme")  # not the stress's own kinds
    fine = [{"name": n, "start": "2022-11-08", "end": "2022-11-10"} for n in names]
    assert [e.name for e in Config().with_overrides({"stress.episodes": fine}).stress.episodes] \
        == list(names)


def test_an_evt_config_that_leaves_too_few_excesses_is_refused_with_the_fix():
    from configs.schema import TailEvtConfig

    assert TailEvtConfig().min_obs * TailEvtConfig().tail_fraction >= 20
    with pytest.raises(ValueError, match=r"gives 12 excesses at the fewest.*raise min_obs to 400"):
        TailEvtConfig(min_obs=250, tail_fraction=0.05)
    assert TailEvtConfig(min_obs=400, tail_fraction=0.05).min_obs == 400
    with pytest.raises(ValueError, match="gives 10 excesses"):  # the default fraction, 0.10
        TailEvtConfig(min_obs=100)
    with pytest.raises(ValueError, match="window 200 < min_obs 250"):
        TailEvtConfig(window=200)


def test_macro_closes_are_never_read_on_their_own_day():
    """Lag 0 would read FRED's US 10y of day D on D, published on a later business day."""
    with pytest.raises(ConfigError, match=r"features\.macro_lag_days"):
        Config().with_overrides({"features.macro_lag_days": 0})
    assert Config().with_overrides({"features.macro_lag_days": 2}).features.macro_lag_days == 2

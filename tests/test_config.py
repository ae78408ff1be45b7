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
    from configs.schema import LOAD_ORDERED_PAIRS, ORDERED_PAIRS, _leaf

    bound = {"evaluation.evaluation_end": "2025-06-30"}  # open (None) by default
    cfg = Config().with_overrides(bound)
    for small, large, _ in ORDERED_PAIRS + LOAD_ORDERED_PAIRS:
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


# ------------------------------------------------- settings the run could not honour, at load
@pytest.mark.parametrize(("overrides", "needles"), [
    # an unknown or repeated model: a KeyError at the walk-forward (pipelines/walk_forwards.py)
    ({"VOLMARGIN__MODELS__ENABLED": "[garch11_tt, ewma94]"},
     ["models.enabled", "'garch11_tt' is not a registered forecaster (registered: egarch_t,"]),
    ({"VOLMARGIN__MODELS__ENABLED": "[ewma94, har_rv, ewma94]"},
     ["models.enabled", "'ewma94' is listed twice"]),
    ({"VOLMARGIN__TAIL__ENABLED": "[fhs_ewma, evt_garch_x]"},
     ["tail.enabled", "'evt_garch_x' is not a registered tail model (registered: caviar,"]),
    ({"VOLMARGIN__TAIL__ENABLED": "[hs, hs]"}, ["tail.enabled", "'hs' is listed twice"]),
    # no tail model: refused whether or not the run includes the tail step, which is what
    # tail.in_run (not an empty list) turns off; `volmargin tail` would have nothing to run
    ({"VOLMARGIN__TAIL__ENABLED": "[]", "VOLMARGIN__TAIL__IN_RUN": "true"},
     ["tail.enabled = []: the tail step", "no model to walk forward"]),
    ({"VOLMARGIN__TAIL__ENABLED": "[]"}, ["tail.enabled = []", "tail.in_run: false"]),
    # tail levels: in (0.5, 1) (models/tail/base.py), once each, the headline 0.99 among them
    ({"VOLMARGIN__TAIL__LEVELS": "[0.99, 1.0]"}, ["tail.levels", "1.0 is not in (0.5, 1)"]),
    ({"VOLMARGIN__TAIL__LEVELS": "[0.5, 0.99]"}, ["tail.levels", "0.5 is not in (0.5, 1)"]),
    ({"VOLMARGIN__TAIL__LEVELS": "[0.99, 0.975, 0.99]"}, ["tail.levels", "0.99 is listed twice"]),
    ({"VOLMARGIN__TAIL__LEVELS": "[0.975, 0.995]"}, ["tail.levels", "lacks 0.99"]),
    # every grid point and knob value is applied to the config as the protocol applies it
    # (pipelines/policy_eval/compare.py), after the walk-forward: refused before it instead
    ({"VOLMARGIN__EVALUATION__GRID": "{policy.confidence: [0.975, 1.7]}"},
     ["evaluation.grid point {'policy.confidence': 1.7}",
      "policy.confidence: Input should be less than 1 (got 1.7)"]),
    ({"VOLMARGIN__EVALUATION__GRID": "{policy.confidnce: [0.975]}"},
     ["evaluation.grid point {'policy.confidnce': 0.975}", "policy.confidnce: Extra inputs"]),
    ({"VOLMARGIN__EVALUATION__GRID": "{policy.apc.buffer.size: [0.2]}"},
     ["evaluation.grid point", "buffer is not a section"]),
    ({"VOLMARGIN__EVALUATION__GRID": "{policy.mmf_floor: [0.02, 0.7]}"},  # a cross-field rule
     ["evaluation.grid point {'policy.mmf_floor': 0.7}",
      "policy.mmf_floor = 0.7 > policy.mmf_cap = 0.6"]),
    ({"VOLMARGIN__EVALUATION__GRID": "{policy.confidence: [0.975, 0.975]}"},
     ["evaluation.grid['policy.confidence']", "0.975 listed twice"]),
    ({"VOLMARGIN__EVALUATION__FRONTIER_KNOBS": "{policy.stress_floor_weight: [0.5, 3.0]}"},
     ["evaluation.frontier_knobs['policy.stress_floor_weight'] = 3.0",
      "policy.stress_floor_weight: Input should be less than or equal to 2 (got 3.0)"]),
    ({"VOLMARGIN__EVALUATION__FRONTIER_KNOBS": "{policy.stres_floor_weight: [0.5]}"},
     ["evaluation.frontier_knobs['policy.stres_floor_weight'] = 0.5",
      "policy.stres_floor_weight: Extra inputs"]),
    ({"VOLMARGIN__EVALUATION__FRONTIER_KNOBS": "{policy.measure: [es, var]}"},
     ["evaluation.frontier_knobs['policy.measure']", "'es' is not a number"]),
    ({"VOLMARGIN__EVALUATION__GRID": "{policy.mmf_cap: [0.5, 0.7]}",  # valid alone, not at a point
      "VOLMARGIN__EVALUATION__FRONTIER_KNOBS": "{policy.mmf_floor: [0.3, 0.55]}"},
     ["evaluation.frontier_knobs['policy.mmf_floor'] = 0.55",
      "at evaluation.grid point {'policy.mmf_cap': 0.5}",
      "policy.mmf_floor = 0.55 > policy.mmf_cap = 0.5"]),
    ({"VOLMARGIN__EVALUATION__GRID": "{policy.mmf_cap: [0.7]}",  # valid at every grid point,
      "VOLMARGIN__EVALUATION__FRONTIER_KNOBS": "{policy.mmf_floor: [0.3, 0.65]}"},  # not alone
     ["evaluation.frontier_knobs['policy.mmf_floor'] = 0.65",
      "on the configured policy", "policy.mmf_floor = 0.65 > policy.mmf_cap = 0.6"]),
    # joblib refuses 0 processes (the policy replays: compare.py, tail_driven.py)
    ({"VOLMARGIN__BACKTEST__N_JOBS": "0"}, ["backtest.n_jobs = 0", "-1 on every core"]),
    # the local engine ignores a scheduler (pipelines/engine.py make_engine)
    ({"VOLMARGIN__BACKTEST__SCHEDULER": "tcp://10.0.0.5:8786"},
     ["backtest.scheduler = 'tcp://10.0.0.5:8786' with backtest.engine = 'local'"]),
    # the selection period must lie in the out-of-sample period
    ({"VOLMARGIN__BACKTEST__OOS_START": "2021-01-02"},
     ["backtest.oos_start = datetime.date(2021, 1, 2) > evaluation.selection_start = "
      "datetime.date(2021, 1, 1)"]),
])
def test_settings_the_run_cannot_honour_are_refused_at_load(defaults, overrides, needles):
    with pytest.raises(ConfigError) as exc:
        load_config(defaults, environ=overrides)
    text = str(exc.value)
    assert text.startswith(f"invalid configuration in {defaults}")
    for needle in needles:
        assert needle in text


def _refusal(path: Path, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ=environ)
    return str(exc.value)


def test_one_bad_setting_is_one_line_not_one_per_grid_point(defaults):
    """A grid point's config shares the config's own errors: they are not repeated for each
    point, and one bad value in a product grid is named at a few points, not at every one."""
    text = _refusal(defaults, {"VOLMARGIN__BACKTEST__N_JOBS": "0"})
    assert text.count("backtest.n_jobs = 0") == 1 and "evaluation.grid" not in text
    text = _refusal(defaults, {
        "VOLMARGIN__EVALUATION__GRID": "{policy.confidence: [1.5], policy.lb_k: [1, 2, 3, 4]}"})
    assert text.count("would be replayed with an invalid config") == 3
    assert "... and 1 more grid points" in text


def test_settings_the_run_honours_still_load(defaults):
    assert load_config(DEFAULT, environ={}) == Config()
    cfg = load_config(defaults, environ={
        "VOLMARGIN__MODELS__ENABLED": "[garch11_skewt, gjr_t, ewma94]",  # registered, off
        "VOLMARGIN__TAIL__ENABLED": "[hs]", "VOLMARGIN__TAIL__IN_RUN": "true",
        "VOLMARGIN__TAIL__LEVELS": "[0.99]",
        "VOLMARGIN__EVALUATION__GRID": "{policy.confidence: [0.95, 0.99], policy.lb_k: [2, 3]}",
        "VOLMARGIN__EVALUATION__FRONTIER_KNOBS": "{policy.memory_weight: [0, 2], "
                                                 "policy.roles.enabled: [0, 1]}",
        "VOLMARGIN__BACKTEST__N_JOBS": "-2",  # joblib: every core but one
        "VOLMARGIN__BACKTEST__ENGINE": "dask", "VOLMARGIN__BACKTEST__SCHEDULER": "tcp://h:8786",
        "VOLMARGIN__BACKTEST__OOS_START": "2021-01-01",  # = selection_start
    })
    assert cfg.tail.levels == [0.99] and cfg.backtest.scheduler == "tcp://h:8786"
    assert load_config(defaults, environ={"VOLMARGIN__EVALUATION__GRID": "{}",
                                          "VOLMARGIN__EVALUATION__FRONTIER_KNOBS": "{}"})
    for n_jobs in (-1, 1, 4):
        assert load_config(defaults, environ={
            "VOLMARGIN__BACKTEST__N_JOBS": str(n_jobs)}).backtest.n_jobs == n_jobs


def test_with_overrides_applies_the_new_rules_but_the_load_time_pair():
    """Each override is checked as at load, so a grid point or knob value the protocol
    applies is refused as it would be there; only ``LOAD_ORDERED_PAIRS`` is not: code that
    only walks forward moves ``backtest.oos_start`` and leaves the periods it never reads."""
    with pytest.raises(ConfigError, match=r"evaluation\.grid point \{'policy\.confidence': 1\.7"):
        Config().with_overrides({"evaluation.grid": {"policy.confidence": [1.7]}})
    with pytest.raises(ConfigError, match=r"models\.enabled = \['garch11_tt'\]"):
        Config().with_overrides({"models.enabled": ["garch11_tt"]})
    assert Config().with_overrides({"backtest.oos_start": "2024-09-01"}).backtest.oos_start \
        == dt.date(2024, 9, 1)


def test_the_enabled_names_and_the_headline_level_are_the_code_s():
    """configs may not import the registries or the tail step (tests/test_import_direction.py):
    the names and level it checks against are held equal to theirs here."""
    from configs.schema import FORECASTERS, TAIL_HEADLINE_LEVEL, TAIL_MODELS
    from models.registry import REGISTRY
    from models.tail.registry import TAIL_REGISTRY
    from pipelines import tail_step
    from pipelines.evaluation import tail_compare

    assert sorted(FORECASTERS) == sorted(REGISTRY)
    assert sorted(TAIL_MODELS) == sorted(TAIL_REGISTRY)
    assert TAIL_HEADLINE_LEVEL == tail_compare.HEADLINE_LEVEL == tail_step.HEADLINE_LEVEL


@pytest.mark.parametrize(("env", "needle"), [
    ({"VOLMARGIN__MODELS__ENABLED": "[garch11_tt]"}, "'garch11_tt' is not a registered"),
    ({"VOLMARGIN__EVALUATION__GRID": "{policy.confidence: [1.7]}"},
     "evaluation.grid point {'policy.confidence': 1.7}"),
])
def test_a_setting_the_run_cannot_honour_exits_2_before_the_run(tmp_path, env, needle):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("{}\n")
    result, _ = _cli(tmp_path, "run", "--quiet", env=env)
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split())

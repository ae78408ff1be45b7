"""``tail_nn.extra_inputs``: the optional groups of intraday measures — known answers, one
flag for the groups that share it, point in time, refused names, a fit and its state."""

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from configs.schema import TailConfig
from models.tail.inputs import EXTRA_INPUTS, extra_inputs
from models.tail.network import row_inputs
from models.tail.registry import build_tail_forecaster, tail_forecaster_from_state
from tests.tail_panel import tail_panel


def _frame() -> pd.DataFrame:
    """Ten days of one asset with day 4 missing (a calendar gap) and no hourly data on day 9."""
    dates = pd.DatetimeIndex([d for d in pd.date_range("2024-01-01", periods=11) if d.day != 5])
    n = len(dates)
    rng = np.random.default_rng(3)
    f = pd.DataFrame({
        "rv_down": rng.uniform(1e-4, 4e-4, n), "rv_up": rng.uniform(1e-4, 4e-4, n),
        "jump_var": rng.uniform(0, 1e-4, n), "rv_hourly": rng.uniform(3e-4, 8e-4, n),
        "rkurt": rng.uniform(2, 9, n), "rv_is_hourly": True,
        "dvol_change_1d": rng.normal(0, 0.05, n), "dvol_change_7d": rng.normal(0, 0.1, n),
    }, index=pd.MultiIndex.from_arrays([["AAA"] * n, dates], names=["asset", "date"]))
    hourly = ["rv_down", "rv_up", "jump_var", "rv_hourly", "rkurt"]
    f.loc[("AAA", pd.Timestamp("2024-01-10")), hourly] = np.nan
    f.loc[("AAA", pd.Timestamp("2024-01-10")), "rv_is_hourly"] = False
    return f.droplevel("asset")


def test_each_group_by_hand():
    f = _frame()
    x = extra_inputs(f, ["semivariance", "jumps", "kurtosis", "dvol_changes"])
    # 4 semivariance columns, jump share, kurtosis, 2 DVOL changes, then the one shared flag
    assert x.shape == (len(f), 9)
    i = f.index.get_loc(pd.Timestamp("2024-01-08"))  # week 01-02..01-08 holds 6 rows (no 01-05)
    week = f.loc["2024-01-02":"2024-01-08"]
    assert len(week) == 6
    assert x[i, 0] == pytest.approx(np.log(np.sqrt(f["rv_down"].iloc[i])))
    assert x[i, 1] == pytest.approx(np.log(np.sqrt(f["rv_up"].iloc[i])))
    assert x[i, 2] == pytest.approx(np.log(np.sqrt(week["rv_down"].mean())))
    assert x[i, 3] == pytest.approx(np.log(np.sqrt(week["rv_up"].mean())))
    assert x[i, 4] == pytest.approx(week["jump_var"].mean() / week["rv_hourly"].mean())
    assert x[i, 5] == pytest.approx(week["rkurt"].mean())
    assert x[i, 6] == f["dvol_change_1d"].iloc[i] and x[i, 7] == f["dvol_change_7d"].iloc[i]
    assert x[i, 8] == 1.0
    # a day without hourly data: its own measures NaN and flagged, the week's means of the
    # days that have them
    j = f.index.get_loc(pd.Timestamp("2024-01-10"))
    assert np.isnan(x[j, 0]) and np.isnan(x[j, 1]) and x[j, 8] == 0.0
    week = f.loc["2024-01-04":"2024-01-10"]
    assert x[j, 2] == pytest.approx(np.log(np.sqrt(week["rv_down"].mean())))  # NaN skipped


def test_groups_keep_their_order_and_share_one_flag():
    f = _frame()
    both = extra_inputs(f, ["jumps", "kurtosis"])
    assert both.shape == (len(f), 3)  # jump share, kurtosis, one flag
    np.testing.assert_array_equal(both[:, 0], extra_inputs(f, ["jumps"])[:, 0])
    np.testing.assert_array_equal(extra_inputs(f, ["dvol_changes"]),
                                  f[["dvol_change_1d", "dvol_change_7d"]].to_numpy())
    assert extra_inputs(f, []).shape == (len(f), 0)
    assert set(EXTRA_INPUTS) == {"semivariance", "jumps", "kurtosis", "dvol_changes"}


def test_a_row_reads_only_rows_up_to_its_date():
    f = _frame()
    groups = list(EXTRA_INPUTS)
    whole = extra_inputs(f, groups)
    for k in range(1, len(f) + 1):
        np.testing.assert_array_equal(extra_inputs(f.iloc[:k], groups), whole[:k])


def test_unknown_groups_are_refused_by_the_function_and_the_config():
    with pytest.raises(ValueError, match="unknown tail input groups \\['skew'\\]"):
        extra_inputs(_frame(), ["skew"])
    with pytest.raises(ValidationError, match="extra_inputs"):
        TailConfig().tail_nn.model_validate({"extra_inputs": ["skew"]})


def test_row_inputs_append_the_groups_after_the_default_inputs():
    panel = tail_panel(("AAA",), n_days=200, seed=4)
    frame = panel.droplevel("asset")
    base = pd.DataFrame({"long": 0.05, "short": 0.05}, index=frame.index)
    x0, s0, ok0 = row_inputs(frame, base, "close")
    x1, s1, ok1 = row_inputs(frame, base, "close", ["jumps", "dvol_changes"])
    assert x1.shape[1] == x0.shape[1] + 4
    np.testing.assert_array_equal(x1[:, :x0.shape[1]], x0)
    np.testing.assert_array_equal(s1, s0)
    np.testing.assert_array_equal(ok1, ok0)  # an optional input never drops a row


def test_a_network_with_extra_inputs_fits_and_round_trips():
    panel = tail_panel(("AAA", "BBB"), n_days=700, seed=8)
    train = panel[panel.index.get_level_values("date") <= panel.index.levels[1][550]]
    cfg = TailConfig().tail_nn.model_copy(update={
        "max_epochs": 2, "hidden": 4, "weight_decays": [1e-3], "ensemble_size": 1,
        "recency_half_lives": [0.0], "extra_inputs": ["semivariance", "jumps"]})
    tail = TailConfig().model_copy(update={"tail_nn": cfg})
    model = build_tail_forecaster("tail_nn", tail).fit(train)
    plain = build_tail_forecaster("tail_nn", TailConfig().model_copy(update={
        "tail_nn": cfg.model_copy(update={"extra_inputs": []})})).fit(train)
    assert model.nets[0].config.n_inputs == plain.nets[0].config.n_inputs + 6
    state = json.loads(json.dumps(model.state()))
    again = tail_forecaster_from_state(state)
    a = model.forecast_tail(panel)
    pd.testing.assert_frame_equal(a, again.forecast_tail(panel))
    assert len(a) and (a["es"] >= a["var"]).all()

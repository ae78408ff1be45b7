"""One contract, every registered tail forecaster (models/tail)."""

import json

import numpy as np
import pandas as pd
import pytest

from configs.schema import TailConfig
from models.tail.base import TAIL_COLUMNS
from models.tail.registry import (
    TAIL_REGISTRY,
    build_tail_forecaster,
    tail_forecaster_from_state,
)
from tests.tail_panel import tail_panel

LEVELS = [0.975, 0.99, 0.995]
FAST = TailConfig().model_copy(update={  # shrunk so every alias fits in a few seconds
    "tail_nn": TailConfig().tail_nn.model_copy(update={
        "max_epochs": 3, "hidden": 4, "weight_decays": [1e-3]}),
})


# the registered aliases (``tail_nn`` with its default objective, scale_nll), and each
# configurable variant of one that changes its construction
VARIANTS = {alias: (alias, FAST) for alias in TAIL_REGISTRY} | {
    "tail_nn:fz0": ("tail_nn", FAST.model_copy(update={
        "tail_nn": FAST.tail_nn.model_copy(update={"objective": "fz0"})})),
}


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return tail_panel()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def fitted(request, panel):
    train = panel[panel.index.get_level_values("date") <= panel.index.levels[1][600]]
    alias, cfg = VARIANTS[request.param]
    return build_tail_forecaster(alias, cfg).fit(train)


def _cutoffs(panel, positions=(620, 700, 800, 899)):
    return pd.DatetimeIndex([panel.index.levels[1][i] for i in positions])


def test_columns_levels_and_sides(fitted, panel):
    cut = _cutoffs(panel)
    fc = fitted.forecast_tail(panel, LEVELS, cut)
    assert list(fc.columns) == TAIL_COLUMNS
    assert len(fc) == 2 * len(cut) * 2 * len(LEVELS)  # assets × cutoffs × sides × levels
    assert set(fc["side"]) == {"long", "short"} and sorted(set(fc["level"])) == LEVELS
    assert ((fc["target_date"] - fc["cutoff"]).dt.days == 1).all()
    assert np.isfinite(fc[["var", "es"]]).all().all() and (fc["var"] > 0).all()


def test_es_above_var_and_both_monotone_in_level(fitted, panel):
    fc = fitted.forecast_tail(panel, LEVELS, panel.index.levels[1][610:900])
    assert (fc["es"] >= fc["var"] - 1e-12).all()
    for col in ("var", "es"):
        wide = fc.pivot_table(index=["asset", "side", "cutoff"], columns="level", values=col)
        assert (wide.diff(axis=1).iloc[:, 1:] >= -1e-12).all().all(), col


def test_forecast_reads_nothing_after_its_cutoff(fitted, panel):
    for t in _cutoffs(panel)[:3]:
        full = fitted.forecast_tail(panel, LEVELS, pd.DatetimeIndex([t]))
        cut = fitted.forecast_tail(panel[panel.index.get_level_values("date") <= t], LEVELS,
                                   pd.DatetimeIndex([t]))
        pd.testing.assert_frame_equal(full, cut)


def test_fit_is_deterministic_and_never_reads_target_columns(panel):
    # models build their targets from worst_loss_* of the rows they are given; a target_*
    # column (the future) handed over by mistake must change nothing
    t = panel.index.levels[1][600]
    upto = panel[panel.index.get_level_values("date") <= t]
    leaky = upto.assign(target_worst_loss_long=1.0, target_worst_loss_short=1.0)
    for alias in ("fhs_garch", "evt_garch", "qr_har"):
        a = build_tail_forecaster(alias, FAST).fit(upto).forecast_tail(panel, LEVELS)
        b = build_tail_forecaster(alias, FAST).fit(leaky).forecast_tail(panel, LEVELS)
        pd.testing.assert_frame_equal(a, b)


def test_state_round_trip_is_json_and_forecasts_identically(fitted, panel):
    state = json.loads(json.dumps(fitted.state()))
    clone = tail_forecaster_from_state(state)
    cut = _cutoffs(panel)
    pd.testing.assert_frame_equal(fitted.forecast_tail(panel, LEVELS, cut),
                                  clone.forecast_tail(panel, LEVELS, cut))


def test_unknown_alias_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown tail forecaster"):
        build_tail_forecaster("nope", FAST)

"""One contract, every registered forecaster (Nixtla-style shared conformance test)."""

import json

import numpy as np
import pandas as pd
import pytest

from configs.schema import ModelsConfig
from features.schema import feature_view
from models.backtest import walk_forward
from models.base import FORECAST_COLUMNS, forecast_frame
from models.registry import REGISTRY, build_forecaster, forecaster_from_state
from tests.simulate import simulate_panel

HORIZONS = [1, 7]
FAST = ModelsConfig().model_copy(update={  # shrunk so every alias fits in about a second
    "mlp_har": ModelsConfig().mlp_har.model_copy(update={"max_epochs": 3, "hidden": 8}),
    "gbm_sklearn": ModelsConfig().gbm_sklearn.model_copy(update={"max_iter": 40}),
})


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return feature_view(simulate_panel(("AAA", "BBB"), n_days=700, seed=5))


@pytest.fixture(scope="module", params=sorted(REGISTRY))
def fitted(request, panel):
    train = panel[panel.index.get_level_values("date") <= panel.index.levels[1][500]]
    return build_forecaster(request.param, FAST, HORIZONS).fit(train)


def _cutoffs(panel, positions=(520, 560, 640, 699)):
    return pd.DatetimeIndex([panel.index.levels[1][i] for i in positions])


def test_output_columns_shape_and_values(fitted, panel):
    cut = _cutoffs(panel)
    fc = fitted.forecast(panel, HORIZONS, cut)
    assert list(fc.columns[:5]) == FORECAST_COLUMNS
    assert len(fc) == 2 * len(cut) * len(HORIZONS)  # 2 assets
    assert np.isfinite(fc["variance"]).all() and (fc["variance"] > 0).all()
    assert (fc["target_date"] - fc["cutoff"]).dt.days.equals(fc["horizon_days"].astype("int64"))
    # a 7-day variance exceeds the 1-day variance of the same cutoff
    wide = fc.pivot_table(index=["asset", "cutoff"], columns="horizon_days", values="variance")
    assert (wide[7] > wide[1]).all()


def test_forecast_reads_nothing_after_its_cutoff(fitted, panel):
    for t in _cutoffs(panel)[:3]:
        full = fitted.forecast(panel, HORIZONS, pd.DatetimeIndex([t]))
        cut = fitted.forecast(panel[panel.index.get_level_values("date") <= t], HORIZONS,
                              pd.DatetimeIndex([t]))
        pd.testing.assert_frame_equal(full.reset_index(drop=True), cut.reset_index(drop=True))


def test_state_round_trip_is_json_and_forecasts_identically(fitted, panel):
    state = json.loads(json.dumps(fitted.state()))
    clone = forecaster_from_state(state)
    cut = _cutoffs(panel)
    a, b = fitted.forecast(panel, HORIZONS, cut), clone.forecast(panel, HORIZONS, cut)
    np.testing.assert_array_equal(a["variance"].to_numpy(), b["variance"].to_numpy())
    assert clone.alias == fitted.alias


class LeakyForecaster:
    """Cheats: forecasts tomorrow's rv, read from the panel row after the cutoff."""

    alias = "leaky"

    def fit(self, panel):
        return self

    def forecast(self, panel, horizons, cutoffs=None):
        blocks = []
        for asset, frame in panel.groupby(level="asset"):
            rv = frame.droplevel("asset")["rv"]
            nxt = rv.shift(-1).reindex(cutoffs).fillna(rv.mean())
            blocks += [forecast_frame(asset, nxt.index, h, nxt.to_numpy() * h) for h in horizons]
        return pd.concat(blocks, ignore_index=True)


def test_a_leaky_forecaster_is_caught_by_the_truncation_check(panel):
    t = _cutoffs(panel)[0]
    model = LeakyForecaster()
    full = model.forecast(panel, [1], pd.DatetimeIndex([t]))
    cut = model.forecast(panel[panel.index.get_level_values("date") <= t], [1],
                         pd.DatetimeIndex([t]))
    assert not np.allclose(full["variance"], cut["variance"])


def test_walk_forward_fits_only_on_the_past(panel):
    seen: list[pd.Timestamp] = []

    class Spy(LeakyForecaster):
        def fit(self, p):
            assert not [c for c in p.columns if c.startswith("target_")]
            seen.append(p.index.get_level_values("date").max())
            return self

    dates = panel.index.levels[1]
    fc = walk_forward(Spy, simulate_panel(("AAA",), n_days=700, seed=5), dates[400].date(),
                      refit_every=100, horizons=[1], min_train_days=300)
    assert seen == list(pd.date_range(dates[400], dates[-1], freq="100D"))
    assert (fc["cutoff"] >= fc["fitted_through"]).all()
    assert (fc["cutoff"] - fc["fitted_through"]).dt.days.max() == 99
    assert fc["cutoff"].min() == dates[400] and fc["cutoff"].max() == dates[-1]

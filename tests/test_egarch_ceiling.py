"""EGARCH multi-day variance cannot explode: the FHS term structure is capped at the worst day
on record (``models.garch`` module docstring, *Ceiling*)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from configs.schema import PlausibilityConfig
from features.loaders import load_daily
from models.garch import SCALE, GarchForecaster, egarch_term_structure
from models.plausibility import trailing_realized_variance
from tests.conftest import MARKET
from tests.simulate import simulate_panel

PUMP_AT = 600  # day of the pump's start in the 700-day path
BAND = PlausibilityConfig()


def pump_panel(seed: int = 0) -> pd.DataFrame:
    """A calm GARCH path (daily vol ~1.2%), then ×10 in 14 days and −90% in the next 14."""
    panel = simulate_panel(("PUMP",), n_days=700, seed=seed)
    frame = panel.xs("PUMP", level="asset").copy()
    rng = np.random.default_rng(seed)
    ret = frame["ret_1d"].to_numpy() * 0.4
    up, down = rng.uniform(0.5, 1.5, 14), rng.uniform(0.5, 1.5, 14)
    ret[PUMP_AT:PUMP_AT + 14] = np.log(10) * up / up.sum()
    ret[PUMP_AT + 14:PUMP_AT + 28] = np.log(0.1) * down / down.sum()
    rv = frame["rv"].to_numpy() * 0.4**2
    rv[PUMP_AT:PUMP_AT + 28] = ret[PUMP_AT:PUMP_AT + 28] ** 2
    frame["ret_1d"], frame["rv"] = ret, rv
    return pd.concat({"PUMP": frame}, names=["asset", "date"])


def trailing_ratio(fc: pd.DataFrame, panel: pd.DataFrame) -> pd.Series:
    """forecast / (h × trailing 30-day mean rv), the plausibility ratio."""
    rv = panel.xs(fc["asset"].iloc[0], level="asset")["rv"]
    mean, _ = trailing_realized_variance(rv, BAND.window_days, BAND.min_obs)
    trailing = mean.reindex(pd.DatetimeIndex(fc["cutoff"])).to_numpy()
    return pd.Series(fc["variance"].to_numpy() / (fc["horizon_days"].to_numpy() * trailing),
                     index=fc.index)


def _uncapped_and_capped(model: GarchForecaster, panel: pd.DataFrame, asset: str,
                         wanted: pd.DatetimeIndex, horizon: int) -> tuple[np.ndarray, ...]:
    """E_t σ²_{t+k} without and with the ceiling, and the ceiling (scaled², (n, horizon))."""
    returns = panel.xs(asset, level="asset")["ret_1d"].dropna() * SCALE
    res = model._model(returns).fix(pd.Series(model.params[asset]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = res.forecast(horizon=1, start=wanted[0], reindex=False).variance
    sigma2_next = one.iloc[:, 0].loc[wanted].to_numpy()
    pool = returns.index.get_indexer(wanted) + 1
    worst = np.maximum.accumulate(returns.to_numpy() ** 2)[pool - 1]
    ceiling = np.maximum(sigma2_next, worst)
    args = (model.params[asset], np.log(sigma2_next), res.std_resid.to_numpy(), pool, horizon)
    return egarch_term_structure(*args), egarch_term_structure(*args, np.log(ceiling)), ceiling


def test_a_pump_after_a_calm_fit_no_longer_explodes_the_7_day_variance():
    panel = pump_panel()
    dates = panel.index.get_level_values("date")
    model = GarchForecaster(alias="egarch_t")
    # parameters of a fit made before the pump, as between two refits of the walk-forward
    model.params = {"PUMP": {"omega": 0.0, "alpha[1]": 0.5, "gamma[1]": 0.0, "beta[1]": 0.98,
                             "nu": 5.0}}
    wanted = pd.DatetimeIndex(dates[PUMP_AT - 10:])
    free, capped, ceiling = _uncapped_and_capped(model, panel, "PUMP", wanted, 7)
    # what the run met: expected daily variances of 64 (a vol of 800 % a day), 280x the worst
    assert free[:, 1:].max() / SCALE**2 > 10 and free[:, 1:].max() / ceiling.max() > 100
    assert np.isfinite(capped).all() and (capped > 0).all()
    assert (capped[:, 1:] <= ceiling[:, None] * (1 + 1e-12)).all()
    np.testing.assert_array_equal(capped[:, 0], free[:, 0])  # the one-step value is arch's
    fc = model.forecast(panel, [7], wanted)
    np.testing.assert_allclose(fc["variance"], capped.sum(axis=1) / SCALE**2, rtol=1e-12)
    assert fc["variance"].max() < 7 * ceiling.max() / SCALE**2 * (1 + 1e-12)


def test_egarch_fitted_through_a_pump_and_dump_forecasts_in_the_plausible_band():
    panel = pump_panel()
    dates = panel.index.get_level_values("date")
    model = GarchForecaster(alias="egarch_t").fit(panel)
    fc = model.forecast(panel, [1, 7], pd.DatetimeIndex(dates[PUMP_AT - 40:]))
    ratio = trailing_ratio(fc, panel)
    assert np.isfinite(ratio).all()
    assert ratio.between(BAND.min_ratio, BAND.max_ratio).all(), ratio.describe()


@pytest.mark.parametrize("asset", sorted(p.name.split(".")[0] for p in
                                         (MARKET / "crypto" / "daily").glob("*.csv.gz")))
def test_egarch_on_every_embedded_asset_stays_near_realized(asset):
    daily = load_daily(MARKET / "crypto" / "daily" / f"{asset}.csv.gz")
    ret = np.log(daily["close"]).diff().dropna()
    frame = pd.DataFrame({"ret_1d": ret, "rv": ret**2})  # squared returns: the plainest proxy
    panel = pd.concat({asset: frame}, names=["asset", "date"])
    dates = frame.index
    model = GarchForecaster(alias="egarch_t").fit(panel[dates <= "2023-12-31"])
    assert asset in model.params
    wanted = dates[(dates >= "2024-01-01") & (dates <= "2024-06-30")]
    fc = model.forecast(panel[dates <= "2024-06-30"], [7], wanted)
    ratio = trailing_ratio(fc, panel)
    assert ratio.between(BAND.min_ratio, BAND.max_ratio).all(), ratio.describe()
    free, capped, _ = _uncapped_and_capped(model, panel, asset, wanted, 7)
    np.testing.assert_array_equal(free, capped)  # the ceiling never binds on a healthy asset

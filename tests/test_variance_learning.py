"""harx_mlp's own-DVOL head and recency weights: point-in-time inputs, known-answer weights,
weighted least squares, JSON state; and the variance study's selection rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.variance_study import CANDIDATES, selection_score, summary
from configs.schema import HarxMlpConfig
from models.harx_mlp import HarxMlpForecaster, _lognormal_offset, recency_weights
from models.neural.inputs import (
    DVOL_TERMS,
    HAR_IV_TERMS,
    INPUT_NAMES,
    OWN_DVOL_TERMS,
    own_dvol,
    raw_inputs,
    weekday_columns,
)
from models.neural.residual import masked_mse
from tests.simulate import DVOL_FIRST_DAY, simulate_panel

SMALL = HarxMlpConfig(hidden=8, max_epochs=3, patience=2, weekday_terms=False)
HEAD = SMALL.model_copy(update={"own_dvol_slopes": True, "half_life_days": 120.0,
                                "weekday_terms": True})
ASSETS = ("AAA", "BBB", "CCC")  # AAA has its own DVOL from day 200, the others borrow it


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return simulate_panel(ASSETS, n_days=500, seed=5)


@pytest.fixture(scope="module")
def model(panel: pd.DataFrame) -> HarxMlpForecaster:
    return HarxMlpForecaster(HEAD, horizons=(1, 7)).fit(panel)


def test_recency_weights_known_answer() -> None:
    t = pd.Timestamp("2024-01-31")
    dates = pd.DatetimeIndex([t - pd.Timedelta(days=20), t - pd.Timedelta(days=10), t,
                              t - pd.Timedelta(days=5)]).to_numpy()
    np.testing.assert_allclose(recency_weights(dates, 10.0), [0.25, 0.5, 1.0, 2 ** -0.5])
    assert np.array_equal(recency_weights(dates, None), np.ones(4))


def test_weighted_offset_known_answer() -> None:
    r = np.array([0.1, -0.3, 0.5, 0.2])
    equal = r.mean() + 0.5 * r.var(ddof=1)
    assert _lognormal_offset(r, np.full(4, 3.0)) == pytest.approx(equal, rel=1e-12)
    # a zero weight drops its row: the mean and ddof=1 variance of the other three
    assert _lognormal_offset(r, np.array([1.0, 1.0, 1.0, 0.0])) == pytest.approx(
        r[:3].mean() + 0.5 * r[:3].var(ddof=1), rel=1e-12)


def test_weighted_mse_known_answer() -> None:
    o = torch.zeros(3, 2)
    r = torch.tensor([[1.0, 2.0], [3.0, 0.0], [1.0, 1.0]])
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    total, weight = masked_mse(o, r, mask, torch.tensor([0.5, 2.0, 7.0]))
    assert float(total) == pytest.approx(0.5 * (1 + 4) + 2.0 * 9) and weight == 0.5 * 2 + 2.0
    assert masked_mse(o, r, mask) == (pytest.approx(14.0), 3.0)


def test_weighted_fit_is_weighted_least_squares(panel: pd.DataFrame) -> None:
    """Slopes of the recency-weighted fit solve the normal equations X'WX b = X'Wy."""
    cfg = SMALL.model_copy(update={"half_life_days": 60.0, "lr": 1e-9, "max_epochs": 1})
    model = HarxMlpForecaster(cfg, horizons=(1,)).fit(panel)
    x, valid = raw_inputs(panel)
    ids = pd.Index(model.assets).get_indexer(panel.index.get_level_values("asset"))
    design = model._design(model._standardize(x), ids)
    y = np.log(np.maximum(panel.groupby(level="asset")["rv"].shift(-1).to_numpy(), 1e-10))
    ok = valid & np.isfinite(y)
    w = recency_weights(panel.index.get_level_values("date").to_numpy(), 60.0)[ok]
    xw = design[ok] * w[:, None]
    grad = xw.T @ (y[ok] - design[ok] @ model.coef[:, 0])  # (k,) zero at the WLS solution
    assert np.abs(grad).max() < 1e-8 * np.abs(xw.T @ y[ok]).max()
    # a half-life far longer than the panel weighs rows (nearly) equally: the unweighted fit
    flat = HarxMlpForecaster(SMALL.model_copy(update={"half_life_days": 1e9, "lr": 1e-9,
                                                      "max_epochs": 1}), (1,)).fit(panel)
    plain = HarxMlpForecaster(SMALL.model_copy(update={"lr": 1e-9, "max_epochs": 1}),
                              (1,)).fit(panel)
    np.testing.assert_allclose(flat.coef, plain.coef, rtol=1e-6, atol=1e-9)


def test_recency_weights_follow_a_level_shift() -> None:
    """Variance triples for the last 150 days: a short half-life forecasts nearer the new
    level than equal weights do (the per-asset intercept is what moves)."""
    panel = simulate_panel(("AAA", "BBB"), n_days=700, seed=2)
    late = panel.index.get_level_values("date") >= panel.index.get_level_values("date")[550]
    shifted = panel.copy()
    for col in ("rv", "rv_hourly", "gk_var", "har_rv_1d", "har_rv_7d", "har_rv_30d"):
        shifted.loc[late, col] = shifted.loc[late, col] * 3.0
    cfg = SMALL.model_copy(update={"lr": 1e-9, "max_epochs": 1})
    last = shifted.index.get_level_values("date").max()
    fits = {hl: HarxMlpForecaster(cfg.model_copy(update={"half_life_days": hl}), (1,))
            .fit(shifted).forecast(shifted, [1], pd.DatetimeIndex([last]))["variance"].mean()
            for hl in (None, 30.0)}
    recent = shifted.loc[late, "rv"].mean()
    assert abs(np.log(fits[30.0] / recent)) < abs(np.log(fits[None] / recent))


def test_own_dvol_head_columns(model: HarxMlpForecaster, panel: pd.DataFrame) -> None:
    """Indicator = own DVOL (AAA from day 200 only); the head's terms are exactly 0 elsewhere."""
    own = own_dvol(panel)
    assets = panel.index.get_level_values("asset")
    day = (panel.index.get_level_values("date") - panel.index.get_level_values("date").min()).days
    assert np.array_equal(own, (assets == "AAA") & (day >= DVOL_FIRST_DAY))
    x, _ = raw_inputs(panel)
    design = model._design(model._standardize(x), np.zeros(len(panel), dtype=int), own,
                           panel.index.get_level_values("date"))
    head = design[:, len(model.assets) + x.shape[1]:-6]  # (N, 1 + K), then 6 weekdays
    assert head.shape[1] == 1 + len(OWN_DVOL_TERMS)
    assert np.array_equal(head[:, 0], own.astype(float))
    assert not head[~own].any() and np.isfinite(head).all()
    assert "dvol_is_own" in model.columns
    with pytest.raises(ValueError, match="dvol_is_own"):
        model.forecast(panel.drop(columns="dvol_is_own"), horizons=[1])


def test_inputs_are_point_in_time(model: HarxMlpForecaster, panel: pd.DataFrame) -> None:
    """A forecast at t from the panel cut at t equals the one from the whole panel, and a
    pretend DVOL before it exists changes nothing."""
    full = model.forecast(panel, [1, 7]).set_index(["asset", "cutoff", "horizon_days"])
    for t in ("2020-07-10", "2020-12-01"):  # before and after DVOL starts (day 200)
        cut = panel[panel.index.get_level_values("date") <= pd.Timestamp(t)]
        got = model.forecast(cut, [1, 7], pd.DatetimeIndex([t]))
        got = got.set_index(["asset", "cutoff", "horizon_days"])["variance"]
        assert len(got) == 6
        np.testing.assert_allclose(got, full.loc[got.index, "variance"], rtol=1e-12)
    filled = panel.copy()
    filled.loc[~filled["dvol_available"], "dvol_var_1d"] = 1.0
    assert np.array_equal(model.forecast(filled, [1])["variance"].to_numpy(),
                          model.forecast(panel, [1])["variance"].to_numpy())


def test_state_round_trip_with_head_and_weights(model: HarxMlpForecaster, panel) -> None:
    state = json.loads(json.dumps(model.state()))
    assert state["config"]["own_dvol_slopes"] and state["config"]["half_life_days"] == 120.0
    rebuilt = HarxMlpForecaster.from_state(state)
    assert np.array_equal(model.forecast(panel, [1, 7])["variance"].to_numpy(),
                          rebuilt.forecast(panel, [1, 7])["variance"].to_numpy())
    with pytest.raises(ValueError, match="format"):
        HarxMlpForecaster.from_state({**state, "format": 1})


def test_selection_rule_known_answer() -> None:
    """S = mean over h of BTC/ETH QLIKE ratios to har_rv_pooled; the lowest wins."""
    rows = []
    losses = {"har_rv_pooled": (0.40, 0.20), "a": (0.38, 0.21), "b": (0.39, 0.19)}
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, size=50)
    for model, (l1, l7) in losses.items():
        for h, level in ((1, l1), (7, l7)):
            for asset in ("BTC", "SOL"):
                for i, day in enumerate(pd.date_range("2022-01-01", periods=50)):
                    rows.append({"model": model, "asset": asset, "horizon_days": h,
                                 "cutoff": day, "qlike": level + noise[i]})
    table = summary(pd.DataFrame(rows))
    score = selection_score(table)
    assert score["a"] == pytest.approx((0.38 / 0.40 + 0.21 / 0.20) / 2, rel=1e-3)
    assert score["b"] == pytest.approx((0.39 / 0.40 + 0.19 / 0.20) / 2, rel=1e-3)
    assert score[["a", "b"]].idxmin() == "b"
    assert next(iter(CANDIDATES.values())) == {  # harx_mlp before the study
        "linear_inputs": "all", "own_dvol_slopes": False, "dvol_min_days": 0,
        "half_life_days": None, "weekday_terms": False}


def test_har_iv_input_set_is_the_harx_iv_regressors(panel: pd.DataFrame) -> None:
    """linear_inputs='har_iv': the OLS sees asset dummies and HAR_IV_TERMS only."""
    cfg = SMALL.model_copy(update={"linear_inputs": "har_iv", "lr": 1e-9, "max_epochs": 1})
    model = HarxMlpForecaster(cfg, horizons=(1,)).fit(panel)
    x, _ = raw_inputs(panel)
    z = model._standardize(x)
    ids = pd.Index(model.assets).get_indexer(panel.index.get_level_values("asset"))
    design = model._design(z, ids)
    cols = [list(INPUT_NAMES).index(n) for n in HAR_IV_TERMS]
    assert design.shape == (len(panel), len(ASSETS) + len(HAR_IV_TERMS))
    assert np.array_equal(design[:, len(ASSETS):], z[:, cols])
    assert model.coef.shape == (len(ASSETS) + len(HAR_IV_TERMS), 1)


def test_dvol_inputs_wait_for_dvol_min_days(panel: pd.DataFrame) -> None:
    """AAA's DVOL has 299 dates with a 1-day target (days 200..498): a 300-day gate keeps
    every DVOL input at 0, so the DVOL values cannot move a forecast; a 250-day gate uses
    them (the simulated panel has no iv_rv_ratio / dvol_change_7d columns)."""
    cfg = SMALL.model_copy(update={"lr": 1e-9, "max_epochs": 1})
    gated = HarxMlpForecaster(cfg.model_copy(update={"dvol_min_days": 300}), (1,)).fit(panel)
    used = HarxMlpForecaster(cfg.model_copy(update={"dvol_min_days": 250}), (1,)).fit(panel)
    dvol = [list(INPUT_NAMES).index(n) for n in DVOL_TERMS]
    assert not gated.seen[dvol].any() and used.seen[[dvol[0], dvol[-1]]].all()
    moved = panel.copy()
    moved["dvol_var_1d"] = moved["dvol_var_1d"] * 2.0
    for model, same in ((gated, True), (used, False)):
        a = model.forecast(panel, [1])["variance"].to_numpy()
        b = model.forecast(moved, [1])["variance"].to_numpy()
        assert np.array_equal(a, b) == same


def test_weekday_columns_known_answer() -> None:
    dates = pd.DatetimeIndex(["2024-01-05", "2024-01-07", "2024-01-08"])  # Fri, Sun, Mon
    cols = weekday_columns(dates)  # the weekday of t+1: Sat, Mon, Tue
    assert np.array_equal(cols, [[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])


def test_weekday_terms_learn_a_quiet_saturday() -> None:
    """rv × 0.3 on Saturdays: the 1-day slope on 'day t+1 is a Saturday' is about ln 0.3."""
    panel = simulate_panel(("AAA", "BBB"), n_days=900, seed=4)
    saturday = panel.index.get_level_values("date").day_of_week == 5
    panel.loc[saturday, "rv"] *= 0.3
    cfg = SMALL.model_copy(update={"weekday_terms": True, "lr": 1e-9, "max_epochs": 1})
    model = HarxMlpForecaster(cfg, horizons=(1,)).fit(panel)
    assert model.coef[-2, 0] == pytest.approx(np.log(0.3), abs=0.15)  # Saturday column
    assert np.abs(model.coef[-6:-2, 0]).max() < 0.15  # Tue..Fri: no effect

"""HarxMlpForecaster: the linear HARX it starts from, the zero-start gate of its MLP, masked and
optional inputs, point-in-time forecasts, JSON state, determinism, and accuracy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from configs.schema import HarxMlpConfig
from features.schema import feature_view
from models.har import HarForecaster, within_wls
from models.harx_mlp import HarxMlpForecaster, recency_weights
from models.neural.inputs import raw_inputs
from models.neural.residual import ResidualMlp, ResidualNetConfig
from models.preprocessing import forward_targets
from pipelines.evaluation import evaluate
from tests.simulate import simulate_panel

SMALL = HarxMlpConfig(hidden=8, max_epochs=3, patience=2)
ASSETS = ("AAA", "BBB", "CCC")


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return simulate_panel(ASSETS, n_days=500, seed=3)


@pytest.fixture(scope="module")
def model(panel: pd.DataFrame) -> HarxMlpForecaster:
    return HarxMlpForecaster(SMALL, horizons=(1, 7)).fit(panel)


def qlike(realized: np.ndarray, forecast: np.ndarray) -> float:
    """Mean QLIKE, from the one definition the pipeline scores with."""
    return float(np.mean(evaluate.qlike(realized, forecast)))


def test_residual_mlp_starts_at_exactly_zero() -> None:
    net = ResidualMlp(ResidualNetConfig(n_inputs=5, n_assets=3, n_horizons=2))
    out = net(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))  # (4, 2)
    assert torch.equal(out, torch.zeros(4, 2))


def test_its_linear_part_on_the_har_cascade_is_har_rv_pooled(panel: pd.DataFrame) -> None:
    """The OLS design (asset dummies + standardized inputs), cut to the HAR cascade, gives
    har_rv_pooled's fitted log variance: standardizing regressors changes no fitted value."""
    model = HarxMlpForecaster(SMALL, horizons=(1,)).fit(panel)
    x, valid = raw_inputs(panel)
    names = panel.index.get_level_values("asset")[valid]
    design = model._design(model._standardize(x)[valid], pd.Index(model.assets).get_indexer(names),
                           dates=panel.index.get_level_values("date")[valid])
    har_only = design[:, : len(ASSETS) + 3]  # dummies, log_har_rv_{1,7,30}d
    log_y = np.log(forward_targets(panel, (1,))[valid, 0])
    ok = np.isfinite(log_y)
    coef, *_ = np.linalg.lstsq(har_only[ok], log_y[ok], rcond=None)

    har = HarForecaster(horizons=(1,), alias="har_rv_pooled").fit(panel)
    slopes = np.asarray(har.params["AAA"]["har"]["1"]["coef"][1:])  # common to every asset
    intercept = names[ok].map({a: har.params[a]["har"]["1"]["coef"][0] for a in ASSETS})
    fitted_har = x[valid][ok][:, :3] @ slopes  # x holds the log HAR terms already
    np.testing.assert_allclose(har_only[ok] @ coef, fitted_har + intercept.to_numpy(), atol=1e-8)


def test_within_fit_equals_least_squares_on_the_dummy_design() -> None:
    """Weighted least squares with one intercept per group, solved without the (N, G) dummy
    block: same coefficients as lstsq on [dummies, x] (x of full rank within groups), a group
    without rows gets 0 as its zero dummy column does, an all-zero column gets slope 0."""
    rng = np.random.default_rng(7)
    n, groups = 600, 5
    codes = rng.integers(0, groups - 1, n)  # group 4 has no row
    x = np.column_stack([rng.normal(size=(n, 3)), np.zeros(n)])
    y = rng.normal(size=groups)[codes] + x[:, :3] @ [0.5, -1.0, 2.0] + rng.normal(size=n)
    w = rng.uniform(0.1, 2.0, n)
    intercepts, slopes, resid = within_wls(x, y, codes, groups, w)
    dummies = (codes[:, None] == np.arange(groups)).astype(float)
    root = np.sqrt(w)[:, None]
    ref, *_ = np.linalg.lstsq(root * np.column_stack([dummies, x]), root[:, 0] * y, rcond=None)
    np.testing.assert_allclose(np.r_[intercepts, slopes], ref, rtol=1e-10, atol=1e-12)
    fitted = np.column_stack([dummies, x]) @ ref
    np.testing.assert_allclose(resid, y - fitted, atol=1e-10)  # the dummy fit's
    assert intercepts[4] == 0.0 and slopes[3] == 0.0


def test_fitted_ols_part_is_the_dummy_design_fit(panel: pd.DataFrame) -> None:
    """The model's OLS coefficients, per horizon on that horizon's target rows and with
    recency weights, are least squares on the written-out design (dummies + slopes): the same
    fitted values, and the same slopes wherever a column varies within an asset (the
    simulated panel's hourly-proxy flag is constant per asset, so its split with the
    intercepts is not identified and is not compared)."""
    cfg = SMALL.model_copy(update={"half_life_days": 90.0, "lr": 1e-9, "max_epochs": 1})
    model = HarxMlpForecaster(cfg, horizons=(1, 7)).fit(panel)
    x, valid = raw_inputs(panel)
    dates = panel.index.get_level_values("date")
    ids = pd.Index(model.assets).get_indexer(panel.index.get_level_values("asset"))
    design = model._design(model._standardize(x), ids, dates=dates)
    log_y = np.log(np.maximum(forward_targets(panel, (1, 7)) / np.array([1.0, 7.0]), 1e-10))
    root = np.sqrt(recency_weights(dates.to_numpy(), 90.0))[:, None]
    for j in range(2):
        ok = valid & np.isfinite(log_y[:, j])
        ref, *_ = np.linalg.lstsq(root[ok] * design[ok], root[ok, 0] * log_y[ok, j], rcond=None)
        np.testing.assert_allclose(design[ok] @ model.coef[:, j], design[ok] @ ref,
                                   rtol=1e-9, atol=1e-9)
        slopes = design[ok][:, len(model.assets):]
        zero = ~slopes.any(axis=0)      # inputs never seen in training: slope 0 in both
        varies = (pd.DataFrame(slopes).groupby(ids[ok]).std(ddof=0).max() > 1e-12).to_numpy()
        assert 0 < (~varies & ~zero).sum() <= 2  # the flag (and at most one more) per asset
        mine, theirs = model.coef[len(model.assets):, j], ref[len(model.assets):]
        assert zero.any() and np.allclose(mine[zero], 0.0, atol=1e-12)
        assert np.allclose(theirs[zero], 0.0, atol=1e-12)
        np.testing.assert_allclose(mine[varies], theirs[varies], rtol=1e-7, atol=1e-9)


def test_mlp_that_never_beats_zero_on_validation_adds_nothing(panel: pd.DataFrame) -> None:
    cfg = SMALL.model_copy(update={"lr": 1e-9, "max_epochs": 2})  # cannot move
    model = HarxMlpForecaster(cfg, horizons=(1,)).fit(panel)
    assert model.best_epochs == [-1]
    z = np.random.default_rng(0).normal(size=(10, model.seen.size))
    assert np.array_equal(model._correction(z, np.zeros(10, dtype=int)), np.zeros((10, 1)))


def test_forecast_contract_and_point_in_time(model: HarxMlpForecaster, panel) -> None:
    fc = model.forecast(panel, horizons=[1, 7])
    assert np.isfinite(fc["variance"]).all() and (fc["variance"] > 0).all()
    assert len(fc) == 2 * 3 * (500 - 29)  # har_rv_30d needs 30 days
    by_h = fc.groupby("horizon_days")["variance"].mean()
    assert 4.0 < by_h[7] / by_h[1] < 10.0
    full = fc.set_index(["asset", "cutoff", "horizon_days"])["variance"]
    t = pd.Timestamp("2020-08-01")
    alone = model.forecast(panel[panel.index.get_level_values("date") == t], horizons=[1, 7])
    got = alone.set_index(["asset", "cutoff", "horizon_days"])["variance"]
    np.testing.assert_allclose(got, full.loc[got.index], rtol=1e-9)


def test_masked_dvol_and_absent_optional_columns(model: HarxMlpForecaster, panel) -> None:
    garbage = panel.copy()
    garbage.loc[~garbage["dvol_available"], "dvol_var_1d"] = 1.0  # a pretend fill
    a = model.forecast(panel, horizons=[1])["variance"].to_numpy()
    b = model.forecast(garbage, horizons=[1])["variance"].to_numpy()
    assert np.array_equal(a, b)
    # the seeded panel lacks the optional columns: fitted without them, never read
    assert model.columns == ["corr_spx_30d"]
    with pytest.raises(ValueError, match="corr_spx_30d"):
        model.forecast(panel.drop(columns="corr_spx_30d"), horizons=[1])


def test_an_asset_only_in_the_validation_part_is_corrected_as_a_typical_asset() -> None:
    """DDD's rows all fall in the last 60 days (the validation part): no training row could
    move its embedding, so each seed's net gives it the trained embeddings' mean (it
    kept its random start before), and its rows do not judge the early stopping."""
    panel = simulate_panel((*ASSETS, "DDD"), n_days=600, seed=5)
    dates = panel.index.get_level_values("date")
    late = dates >= dates.max() - pd.Timedelta(days=60)
    panel = panel[late | (panel.index.get_level_values("asset") != "DDD")]
    model = HarxMlpForecaster(HarxMlpConfig(hidden=8, max_epochs=20, patience=5, lr=3e-2),
                              horizons=(1, 7)).fit(panel)
    assert model.assets == [*ASSETS, "DDD"] and model.best_epochs[0] >= 0  # the MLP is used
    for net in model.nets:
        weight = net.embed.weight.detach()
        assert torch.equal(weight[3], weight[:3].mean(0))
        assert not torch.equal(weight[0], weight[1])  # the trained ones were learnt
    restored = HarxMlpForecaster.from_state(json.loads(json.dumps(model.state())))
    rows = feature_view(panel).xs("DDD", level="asset", drop_level=False).tail(5)
    assert restored.forecast(rows, (1, 7)).equals(model.forecast(rows, (1, 7)))


def test_fit_refuses_target_columns() -> None:
    with_targets = simulate_panel(("AAA",), n_days=200, seed=0, with_targets=True)
    with pytest.raises(ValueError, match="target_variance_1d"):
        HarxMlpForecaster(SMALL).fit(with_targets)


def test_state_round_trip_is_json_and_bit_identical(model: HarxMlpForecaster, panel) -> None:
    rebuilt = HarxMlpForecaster.from_state(json.loads(json.dumps(model.state())))
    a = model.forecast(panel, horizons=[1, 7])["variance"].to_numpy()
    b = rebuilt.forecast(panel, horizons=[1, 7])["variance"].to_numpy()
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="alias"):
        HarxMlpForecaster.from_state({**model.state(), "alias": "mlp_har"})


def test_same_seeds_give_identical_forecasts(panel: pd.DataFrame) -> None:
    cfg = SMALL.model_copy(update={"seeds": [1, 2]})
    a = HarxMlpForecaster(cfg, horizons=(1,)).fit(panel).forecast(panel, [1])
    b = HarxMlpForecaster(cfg, horizons=(1,)).fit(panel).forecast(panel, [1])
    assert np.array_equal(a["variance"].to_numpy(), b["variance"].to_numpy())


def test_it_beats_a_constant_forecast_out_of_sample() -> None:
    full = simulate_panel(("AAA", "BBB"), n_days=1500, seed=0, with_targets=True)
    dates = full.index.get_level_values("date")
    split = dates.min() + pd.Timedelta(days=1100)
    train = feature_view(full[dates < split])
    model = HarxMlpForecaster(SMALL, horizons=(1,)).fit(train)
    fc = model.forecast(feature_view(full), horizons=[1], cutoffs=dates[dates >= split].unique())
    realized = full["target_variance_1d"].reindex(pd.MultiIndex.from_frame(fc[["asset", "cutoff"]]))
    ok = np.isfinite(realized.to_numpy())
    model_loss = qlike(realized.to_numpy()[ok], fc["variance"].to_numpy()[ok])
    constant_loss = qlike(realized.to_numpy()[ok], np.full(ok.sum(), train["rv"].mean()))
    assert model_loss < 0.9 * constant_loss, (model_loss, constant_loss)

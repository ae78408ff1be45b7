"""Baseline forecasters against known answers: EWMA by hand, HAR OLS on a simulated log-HAR
process, GARCH/GJR term structures against arch and the closed form, EGARCH against its exact
Gaussian moments and a brute-force bootstrap, the tree ensemble's JSON round trip, and
registry ↔ config consistency."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from arch.univariate.distribution import Normal, SkewStudent
from scipy.stats import norm
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from configs.schema import EwmaConfig, GbmConfig, HarConfig, ModelsConfig
from features.loaders import load_daily
from features.schema import feature_view
from models.ewma import EwmaForecaster, ewma_variance
from models.garch import SCALE, GarchForecaster, plausible
from models.gbm import GbmForecaster, TreeEnsemble, export_ensemble
from models.har import HarForecaster
from models.preprocessing import (
    INPUTS,
    make_preprocessor,
    preprocessor_from_state,
    preprocessor_state,
)
from models.registry import REGISTRY, build_forecaster
from tests.conftest import MARKET
from tests.fresh import watched_imports
from tests.simulate import simulate_panel

SMALL_GBM = GbmConfig(max_iter=40, min_samples_leaf=20)
PANEL_ARGS, PANEL_DAYS, PANEL_SEED = ("AAA", "BBB"), 600, 11  # the simulated panel below


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return feature_view(simulate_panel(PANEL_ARGS, n_days=PANEL_DAYS, seed=PANEL_SEED))


def _last(panel: pd.DataFrame, k: int = 1) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(panel.index.levels[1][-k:])


# --------------------------------------------------------------------------- registry/config
def test_every_alias_has_its_own_config_section_and_vice_versa() -> None:
    sections = set(ModelsConfig.model_fields) - {"enabled"}
    assert sections == set(REGISTRY)


def test_default_enabled_models_are_registered() -> None:
    assert set(ModelsConfig().enabled) <= set(REGISTRY)


# --------------------------------------------------------------------------------- EWMA
def test_ewma_recursion_matches_a_hand_computation() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.0])
    got = ewma_variance(r, decay=0.9, init_obs=2)
    start = (0.01**2 + 0.02**2) / 2  # 2.5e-4: mean square of the first two returns
    third = 0.9 * start + 0.1 * 0.03**2  # 3.15e-4
    np.testing.assert_allclose(got, [np.nan, start, third, 0.9 * third], rtol=1e-12)


def test_ewma_term_structure_is_flat_and_starts_after_init_obs(panel) -> None:
    model = EwmaForecaster(EwmaConfig(init_obs=30)).fit(panel)
    fc = model.forecast(panel, [1, 7])
    wide = fc.pivot_table(index=["asset", "cutoff"], columns="horizon_days", values="variance")
    np.testing.assert_allclose(wide[7], 7 * wide[1], rtol=1e-12)
    first = fc.groupby("asset")["cutoff"].min()
    returns = panel["ret_1d"].dropna()
    for asset, cutoff in first.items():
        assert cutoff == returns.xs(asset, level="asset").index[29]  # the 30th return


def test_ewma_skips_assets_unknown_to_fit(panel) -> None:
    model = EwmaForecaster().fit(panel.loc[["AAA"]])
    assert set(model.forecast(panel, [1])["asset"]) == {"AAA"}


# ---------------------------------------------------------------------------------- HAR
TRUE_HAR = np.array([-0.7, 0.3, 0.35, 0.25])  # β0, βd, βw, βm of log RV_{t+1}


def log_har_panel(beta: np.ndarray, sigma: float, n: int, seed: int, asset: str) -> pd.DataFrame:
    """rv from log RV_{t+1} = x_t'β + σ ε (Gaussian), with the panel's HAR terms of it."""
    rng = np.random.default_rng(seed)
    rv = np.full(n, np.exp(beta[0] / (1 - beta[1:].sum())))
    for t in range(30, n - 1):
        x = np.log([rv[t], rv[t - 6 : t + 1].mean(), rv[t - 29 : t + 1].mean()])
        rv[t + 1] = np.exp(beta[0] + beta[1:] @ x + sigma * rng.standard_normal())
    s = pd.Series(rv, index=pd.date_range("2000-01-01", periods=n, freq="D", name="date"))
    frame = pd.DataFrame({"rv": s, "har_rv_1d": s, "har_rv_7d": s.rolling(7).mean(),
                          "har_rv_30d": s.rolling(30).mean()}).iloc[30:]
    return pd.concat({asset: frame}, names=["asset", "date"])


def test_har_ols_recovers_the_coefficients_of_a_log_har_process() -> None:
    panel = log_har_panel(TRUE_HAR, 0.5, 6000, seed=0, asset="AAA")
    model = HarForecaster(HarConfig(), [1]).fit(panel)
    fit = model.params["AAA"]["har"]["1"]
    np.testing.assert_allclose(fit["coef"][1:], TRUE_HAR[1:], atol=0.03)
    assert fit["coef"][0] == pytest.approx(TRUE_HAR[0], abs=0.1)
    assert fit["resid_var"] == pytest.approx(0.25, rel=0.03)
    # forecast = exp(x'β + σ²/2): the mean of a log-normal, not its median
    row = panel.iloc[[-1]]
    x = np.r_[1.0, np.log(row[["har_rv_1d", "har_rv_7d", "har_rv_30d"]].to_numpy()[0])]
    fc = model.forecast(panel, [1], _last(panel))
    expected = np.exp(x @ np.array(fit["coef"]) + fit["resid_var"] / 2)
    assert fc["variance"].iloc[0] == pytest.approx(expected, rel=1e-12)


def test_pooled_har_shares_slopes_and_keeps_each_assets_intercept() -> None:
    other = np.r_[-0.4, TRUE_HAR[1:]]
    panel = pd.concat([log_har_panel(TRUE_HAR, 0.5, 4000, 1, "AAA"),
                       log_har_panel(other, 0.5, 4000, 2, "BBB")])
    model = HarForecaster(HarConfig(), [1], alias="har_rv_pooled").fit(panel)
    a, b = (np.array(model.params[k]["har"]["1"]["coef"]) for k in ("AAA", "BBB"))
    np.testing.assert_array_equal(a[1:], b[1:])
    np.testing.assert_allclose(a[1:], TRUE_HAR[1:], atol=0.03)
    assert b[0] - a[0] == pytest.approx(0.3, abs=0.03)


def test_har_targets_are_direct_multi_day_means(panel) -> None:
    model = HarForecaster(HarConfig(min_obs=100), [1, 7]).fit(panel)
    n1, n7 = (model.params["AAA"]["har"][h]["n"] for h in ("1", "7"))
    assert n1 - n7 == 6  # the 7-day target needs six more days after the cutoff
    assert n1 == len(panel.loc["AAA"]) - 29 - 1  # har_rv_30d warm-up, then one-day target


def test_harx_uses_the_plain_har_where_dvol_is_unavailable(panel) -> None:
    har = HarForecaster(HarConfig(min_obs=100), [1, 7]).fit(panel)
    harx = HarForecaster(HarConfig(min_obs=100), [1, 7], alias="harx_iv").fit(panel)
    assert set(harx.params["AAA"]) == {"har", "harx"}
    a, b = har.forecast(panel, [1, 7]), harx.forecast(panel, [1, 7])
    no_iv = ~panel["dvol_available"].to_numpy()
    cut = pd.MultiIndex.from_frame(a[["asset", "cutoff"]]).isin(panel.index[no_iv])
    assert cut.sum() > 100
    np.testing.assert_array_equal(a["variance"][cut], b["variance"][cut])
    assert not np.allclose(a["variance"][~cut], b["variance"][~cut])


def test_har_refuses_an_untrained_horizon(panel) -> None:
    model = HarForecaster(HarConfig(min_obs=100), [1]).fit(panel)
    with pytest.raises(ValueError, match="not trained"):
        model.forecast(panel, [7])


# -------------------------------------------------------------------------------- GARCH
@pytest.mark.parametrize(("alias", "params"), [
    ("garch11_t", {"omega": 0.05, "alpha[1]": 0.08, "beta[1]": 0.9, "nu": 6.0}),
    ("gjr_t", {"omega": 0.05, "alpha[1]": 0.04, "gamma[1]": 0.08, "beta[1]": 0.9, "nu": 6.0}),
])
def test_garch_multi_day_forecast_is_the_closed_form(panel, alias, params) -> None:
    model = GarchForecaster(alias=alias)
    model.params = {"AAA": params}
    cutoffs = _last(panel, 2)
    fc = model.forecast(panel, [1, 7, 30], cutoffs).set_index(["cutoff", "horizon_days"])
    w, a, g, b = (params.get(k, 0.0) for k in ("omega", "alpha[1]", "gamma[1]", "beta[1]"))
    phi = a + g / 2 + b  # persistence; E[z² 1{z<0}] = 1/2 for a symmetric z
    long_run = w / (1 - phi) / SCALE**2
    for t in cutoffs:
        s1 = fc.loc[(t, 1), "variance"]
        for h in (7, 30):
            closed = h * long_run + (s1 - long_run) * (1 - phi**h) / (1 - phi)
            assert fc.loc[(t, h), "variance"] == pytest.approx(closed, rel=1e-10)
    # and the one-day forecasts follow the GARCH recursion with the realized return
    r = panel.loc[("AAA", cutoffs[1]), "ret_1d"] * SCALE
    s0 = fc.loc[(cutoffs[0], 1), "variance"] * SCALE**2
    nxt = w + (a + g * (r < 0)) * r**2 + b * s0
    assert fc.loc[(cutoffs[1], 1), "variance"] * SCALE**2 == pytest.approx(nxt, rel=1e-10)


@pytest.mark.parametrize("alias", ["garch11_t", "gjr_t"])
def test_symmetric_term_structure_equals_arch_analytic_forecast(panel, alias) -> None:
    model = GarchForecaster(alias=alias).fit(panel)
    returns = panel.loc["AAA", "ret_1d"].dropna() * SCALE
    cutoffs = returns.index[-30:]
    ours = model.variance_paths("AAA", returns, cutoffs, 10) * SCALE**2
    res = model._model(returns).fix(pd.Series(model.params["AAA"]))
    theirs = res.forecast(horizon=10, start=cutoffs[0], reindex=False).variance.to_numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_gjr_skewt_term_structure_uses_the_skewed_half_moment(panel) -> None:
    params = {"omega": 0.05, "alpha[1]": 0.04, "gamma[1]": 0.1, "beta[1]": 0.9,
              "eta": 5.0, "lambda": -0.2}
    model = GarchForecaster(alias="gjr_skewt")
    model.params = {"AAA": params}
    # κ = E[z² 1{z<0}] of the skew-t, by brute force: left skew puts more than half below 0
    z = SkewStudent(seed=0).simulate([5.0, -0.2])(2_000_000)
    kappa = float(np.mean(z**2 * (z < 0)))
    assert kappa > 0.53
    returns = panel.loc["AAA", "ret_1d"].dropna() * SCALE
    path = model.variance_paths("AAA", returns, returns.index[-1:], 30)[0] * SCALE**2
    phi = 0.04 + kappa * 0.1 + 0.9
    np.testing.assert_allclose(path[1:], 0.05 + phi * path[:-1], rtol=2e-3)


EGARCH = {"omega": 0.02, "alpha[1]": 0.15, "gamma[1]": -0.05, "beta[1]": 0.97, "nu": 8.0}


def _egarch_normal_moment(c: float) -> float:
    """E exp(c·(α(|z| - √(2/π)) + γ z)) for z ~ N(0, 1), in closed form."""
    A, B = c * EGARCH["alpha[1]"], c * EGARCH["gamma[1]"]
    return float(np.exp(-A * np.sqrt(2 / np.pi)) * (np.exp((A + B) ** 2 / 2) * norm.cdf(A + B)
                                                     + np.exp((A - B) ** 2 / 2) * norm.cdf(A - B)))


@pytest.fixture(scope="module")
def gaussian_egarch() -> pd.Series:
    """Returns (×100) of an EGARCH path with N(0,1) shocks: Gaussian standardized residuals."""
    spec = arch_model(None, mean="Zero", vol="EGARCH", p=1, o=1, q=1, dist="normal")
    spec.distribution = Normal(seed=np.random.default_rng(4))
    sim = spec.simulate([EGARCH[k] for k in ("omega", "alpha[1]", "gamma[1]", "beta[1]")],
                        40_000)
    return pd.Series(sim["data"].to_numpy(),
                     index=pd.date_range("2000-01-01", periods=40_000, freq="D", name="date"))


def test_egarch_term_structure_matches_gaussian_moments_and_long_run(gaussian_egarch) -> None:
    # Shocks come from the residual pool; with Gaussian residuals E_t σ²_{t+k} must match the
    # closed-form Gaussian-EGARCH moments, and reach the long-run level.
    returns = gaussian_egarch
    model = GarchForecaster(alias="egarch_t")
    model.params = {"AAA": EGARCH}
    horizon = 300
    step = model.variance_paths("AAA", returns, returns.index[-1:], horizon)[0] * SCALE**2
    w, b = EGARCH["omega"], EGARCH["beta[1]"]
    moments = np.cumprod([_egarch_normal_moment(b**i) for i in range(horizon)])
    k = np.arange(2, horizon + 1)
    exact = np.exp(w * (1 - b ** (k - 1)) / (1 - b) + b ** (k - 1) * np.log(step[0]))
    np.testing.assert_allclose(step[1:], exact * moments[k - 2], rtol=0.03)  # pool: 40k draws
    long_run = np.exp(w / (1 - b)) * np.prod([_egarch_normal_moment(b**i) for i in range(3000)])
    assert step[-1] == pytest.approx(long_run, rel=0.03)


def test_egarch_closed_form_is_the_limit_of_a_bootstrap_simulation(panel) -> None:
    model = GarchForecaster(alias="egarch_t").fit(panel)
    params = model.params["AAA"]
    returns = panel.loc["AAA", "ret_1d"].dropna() * SCALE
    t = returns.index[450]
    closed = model.variance_paths("AAA", returns, pd.DatetimeIndex([t]), 5)[0] * SCALE**2
    res = model._model(returns).fix(pd.Series(params))
    pool = res.std_resid.loc[:t].to_numpy()  # the residuals known at t
    rng = np.random.default_rng(0)
    ln_s2 = np.full(400_000, np.log(closed[0]))
    for k in range(1, 5):
        z = rng.choice(pool, size=ln_s2.size)
        ln_s2 = (params["omega"] + params["alpha[1]"] * (np.abs(z) - np.sqrt(2 / np.pi))
                 + params["gamma[1]"] * z + params["beta[1]"] * ln_s2)
        assert np.exp(ln_s2).mean() == pytest.approx(closed[k], rel=0.01)


def test_egarch_forecast_at_t_is_the_same_in_any_call(panel) -> None:
    model = GarchForecaster(alias="egarch_t").fit(panel)
    cutoffs = _last(panel, 5)
    together = model.forecast(panel, [1, 7], cutoffs)
    alone = model.forecast(panel, [1, 7], cutoffs[2:3])
    longer = model.forecast(panel, [7, 14], cutoffs[2:3])
    pick = together[together["cutoff"] == cutoffs[2]]
    np.testing.assert_array_equal(pick["variance"], alone["variance"])
    np.testing.assert_array_equal(alone.query("horizon_days == 7")["variance"],
                                  longer.query("horizon_days == 7")["variance"])


def _btc_returns(start: str, end: str) -> pd.DataFrame:
    """A returns-only panel of the embedded BTC daily closes (real data, sliced)."""
    close = load_daily(MARKET / "crypto" / "daily" / "BTC.csv.gz")["close"].loc[start:end]
    frame = pd.DataFrame({"ret_1d": np.log(close).diff()})
    return pd.concat({"BTC": frame}, names=["asset", "date"])


def test_degenerate_fits_are_rejected_and_forecasts_stay_finite() -> None:
    # On this short real slice arch's optimiser "converges" to α ≈ 4e2, ν → 2 for EGARCH-t.
    panel = _btc_returns("2023-07-01", "2024-12-30")
    for alias in ("egarch_t", "garch11_t"):
        model = GarchForecaster(alias=alias).fit(panel)
        fc = model.forecast(panel, [1, 7])
        assert np.isfinite(fc["variance"]).all() and (fc["variance"] > 0).all()
        res = model._model(panel["ret_1d"].dropna() * SCALE).fit(disp="off",
                                                                  options={"maxiter": 500})
        assert ("BTC" in model.params) == plausible(res)


def test_plausible_wants_unit_variance_residuals() -> None:
    def fit(z: np.ndarray, flag: int = 0) -> SimpleNamespace:
        return SimpleNamespace(convergence_flag=flag, params=pd.Series([0.1, 0.9]),
                               std_resid=pd.Series(z))

    z = np.random.default_rng(0).standard_normal(1000)
    assert plausible(fit(z))
    assert not plausible(fit(z, flag=4))
    assert not plausible(fit(z * 10))  # the model does not explain the scale


def test_garch_state_from_before_the_spec_table_still_loads(panel) -> None:
    model = GarchForecaster().fit(panel)
    old = {**model.state(), "config": {"dist": "t"}}  # the format of the first release
    clone = GarchForecaster.from_state(old)
    pd.testing.assert_frame_equal(clone.forecast(panel, [1], _last(panel)),
                                  model.forecast(panel, [1], _last(panel)))
    with pytest.raises(ValueError, match="dist"):
        GarchForecaster.from_state({**old, "config": {"dist": "skewt"}})


# ---------------------------------------------------------------------------------- GBM
def test_tree_ensemble_reproduces_sklearn_predict(panel) -> None:
    x = make_preprocessor(["AAA", "BBB"], scale=False).fit_transform(panel)
    y = panel["har_rv_7d"].shift(-1).fillna(1e-3).to_numpy() + 1e-6
    with threadpool_limits(limits=1, user_api="openmp"):
        hgb = HistGradientBoostingRegressor(loss="gamma", max_iter=30, random_state=0).fit(x, y)
    raw = export_ensemble(hgb).raw_predict(x)
    np.testing.assert_allclose(np.exp(raw), hgb.predict(x), rtol=1e-12)


def test_gbm_refits_with_the_iteration_count_its_validation_scores_best(
        panel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Early stopping runs n_iter_no_change iterations past the best one and keeps them; the
    refit on every row takes the count the validation part scored best, not the count run."""
    cfg = GbmConfig(max_iter=400, min_samples_leaf=20, n_iter_no_change=10)
    made = []
    real = GbmForecaster._regressor

    def spy(self, max_iter: int, early_stopping: bool):
        made.append(real(self, max_iter, early_stopping))
        return made[-1]

    monkeypatch.setattr(GbmForecaster, "_regressor", spy)
    model = GbmForecaster(cfg, horizons=[1]).fit(panel)
    probe, final = made
    best = int(np.argmax(probe.validation_score_))
    assert probe.n_iter_ == best + cfg.n_iter_no_change  # it stopped early, past the best
    assert model.n_iter[1] == best == final.max_iter == final.n_iter_


def test_a_served_gbm_needs_no_scikit_learn(panel) -> None:
    """A restored gbm_sklearn predicts with its exported trees and the input matrix, numpy
    alone: a fresh interpreter restoring and forecasting imports no scikit-learn (0.8 s of a
    twelve-asset serve), and forecasts what the fitted model does, bit for bit."""
    model = GbmForecaster(SMALL_GBM, horizons=[1, 7]).fit(panel)
    rows = feature_view(panel).tail(40)
    expected = model.forecast(rows, [1, 7])
    code = (
        "import json, numpy as np, pandas as pd\n"
        "from models.registry import forecaster_from_state\n"
        "from features.schema import feature_view\n"
        "from tests.simulate import simulate_panel\n"
        f"model = forecaster_from_state(json.loads({json.dumps(json.dumps(model.state()))}))\n"
        f"rows = feature_view(simulate_panel({PANEL_ARGS!r}, n_days={PANEL_DAYS}, "
        f"seed={PANEL_SEED})).tail(40)\n"
        "fc = model.forecast(rows, [1, 7])\n"
        f"assert fc['variance'].tolist() == {expected['variance'].tolist()!r}\n"
    )
    assert watched_imports(code) == []


def test_gbm_state_is_strict_json_and_round_trips_exactly(panel) -> None:
    model = GbmForecaster(SMALL_GBM, horizons=[1, 7]).fit(panel)
    text = json.dumps(model.state(), allow_nan=False)  # no NaN/inf tokens, no pickle bytes
    clone = GbmForecaster.from_state(json.loads(text))
    a, b = model.forecast(panel, [1, 7]), clone.forecast(panel, [1, 7])
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(a) > 0


def test_asset_onehot_columns_and_unknown_assets(panel) -> None:
    """One indicator per vocabulary asset, set where the row's asset is it; an asset outside
    the vocabulary is all zeros."""
    pipe = make_preprocessor(["BBB", "ZZZ"], scale=False).fit(panel)
    x = pipe.transform(panel)
    asset = panel.index.get_level_values("asset")
    assert x.shape[1] == len(INPUTS) + 2
    np.testing.assert_array_equal(x[:, -2], (asset == "BBB").astype(float))
    assert not x[:, -1].any() and x[np.asarray(asset == "AAA"), -2:].sum() == 0


@pytest.mark.parametrize("onehot", [False, True])
def test_gbm_with_and_without_asset_onehot(panel, onehot: bool) -> None:
    """The indicators are inputs only when asked; either way forecasts cover exactly the
    assets seen in fit and the state round-trips."""
    cfg = SMALL_GBM.model_copy(update={"asset_onehot": onehot})
    seen = panel[panel.index.get_level_values("asset") == "AAA"]
    model = GbmForecaster(cfg, horizons=[1]).fit(seen)
    columns = model.preprocessor.named_steps["features"].get_feature_names_out()
    assert ("asset=AAA" in columns) is onehot and model.assets == ["AAA"]
    fc = model.forecast(panel, [1])
    assert set(fc["asset"]) == {"AAA"}
    clone = GbmForecaster.from_state(json.loads(json.dumps(model.state())))
    pd.testing.assert_frame_equal(clone.forecast(panel, [1]), fc, check_exact=True)


def test_a_pegged_asset_does_not_train_the_pooled_trees() -> None:
    """A third asset at a stablecoin's variance (its simulated path scaled to ~0.05% a day):
    its rows do not train the trees, which are then those fitted without it (the other
    assets' forecasts exactly equal); with the guard off they move the others' forecasts
    (the defect: the gamma loss's Newton steps on rows ~1,000x calmer than the rest)."""
    sim = simulate_panel(("AAA", "BBB", "PEG"), n_days=600, seed=11)
    peg = sim.index.get_level_values("asset") == "PEG"
    scale = 0.0005 / np.sqrt(sim.loc[peg, "rv"].mean())  # to ~0.05% daily vol
    for col in ("rv", "har_rv_1d", "har_rv_7d", "har_rv_30d", "gk_var", "rv_hourly",
                "dvol_var_1d"):
        sim.loc[peg, col] = sim.loc[peg, col] * scale ** 2
    sim.loc[peg, "ret_1d"] = sim.loc[peg, "ret_1d"] * scale
    pooled = feature_view(sim)
    alone = pooled[~peg]
    cuts = _last(alone, 30)
    want = GbmForecaster(SMALL_GBM, horizons=[1]).fit(alone).forecast(alone, [1], cuts)
    got = GbmForecaster(SMALL_GBM, horizons=[1]).fit(pooled).forecast(pooled, [1], cuts)
    pd.testing.assert_frame_equal(got[got["asset"] != "PEG"].reset_index(drop=True), want)
    off = SMALL_GBM.model_copy(update={"min_train_vol_1d": 0.0})
    hurt = GbmForecaster(off, horizons=[1]).fit(pooled).forecast(pooled, [1], cuts)
    moved = np.abs(np.log(hurt[hurt["asset"] != "PEG"]["variance"].to_numpy()
                          / want["variance"].to_numpy()))
    assert moved.max() > 0.1


def test_gbm_draws_at_most_max_train_rows_seeded_and_forecasts_every_asset(panel) -> None:
    """Past ``max_train_rows`` a fit draws that many rows (seeded: the same rows every time,
    other rows with another seed); below it, every row is used; forecasts cover every asset
    either way."""
    full = GbmForecaster(SMALL_GBM, horizons=[1]).fit(panel)
    usable = full.rows_used
    assert 1_100 < usable < SMALL_GBM.max_train_rows  # the default cap does not bite here
    capped_cfg = SMALL_GBM.model_copy(update={"max_train_rows": 1_000})
    capped = GbmForecaster(capped_cfg, horizons=[1]).fit(panel)
    again = GbmForecaster(capped_cfg, horizons=[1]).fit(panel)
    other = GbmForecaster(capped_cfg.model_copy(update={"seed": 8}), horizons=[1]).fit(panel)
    assert capped.rows_used == 1_000
    fc = capped.forecast(panel, [1])
    assert set(fc["asset"]) == {"AAA", "BBB"} and len(fc) == len(full.forecast(panel, [1]))
    pd.testing.assert_frame_equal(again.forecast(panel, [1]), fc, check_exact=True)
    assert not np.array_equal(fc["variance"], full.forecast(panel, [1])["variance"])
    assert not np.array_equal(fc["variance"], other.forecast(panel, [1])["variance"])
    uncapped = GbmForecaster(SMALL_GBM.model_copy(update={"max_train_rows": None}),
                             horizons=[1]).fit(panel)
    assert uncapped.rows_used == usable
    pd.testing.assert_frame_equal(uncapped.forecast(panel, [1]), full.forecast(panel, [1]),
                                  check_exact=True)


def test_tree_ensemble_json_keeps_missing_value_splits() -> None:
    tree = {"feature_idx": np.array([0, 0, 0]), "num_threshold": np.array([np.inf, 0.0, 0.0]),
            "missing_go_to_left": np.array([False, False, False]),
            "left": np.array([1, 0, 0]), "right": np.array([2, 0, 0]),
            "is_leaf": np.array([False, True, True]), "value": np.array([0.0, 1.0, 2.0])}
    ens = TreeEnsemble.from_json(json.loads(json.dumps(TreeEnsemble(0.5, [tree]).to_json())))
    x = np.array([[3.0], [np.nan]])
    np.testing.assert_array_equal(ens.raw_predict(x), [1.5, 2.5])  # present left, NaN right


def test_scaled_preprocessor_learns_only_from_its_training_rows(panel) -> None:
    train = panel[panel.index.get_level_values("date") <= panel.index.levels[1][300]]
    pipe = make_preprocessor(["AAA", "BBB"], scale=True).fit(train)
    z = pipe.transform(train)
    np.testing.assert_allclose(z[:, :6].mean(axis=0), 0.0, atol=1e-12)
    clone = preprocessor_from_state(json.loads(json.dumps(preprocessor_state(pipe))))
    np.testing.assert_array_equal(clone.transform(panel), pipe.transform(panel))


# ------------------------------------------------------------------------ every baseline
BASELINES = sorted(set(REGISTRY) - {"mlp_har"})  # mlp_har has its own tests


@pytest.mark.parametrize("alias", BASELINES)
def test_multi_day_variance_increases_with_the_horizon(alias, panel) -> None:
    cfg = ModelsConfig(gbm_sklearn=SMALL_GBM, har_rv=HarConfig(min_obs=100),
                       harx_iv=HarConfig(min_obs=100), har_rv_pooled=HarConfig(min_obs=100))
    horizons = [1, 2, 7, 14]
    model = build_forecaster(alias, cfg, horizons).fit(panel)
    fc = model.forecast(panel, horizons, _last(panel, 20))
    wide = fc.pivot_table(index=["asset", "cutoff"], columns="horizon_days", values="variance")
    assert len(wide) == 40
    assert (wide.diff(axis=1).iloc[:, 1:] > 0).all().all()

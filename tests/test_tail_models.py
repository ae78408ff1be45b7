"""Known answers of the tail models: FHS as the policy computes it, GPD formulas, QR
coverage, the network's no-crossing construction and its FZ0 loss."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from configs.schema import TailConfig, TailQrConfig
from models.tail.base import covered_loss_targets, monotone_in_level, to_fraction
from models.tail.classical import (
    MIN_EXCESSES,
    SHAPE_BOUNDS,
    GpdFitError,
    fhs_measures,
    gpd_measures,
    gpd_tail,
)
from models.tail.net import TailNet, TailNetConfig, fz0_torch
from models.tail.quantile import QuantileTail
from models.tail.registry import build_tail_forecaster
from pipelines.evaluation.tail_tests import fz0_loss
from serving.policy import tail_measures
from tests.tail_panel import tail_panel


def test_fhs_matches_the_policy_tail_on_the_same_window():
    rng = np.random.default_rng(0)
    z = np.abs(rng.standard_t(4, 800))
    z[100:110] = np.nan  # missing days are dropped, not filled
    sigma_t, pos = 0.03, np.array([700])
    var, es = fhs_measures(z, np.array([sigma_t]), pos, 1, [0.99], 500, 100, "long")
    window = z[pos[0] - 500 + 1:pos[0] + 1]  # s <= t - 1: z[200 .. 699]
    window = window[np.isfinite(window)]
    v, _ = tail_measures(window, 0.99)
    tail = window[window >= v]
    assert var[0, 0] == pytest.approx(1 - math.exp(-sigma_t * v))
    assert es[0, 0] == pytest.approx(np.mean(1 - np.exp(-sigma_t * tail)))


def test_fhs_needs_min_obs():
    var, _ = fhs_measures(np.ones(50), np.array([0.02]), np.array([49]), 1, [0.99], 500, 100,
                          "short")
    assert np.isnan(var).all()


def test_gpd_measures_exponential_tail_by_hand():
    # xi = 0: VaR = u + beta ln(share / (1 - q)), ES = VaR + beta
    p = {"u": 2.0, "xi": 0.0, "beta": 0.5, "share": 0.1}
    var, es = gpd_measures(p, 0.99)
    assert var == pytest.approx(2.0 + 0.5 * math.log(10.0))
    assert es == pytest.approx(var + 0.5)
    # xi = 0.25: VaR = u + beta/xi ((0.01/0.1)^-xi - 1), ES = (VaR + beta - xi u) / (1 - xi)
    p = {"u": 2.0, "xi": 0.25, "beta": 0.5, "share": 0.1}
    var, es = gpd_measures(p, 0.99)
    assert var == pytest.approx(2.0 + 2.0 * (10 ** 0.25 - 1))
    assert es == pytest.approx((var + 0.5 - 0.5) / 0.75)


def test_gpd_fit_recovers_a_pareto_tail():
    rng = np.random.default_rng(1)
    z = 1.0 + (rng.pareto(4.0, 20_000))  # Pareto tail index 4: xi = 0.25
    p = gpd_tail(z, 0.10)
    assert p["xi"] == pytest.approx(0.25, abs=0.06)
    var, _ = gpd_measures(p, 0.995)
    assert var == pytest.approx(np.quantile(z, 0.995), rel=0.08)


def test_gpd_shape_above_the_bound_refits_the_scale_at_the_bound():
    # a true GPD with xi = 1.3 over the threshold: the MLE is above 0.9; the scale must be
    # the likelihood's best for xi = 0.9, not the one fitted with the larger xi
    from scipy import stats
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.uniform(0.0, 1.0, 900),
                        1.0 + stats.genpareto.rvs(1.3, scale=1.0, size=100, random_state=rng)])
    p = gpd_tail(z, 0.10)
    assert p["xi_mle"] > SHAPE_BOUNDS[1]
    assert p["xi"] == SHAPE_BOUNDS[1]
    excess = z[z > p["u"]] - p["u"]
    loglik = lambda b: stats.genpareto.logpdf(excess, 0.9, scale=b).sum()  # noqa: E731
    assert loglik(p["beta"]) >= loglik(p["beta"] * 1.01)
    assert loglik(p["beta"]) >= loglik(p["beta"] * 0.99)
    # the unbounded fit's scale with the clipped shape (the old rule) was a thinner tail
    _, _, beta_free = stats.genpareto.fit(excess, floc=0.0)
    clipped = dict(p, beta=beta_free)
    assert gpd_measures(p, 0.995)[0] > gpd_measures(clipped, 0.995)[0]


def test_gpd_shape_below_zero_is_held_at_the_exponential_tail():
    # a bounded (uniform) tail has xi = -1; the margin takes the exponential tail, whose
    # MLE scale is the mean excess
    rng = np.random.default_rng(4)
    z = rng.uniform(0.0, 1.0, 2_000)
    p = gpd_tail(z, 0.10)
    assert p["xi_mle"] < -0.5
    assert p["xi"] == SHAPE_BOUNDS[0] == 0.0
    excess = z[z > p["u"]] - p["u"]
    assert p["beta"] == pytest.approx(excess.mean(), rel=1e-3)
    var, es = gpd_measures(p, 0.995)
    assert es == pytest.approx(var + p["beta"])  # exponential: ES = VaR + beta


def test_gpd_excesses_are_strictly_above_the_threshold():
    # |t4| rounded to whole units: most of the top 10 % tie at the threshold; they are not
    # excesses (they used to collapse the fit to beta = 0 and VaR = the threshold)
    rng = np.random.default_rng(5)
    z = np.round(np.abs(rng.standard_t(4, 4_000)))
    p = gpd_tail(z, 0.10)
    assert p["beta"] > 0
    assert p["share"] == pytest.approx((z > p["u"]).mean())
    var, _ = gpd_measures(p, 0.995)
    assert var > p["u"] + 0.5
    assert var == pytest.approx(np.quantile(z, 0.995), rel=0.35)
    # too few distinct values above the threshold: refused, with the count
    with pytest.raises(GpdFitError, match="excesses over the threshold"):
        gpd_tail(np.concatenate([np.zeros(300), np.ones(40)]), 0.10)


def test_gpd_counts_finite_values_only():
    z = np.concatenate([np.full(200, np.inf), np.arange(1.0, 6.0)])
    with pytest.raises(GpdFitError):
        gpd_tail(z, 0.10)
    rng = np.random.default_rng(6)
    finite = rng.exponential(1.0, 10 * MIN_EXCESSES + 1)
    p = gpd_tail(np.concatenate([finite, [np.inf, -np.inf, np.nan]]), 0.10)
    assert p["n"] == finite.size


def test_targets_are_the_next_interval_as_fractions():
    panel = tail_panel(("AAA",), n_days=40)
    frame = panel.xs("AAA", level="asset")
    y = covered_loss_targets(frame, "short", "close", 1)
    expected = np.expm1(frame["worst_loss_short"].shift(-1))
    np.testing.assert_allclose(y.to_numpy(), expected.to_numpy())
    assert np.isnan(y.iloc[-1])
    assert to_fraction(np.array([0.1]), "long")[0] == pytest.approx(1 - math.exp(-0.1))


def test_rearrangement_removes_crossing():
    v, e = monotone_in_level(np.array([[0.05, 0.04, 0.06]]), np.array([[0.05, 0.07, 0.06]]))
    np.testing.assert_allclose(v, [[0.04, 0.05, 0.06]])
    np.testing.assert_allclose(e, [[0.05, 0.06, 0.07]])


def test_quantile_regression_covers_in_sample():
    panel = tail_panel(("AAA", "BBB"), n_days=1500, seed=2)
    model = QuantileTail(TailQrConfig()).fit(panel)
    fc = model.forecast_tail(panel, [0.975, 0.99])
    fc = fc[fc["side"] == "long"]
    y = np.concatenate([covered_loss_targets(panel.xs(a, level="asset"), "long", "close", 1)
                        .reindex(g["cutoff"]).to_numpy() for a, g in fc.groupby("asset")])
    fc = pd.concat([g for _, g in fc.groupby("asset")])
    ok = np.isfinite(y)
    for q in (0.975, 0.99):
        rows = (fc["level"] == q).to_numpy() & ok
        rate = float((y[rows] > fc["var"].to_numpy()[rows]).mean())
        assert rate == pytest.approx(1 - q, abs=0.006)


def test_network_never_crosses_even_untrained():
    torch.manual_seed(0)
    net = TailNet(TailNetConfig(n_inputs=5, n_assets=3))
    torch.nn.init.normal_(net.head.weight, std=3.0)  # wild outputs
    var, es = net(torch.randn(256, 5), torch.randint(0, 3, (256,)), torch.rand(256, 2) + 0.01)
    assert (torch.diff(var, dim=-1) >= 0).all() and (torch.diff(es, dim=-1) >= 0).all()
    assert (es >= var).all() and (var > 0).all()


def test_network_starts_at_the_unconditional_tail():
    net = TailNet(TailNetConfig(n_inputs=3, n_assets=2, n_sides=1))
    net.init_tail(torch.tensor([[1.0, 1.3, 1.6]]), torch.tensor([[1.5, 1.8, 2.4]]))
    with torch.no_grad():
        var, es = net(torch.randn(4, 3), torch.zeros(4, dtype=torch.int64),
                      torch.full((4, 1), 0.1))
    np.testing.assert_allclose(var[0, 0].numpy(), [0.10, 0.13, 0.16], rtol=1e-5)
    np.testing.assert_allclose(es[0, 0].numpy(), [0.15, 0.18, 0.24], rtol=1e-5)


def test_torch_fz0_equals_the_scoring_function():
    y, v, e = np.array([0.1, 0.01]), np.array([0.05, 0.05]), np.array([0.08, 0.1])
    got = fz0_torch(torch.tensor(y), torch.tensor(v), torch.tensor(e),
                    torch.tensor(0.01, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), fz0_loss(y, v, e, 0.99), rtol=1e-12)


def test_network_records_its_weight_decay_choice_and_validation_fz0():
    panel = tail_panel(("AAA", "BBB"), n_days=900, seed=3)
    cfg = TailConfig().tail_nn.model_copy(update={"max_epochs": 4, "weight_decays": [1e-4, 1e-1],
                                                  "objective": "fz0"})
    model = build_tail_forecaster("tail_nn", TailConfig().model_copy(update={"tail_nn": cfg}))
    model.fit(panel)
    assert model.chosen["weight_decay"] in (1e-4, 1e-1)
    assert np.isfinite(model.chosen["val_fz0"])


def test_network_on_an_evt_scale_round_trips_through_json():
    import json

    from models.tail.registry import tail_forecaster_from_state

    panel = tail_panel(("AAA", "BBB"), n_days=900, seed=4)
    cfg = TailConfig().tail_nn.model_copy(update={"max_epochs": 2, "weight_decays": [1e-3],
                                                  "scale_model": "evt_garch"})
    model = build_tail_forecaster("tail_nn", TailConfig().model_copy(update={"tail_nn": cfg}))
    model.fit(panel[panel.index.get_level_values("date") <= panel.index.levels[1][700]])
    clone = tail_forecaster_from_state(json.loads(json.dumps(model.state())))
    cut = panel.index.levels[1][750:760]
    a, b = model.forecast_tail(panel, cutoffs=cut), clone.forecast_tail(panel, cutoffs=cut)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 2 * 10 * 2 * 3


def test_the_wrapped_models_follow_the_runs_settings():
    """FHS/EVT build their variance forecaster from the run's ``models`` settings (the σ the
    variance-driven policy uses), and tail_nn's scale model from the run's section of its
    alias, not from defaults."""
    from configs.schema import ModelsConfig

    panel = tail_panel(("AAA",), n_days=500, seed=2)
    models = ModelsConfig().model_copy(update={
        "ewma94": ModelsConfig().ewma94.model_copy(update={"decay": 0.80})})
    t = panel.index.levels[1][[450]]
    default = build_tail_forecaster("fhs_ewma", TailConfig()).fit(panel)
    run = build_tail_forecaster("fhs_ewma", TailConfig(), 1, models).fit(panel)
    assert run.variance_model.config.decay == 0.80
    assert default.variance_model.config.decay == 0.94
    assert not np.allclose(run.forecast_tail(panel, [0.99], t)["var"],
                           default.forecast_tail(panel, [0.99], t)["var"])
    tail = TailConfig().model_copy(update={
        "evt_garch": TailConfig().evt_garch.model_copy(update={"tail_fraction": 0.05})})
    nn = build_tail_forecaster("tail_nn", tail, 1, models)
    assert nn.config.scale_model == "evt_garch"
    assert nn.base.config.tail_fraction == 0.05 and nn.base.models is models


def test_caviar_recursion_by_hand():
    from models.tail.caviar import caviar_path

    # v0 = 0.1 + 0.5·4 + 2·1 = 4.1; v1 = 0.1 + 0.5·4.1 + 2·2 = 6.15
    v = caviar_path(np.array([0.1, 0.5, 2.0]), np.array([1.0, 2.0]), init=4.0)
    np.testing.assert_allclose(v, [4.1, 6.15])


def test_caviar_covers_in_sample():
    from configs.schema import TailCaviarConfig
    from models.tail.caviar import CaviarTail

    panel = tail_panel(("AAA",), n_days=2000, seed=6)
    model = CaviarTail(TailCaviarConfig()).fit(panel)
    fc = model.forecast_tail(panel, [0.975])
    fc = fc[fc["side"] == "long"]
    y = covered_loss_targets(panel.xs("AAA", level="asset"), "long", "close", 1)
    y = y.reindex(fc["cutoff"]).to_numpy()
    ok = np.isfinite(y)
    assert float((y[ok] > fc["var"].to_numpy()[ok]).mean()) == pytest.approx(0.025, abs=0.006)


def test_caviar_fits_only_identified_levels_within_its_constraints():
    """A level is fitted only where the training rows expect >= min_exceedances exceedances
    (1,000 rows: 97.5 % and 99 %, not 99.5 %), and every fit keeps 0 <= b1 < 0.999 and
    b2 >= 0 (a VaR that rises with the loss just realized); the unfitted level has no
    forecast and the fitted ones stay monotone."""
    from configs.schema import TailCaviarConfig
    from models.tail.caviar import CaviarTail

    panel = tail_panel(("AAA", "BBB", "CCC", "DDD"), n_days=1400, seed=9)
    train = panel[panel.index.get_level_values("date") <= panel.index.levels[1][1000]]
    model = CaviarTail(TailCaviarConfig()).fit(train)
    need = model.config.min_exceedances
    assert need == 10
    for side in ("long", "short"):
        for p in model.params[side].values():
            n = 1000  # targets of the 1,001 training days, the last one's unknown
            for q, beta in zip(model.levels, p["beta"], strict=True):
                assert (beta is None) == (n * (1 - q) < need)
                if beta is not None:
                    assert 0.0 <= beta[1] < 0.999 and beta[2] >= 0.0
    fc = model.forecast_tail(panel, [0.975, 0.99, 0.995])
    assert set(fc["level"]) == {0.975, 0.99}
    wide = fc.pivot_table(index=["asset", "side", "cutoff"], columns="level", values="var")
    assert (wide[0.99] >= wide[0.975]).all()


def test_historical_simulation_is_the_empirical_tail_of_the_losses_realized_by_the_cutoff():
    """By hand: at cutoff t the HS VaR is the order statistic of every covered loss whose
    interval ended by t (expanding window), ES the mean from it on; a window of the last W
    days reads only those; the loss of the interval ending after t is never read."""
    from models.tail.classical import HsTail

    panel = tail_panel(assets=("AAA",), n_days=600)
    cfg = TailConfig().hs
    t = panel.index.get_level_values("date")[450]
    fc = HsTail(cfg, "hs").fit(panel).forecast_tail(panel, [0.99], pd.DatetimeIndex([t]))
    losses = panel.xs("AAA", level="asset")["worst_loss_long"]
    seen = losses[losses.index <= t].to_numpy()[1:]  # the row t is the loss of (t-1, t]
    seen = seen[np.isfinite(seen)]
    v, _ = tail_measures(np.sort(seen), 0.99)
    row = fc[(fc["side"] == "long")].iloc[0]
    assert row["var"] == pytest.approx(1 - math.exp(-v))
    assert row["es"] == pytest.approx(np.mean(1 - np.exp(-seen[seen >= v])))
    # the losses after t change nothing (a forecast at t reads rows <= t)
    later = panel.copy()
    later.loc[later.index.get_level_values("date") > t, "worst_loss_long"] = 5.0
    again = HsTail(cfg, "hs").forecast_tail(later, [0.99], pd.DatetimeIndex([t]))
    pd.testing.assert_frame_equal(again, fc)
    # a 200-day window reads the last 200 realized losses only
    short = HsTail(cfg.model_copy(update={"window": 200, "min_obs": 100}), "hs")
    last = short.forecast_tail(panel, [0.99], pd.DatetimeIndex([t]))
    v200, _ = tail_measures(np.sort(seen[-200:]), 0.99)
    assert last[last["side"] == "long"]["var"].iloc[0] == pytest.approx(1 - math.exp(-v200))
    # fewer realized losses than min_obs: no forecast
    early = panel.index.get_level_values("date")[100]
    assert HsTail(cfg, "hs").forecast_tail(panel, [0.99], pd.DatetimeIndex([early])).empty

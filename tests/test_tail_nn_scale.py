"""``tail_nn`` with ``objective: scale_nll``: the scale loss by hand, the start at the
rescaled classical scale, tail multipliers that are the empirical tail of the window's
standardized losses (pooled, or blended per asset by credibility), and a scale learned from
an input the classical scale cannot see."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from configs.schema import TailConfig
from models.tail.net import ScaleTailNet, TailNetConfig, scale_nll
from models.tail.network import TailNetForecaster, asset_tails, empirical_tail
from models.tail.registry import build_tail_forecaster
from tests.tail_panel import tail_panel


def _model(**update) -> TailNetForecaster:
    cfg = TailConfig().tail_nn.model_copy(update={
        "objective": "scale_nll", "max_epochs": 3, "hidden": 4, "weight_decays": [1e-3],
        **update})
    return build_tail_forecaster("tail_nn", TailConfig().model_copy(update={"tail_nn": cfg}))


def test_scale_nll_by_hand():
    y = torch.tensor([[0.10, 0.02], [0.03, 0.0]])
    sigma = torch.tensor([[0.05, 0.04], [0.06, 0.01]])
    mask = torch.tensor([[True, True], [True, False]])  # the last side has no target
    weight = torch.tensor([1.0, 3.0])
    terms = [0.5 * 4.0 + math.log(0.05), 0.5 * 0.25 + math.log(0.04),
             0.5 * 0.25 + math.log(0.06)]
    expected = (terms[0] + terms[1] + 3.0 * terms[2]) / 5.0
    assert float(scale_nll(y, sigma, mask, weight)) == pytest.approx(expected, rel=1e-6)


def test_empirical_tail_by_hand():
    ratio = np.column_stack([np.arange(1.0, 101.0), np.r_[np.arange(1.0, 100.0), np.nan]])
    var, es = empirical_tail(ratio, [0.9, 0.99])
    np.testing.assert_allclose(var[0], np.quantile(np.arange(1.0, 101.0), [0.9, 0.99]))
    assert es[0, 0] == pytest.approx(np.mean(np.arange(91.0, 101.0)))  # beyond 90.1: 91..100
    assert var[1, 1] == pytest.approx(np.quantile(np.arange(1.0, 100.0), 0.99))  # NaN ignored
    assert (es >= var).all() and (np.diff(var, axis=1) >= 0).all()


def test_scale_net_starts_at_the_rescaled_classical_scale_and_scales_its_tail():
    torch.manual_seed(0)
    net = ScaleTailNet(TailNetConfig(n_inputs=3, n_assets=2, n_levels=2))
    net.init_scale(torch.log(torch.tensor([1.5, 2.0])))
    net.set_tail(torch.tensor([[2.0, 3.0], [2.5, 3.5]]), torch.tensor([[2.8, 3.6], [3.0, 4.0]]))
    s = torch.tensor([[0.02, 0.03], [0.05, 0.01]])
    with torch.no_grad():
        sig = net.sigma(torch.randn(2, 3), torch.tensor([1, 0]), s)
        var, es = net(torch.randn(2, 3), torch.tensor([1, 0]), s)
    np.testing.assert_allclose(sig.numpy(), (s * torch.tensor([1.5, 2.0])).numpy(), rtol=1e-6)
    np.testing.assert_allclose(var[0, 1].numpy(), [0.03 * 2.0 * 2.5, 0.03 * 2.0 * 3.5],
                               rtol=1e-6)
    np.testing.assert_allclose(es[1, 0].numpy(), [0.05 * 1.5 * 2.8, 0.05 * 1.5 * 3.6],
                               rtol=1e-6)


def _standardized_losses(model: TailNetForecaster, panel: pd.DataFrame):
    """Per member, the (N, S) losses y / sigma of the window's rows with a target, by hand
    from the model's rows, scaler and networks (as a reader of its state would)."""
    rows = model._rows(panel, targets=True)
    vocab = {a: i + 1 for i, a in enumerate(model.assets)}
    keep = [r[2] & np.isfinite(r[3]).any(axis=1) for r in rows.values()]
    x = np.vstack([r[0][k] for r, k in zip(rows.values(), keep, strict=True)])
    s = np.vstack([r[1][k] for r, k in zip(rows.values(), keep, strict=True)])
    y = np.vstack([r[3][k] for r, k in zip(rows.values(), keep, strict=True)])
    asset = np.concatenate([np.full(k.sum(), vocab[a]) for a, k in zip(rows, keep, strict=True)])
    for net in model.nets:
        with torch.no_grad():
            sig = net.sigma(torch.from_numpy(model.scaler.transform(x).astype(np.float32)),
                            torch.from_numpy(asset), torch.from_numpy(s.astype(np.float32)))
        yield net, y / sig.double().numpy(), asset


def test_tail_multipliers_are_the_empirical_tail_of_the_standardized_window_losses():
    panel = tail_panel(("AAA", "BBB"), n_days=700, seed=8)
    model = _model(ensemble_size=2).fit(panel)
    assert set(model.chosen) >= {"val_nll", "val_nll_members", "val_fz0_ensemble"}
    for net, z, _ in _standardized_losses(model, panel):
        for j in range(2):
            zj = z[:, j][np.isfinite(z[:, j])]
            q = np.quantile(zj, model.levels)
            for code in range(3):  # asset_tail_prior_rows 0: every entry, 0 (unseen) too
                np.testing.assert_allclose(net.z_var[code, j].numpy(), q, rtol=1e-5)
                np.testing.assert_allclose(net.z_es[code, j].numpy(),
                                           [zj[zj >= v].mean() for v in q], rtol=1e-5)
            # by construction the window's rows breach the 99% VaR on 1% of days (to one row)
            assert abs((zj > net.z_var[0, j, 1].item()).mean() - 0.01) <= 1.0 / len(zj)


def test_each_asset_blends_its_own_tail_with_the_pooled_one_by_credibility():
    """asset_tail_prior_rows n0: asset a's multipliers are w·own + (1 - w)·pooled with
    w = n_a/(n_a + n0), computed by hand from its standardized losses; the unseen entry keeps
    the pooled tail. BBB's losses are capped (a light tail): its own 99.5% multiplier is
    below the pooled one, and so is its blend."""
    panel = _capped_panel()
    model = _model(ensemble_size=1, asset_tail_prior_rows=[300.0]).fit(panel)
    for net, z, code in _standardized_losses(model, panel):
        for j in range(2):
            pooled = z[:, j][np.isfinite(z[:, j])]
            p_var = np.quantile(pooled, model.levels)
            p_es = np.array([pooled[pooled >= v].mean() for v in p_var])
            np.testing.assert_allclose(net.z_var[0, j].numpy(), p_var, rtol=1e-5)
            for a in (1, 2):
                own = z[code == a, j][np.isfinite(z[code == a, j])]
                o_var = np.quantile(own, model.levels)
                o_es = np.array([own[own >= v].mean() for v in o_var])
                w = len(own) / (len(own) + 300.0)
                np.testing.assert_allclose(net.z_var[a, j].numpy(),
                                           w * o_var + (1 - w) * p_var, rtol=1e-5)
                np.testing.assert_allclose(net.z_es[a, j].numpy(),
                                           w * o_es + (1 - w) * p_es, rtol=1e-5)
            assert net.z_var[2, j, 2] < net.z_var[0, j, 2] < net.z_var[1, j, 2]


def _capped_panel() -> pd.DataFrame:
    """BBB's covered losses capped at their 90% quantile: a thinner tail than AAA's."""
    panel = tail_panel(("AAA", "BBB"), n_days=700, seed=8)
    bbb = panel.index.get_level_values("asset") == "BBB"
    for side in ("long", "short"):
        col = f"worst_loss_{side}"
        panel.loc[bbb, col] = panel.loc[bbb, col].clip(upper=panel.loc[bbb, col].quantile(0.9))
    return panel


def test_the_asset_tail_prior_is_chosen_per_window_on_the_validation_rows():
    """Candidates [0, 300]: each one's tails from the training rows alone are scored on the
    validation rows (the ensemble's FZ0), the lower is kept and the forecast tails are then
    that prior's over every row. With BBB's thin tail the per-asset tail wins."""
    panel = _capped_panel()
    model = _model(ensemble_size=2, asset_tail_prior_rows=[0.0, 300.0]).fit(panel)
    scores = model.chosen["val_fz0_by_prior"]
    assert set(scores) == {"0.0", "300.0"} and all(np.isfinite(list(scores.values())))
    assert model.chosen["asset_tail_prior_rows"] == float(min(scores, key=scores.get)) == 300.0
    fixed = _model(ensemble_size=2, asset_tail_prior_rows=[300.0]).fit(panel)
    for a, b in zip(model.nets, fixed.nets, strict=True):
        torch.testing.assert_close(a.z_var, b.z_var)
        torch.testing.assert_close(a.z_es, b.z_es)
    assert "val_fz0_by_prior" not in fixed.chosen  # one candidate: nothing to choose


def test_the_prior_is_scored_with_tails_from_the_training_rows_alone(monkeypatch):
    """No validation row shapes the tails a candidate is scored with: every candidate's
    tails come from the training rows (the fit's train_rows), the final ones from the whole
    window; and the state round trip keeps each asset's own tail."""
    panel = _capped_panel()
    model = _model(ensemble_size=1, asset_tail_prior_rows=[0.0, 300.0])
    sizes = []
    original = TailNetForecaster._set_tails

    def spy(self, data, prior_rows):
        sizes.append((len(data), prior_rows))
        return original(self, data, prior_rows)

    monkeypatch.setattr(TailNetForecaster, "_set_tails", spy)
    model.fit(panel)
    train_rows = model.fit_stats["train_rows"]
    assert sizes[:2] == [(train_rows, 0.0), (train_rows, 300.0)]
    assert sizes[2][0] > train_rows and sizes[2][1] == model.chosen["asset_tail_prior_rows"]
    restored = TailNetForecaster.from_state(json.loads(json.dumps(model.state())))
    for a, b in zip(model.nets, restored.nets, strict=True):
        torch.testing.assert_close(a.z_var, b.z_var)
    assert not torch.allclose(restored.nets[0].z_var[1], restored.nets[0].z_var[2])  # own tails
    cut = panel.index.levels[1][650:660]
    pd.testing.assert_frame_equal(model.forecast_tail(panel, [0.99], cut),
                                  restored.forecast_tail(panel, [0.99], cut))


def test_rows_trained_and_validated_on_take_a_scale_fitted_before_validation(monkeypatch):
    """The classical scale of the rows a net is trained and validated on (and so the
    untrained start's validation score) comes from a model fitted on the rows before the
    validation period and its purge; the one it forecasts with, from the whole window."""
    import models.tail.network as network

    panel = tail_panel(("AAA", "BBB"), n_days=700, seed=8)
    fitted_through = []
    original = network.scale_model

    def spy(*args, **kwargs):
        base = original(*args, **kwargs)
        fit = base.fit

        def recording_fit(p):
            fitted_through.append(p.index.get_level_values("date").max())
            return fit(p)

        base.fit = recording_fit
        return base

    monkeypatch.setattr(network, "scale_model", spy)
    model = _model(ensemble_size=1).fit(panel)
    last = panel.index.get_level_values("date").max()
    val_start = pd.Timestamp(model.chosen["validation_start"])
    assert fitted_through[0] == last  # the forecasting scale: the whole window
    assert len(fitted_through) == 2
    assert fitted_through[1] < val_start - pd.Timedelta(days=model.interval_days)
    assert fitted_through[1] >= val_start - pd.Timedelta(days=model.interval_days + 7)
    # the validation rows' scale differs from the whole window's (it did not see them)
    val_cut = pd.DatetimeIndex([val_start + pd.Timedelta(days=30)])
    whole = model.base.forecast_tail(panel, [0.99], val_cut)
    before = original(model.config.scale_model, model.config.loss_variant, 1).fit(
        panel[panel.index.get_level_values("date") <= fitted_through[1]])
    assert not np.allclose(whole["var"].to_numpy(),
                           before.forecast_tail(panel, [0.99], val_cut)["var"].to_numpy())


def test_asset_tails_by_hand():
    pooled = (np.array([[1.0, 2.0]]), np.array([[1.5, 2.5]]))  # one side, two levels
    z = np.array([[0.1], [0.2], [0.3], [0.4], [-1.0], [-2.0], [5.0]])
    code = np.array([1, 1, 1, 1, 2, 2, 3])
    var, es = asset_tails(z, code, 5, [0.5, 0.75], 4.0, pooled)
    own_var = np.quantile([0.1, 0.2, 0.3, 0.4], [0.5, 0.75])  # 0.25, 0.325
    np.testing.assert_allclose(var[1, 0], 0.5 * own_var + 0.5 * pooled[0][0])  # w = 4/8
    np.testing.assert_allclose(es[1, 0], 0.5 * np.array([0.35, 0.4]) + 0.5 * pooled[1][0])
    np.testing.assert_allclose(var[2, 0], pooled[0][0])  # its own tail is not positive
    np.testing.assert_allclose(var[3, 0], 0.2 * 5.0 + 0.8 * pooled[0][0])  # w = 1/5
    for entry in (0, 4):  # unseen, and listed without rows: the pooled tail
        np.testing.assert_allclose(var[entry], pooled[0])
        np.testing.assert_allclose(es[entry], pooled[1])
    assert (es >= var).all() and (np.diff(var, axis=-1) >= 0).all()
    var0, _ = asset_tails(z, code, 5, [0.5, 0.75], 0.0, pooled)
    np.testing.assert_allclose(var0, np.broadcast_to(pooled[0], var0.shape))


def test_a_state_with_one_tail_for_every_asset_loads_as_that_tail():
    """States written before the per-asset tails hold (S, K) multipliers: every entry takes
    them, and the forecasts are those of the pooled tail."""
    torch.manual_seed(0)
    cfg = TailNetConfig(n_inputs=3, n_assets=3, n_levels=2)
    net = ScaleTailNet(cfg)
    net.init_scale(torch.log(torch.tensor([1.5, 2.0])))
    z_var, z_es = torch.tensor([[2.0, 3.0], [2.5, 3.5]]), torch.tensor([[2.8, 3.6], [3.0, 4.0]])
    net.set_tail(z_var, z_es)
    old = {k: v.clone() for k, v in net.state_dict().items()}
    old["z_var"], old["z_es"] = z_var, z_es
    loaded = ScaleTailNet(cfg)
    loaded.load_state_dict(old)
    x, a, s = torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), torch.rand(4, 2) + 0.01
    with torch.no_grad():
        for got, want in zip(loaded(x, a, s), net(x, a, s), strict=True):
            torch.testing.assert_close(got, want)
    torch.testing.assert_close(loaded.z_var[2], z_var)


def _regime_panel(n_days: int = 1200) -> pd.DataFrame:
    """The next day's losses are twice as large after a high-VIX day, and nothing else
    tells: GARCH on the returns (the EVT scale) cannot see it; the network's VIX input can."""
    panel = tail_panel(("AAA", "BBB"), n_days=n_days, seed=11)
    rng = np.random.default_rng(11)
    high = rng.random(len(panel)) < 0.5
    panel["vix_level"] = np.where(high, 30.0, 15.0)
    regime = pd.Series(high, index=panel.index).groupby(level="asset").shift(1)
    boost = np.where(regime.fillna(False).to_numpy(dtype=bool), 2.0, 1.0)
    for side in ("long", "short"):
        panel[f"worst_loss_{side}"] *= boost
    return panel


def test_the_scale_learns_a_regime_the_classical_scale_cannot_see():
    panel = _regime_panel()
    cut = panel.index.levels[1][1000]
    model = _model(max_epochs=30, hidden=8, patience=10).fit(
        panel[panel.index.get_level_values("date") <= cut])
    assert model.chosen["epochs_members"][0] > 0  # it left the start
    later = panel.index.levels[1][1001:1199]
    fc = model.forecast_tail(panel, [0.99], later)
    fc = fc[fc["side"] == "long"].set_index(["asset", "cutoff"])["var"]
    is_high = panel["vix_level"].reindex(fc.index).to_numpy() > 20
    ratio = fc[is_high].mean() / fc[~is_high].mean()
    assert ratio > 1.6  # truth 2; the classical scale alone gives about 1


def test_a_refit_on_the_whole_window_sets_the_refit_nets_tails():
    """``refit_on_validation`` trains each member again from its seed; its tail multipliers
    are those of the refit net's scale (a fresh net's are NaN until set), with the embeddings
    it forecasts by."""
    panel = _regime_panel(n_days=800)
    model = _model(ensemble_size=2, refit_on_validation=True, max_epochs=8, hidden=8).fit(panel)
    assert all(n > 0 for n in model.chosen["epochs_members"])  # every member was refit
    for net, z, _ in _standardized_losses(model, panel):
        for j in range(2):
            zj = z[:, j][np.isfinite(z[:, j])]
            np.testing.assert_allclose(net.z_var[1, j].numpy(), np.quantile(zj, model.levels),
                                       rtol=1e-5)


def test_a_refit_leaves_an_asset_without_any_row_in_the_window_cold():
    """An asset in the fit panel with no row the net could train on (70 days: no classical
    scale yet) keeps the mean embedding after ``refit_on_validation``, not its random start."""
    old = tail_panel(("AAA", "BBB"), n_days=760, seed=3)
    dates = old.index.levels[1]
    new = tail_panel(("NEW",), n_days=760, seed=11)
    panel = pd.concat([old, new[new.index.get_level_values("date") > dates[-71]]]).sort_index()
    model = _model(ensemble_size=1, scale_model="fhs_ewma", refit_on_validation=True,
                   max_epochs=4, hidden=8).fit(panel)
    assert model.chosen["epochs_members"][0] > 0  # the refit ran
    assert model.cold_assets == ["NEW"]
    net = model.nets[0]
    code = model.assets.index("NEW") + 1
    typical = net.embeddings(torch.tensor([1, 2])).mean(0)
    torch.testing.assert_close(net.embeddings(torch.tensor([code]))[0], typical)


def test_an_unset_tail_forecasts_nothing_and_the_fz0_start_is_refused():
    net = ScaleTailNet(TailNetConfig(n_inputs=2, n_assets=2, n_levels=2))
    with torch.no_grad():
        var, es = net(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64), torch.ones(3, 2))
    assert torch.isnan(var).all() and torch.isnan(es).all()
    with pytest.raises(TypeError, match="init_scale"):
        net.init_tail(torch.ones(2, 2), torch.ones(2, 2))


def test_the_learned_scale_stays_within_its_bound_whatever_the_inputs():
    """Wild weights and inputs a thousand standard deviations out (a collapse the window
    never saw) move the scale by at most max_scale_factor either way from its start."""
    torch.manual_seed(1)
    net = ScaleTailNet(TailNetConfig(n_inputs=3, n_assets=2, max_scale_factor=4.0))
    net.init_scale(torch.log(torch.tensor([0.5, 0.7])))
    torch.nn.init.normal_(net.head.weight, std=5.0)
    torch.nn.init.normal_(net.body[0].weight, std=5.0)
    x = torch.randn(500, 3) * 1000.0
    s = torch.rand(500, 2) + 0.01
    with torch.no_grad():
        ratio = net.sigma(x, torch.randint(0, 2, (500,)), s) / (s * torch.tensor([0.5, 0.7]))
    assert ratio.min() >= 0.25 * (1 - 1e-5) and ratio.max() <= 4.0 * (1 + 1e-5)
    assert ratio.min() < 0.3 and ratio.max() > 3.5  # the bound is reached, not just respected


def test_a_long_var_and_es_never_exceed_the_whole_position():
    panel = tail_panel(("AAA", "BBB"), n_days=700, seed=8)
    model = _model(ensemble_size=1).fit(panel[panel.index.get_level_values("date")
                                              <= panel.index.levels[1][600]])
    for net in model.nets:  # a tail far beyond anything: the scale times 1e6
        net.set_tail(net.z_var * 1e6, net.z_es * 1e6)
    fc = model.forecast_tail(panel, [0.99], panel.index.levels[1][610:620])
    long, short = fc[fc["side"] == "long"], fc[fc["side"] == "short"]
    assert (long["var"] == 1.0).all() and (long["es"] == 1.0).all()
    assert (short["var"] > 1.0).all()  # a short position's loss has no such bound


def test_tail_nn_reports_what_its_scale_model_declined():
    model = _model(ensemble_size=1)
    model.base.refused = {"long": {"PEG": "degenerate"}, "short": {}}
    assert model.refused == {"long": {"PEG": "degenerate"}, "short": {}}

"""The seed ensemble and the recency weighting of ``tail_nn`` (FZ0 objective; the scale
objective: ``test_tail_nn_scale.py``): known answers, the average of the members, determinism
for a seed, JSON state (and the single-network state before it)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from configs.schema import TailConfig
from models.tail.net import TailNet, TailNetConfig, average_tail, fz0_torch, weighted_fz0
from models.tail.network import TailNetForecaster, recency_weights
from models.tail.registry import build_tail_forecaster, tail_forecaster_from_state
from tests.tail_panel import tail_panel


def _model(**update) -> TailNetForecaster:
    cfg = TailConfig().tail_nn.model_copy(update={"max_epochs": 3, "hidden": 4,
                                                  "weight_decays": [1e-3],
                                                  "objective": "fz0", **update})
    return build_tail_forecaster("tail_nn", TailConfig().model_copy(update={"tail_nn": cfg}))


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return tail_panel(("AAA", "BBB"), n_days=900, seed=8)


@pytest.fixture(scope="module")
def train(panel) -> pd.DataFrame:
    return panel[panel.index.get_level_values("date") <= panel.index.levels[1][700]]


@pytest.fixture(scope="module")
def ensemble(train) -> TailNetForecaster:
    return _model(ensemble_size=3, recency_half_lives=[0.0, 365.0]).fit(train)


def test_recency_weights_by_hand():
    t = np.datetime64("2024-01-01")
    dates = np.array([t - np.timedelta64(730, "D"), t - np.timedelta64(365, "D"), t])
    # 2^-2, 2^-1, 2^0 = 0.25, 0.5, 1 (mean 7/12), normalized to mean 1
    np.testing.assert_allclose(recency_weights(dates, 365.0), np.array([3, 6, 12]) / 7)
    np.testing.assert_array_equal(recency_weights(dates, 0.0), np.ones(3))


def test_weighted_fz0_by_hand():
    alpha = torch.tensor([0.01], dtype=torch.float64)
    y = torch.tensor([[0.1], [0.01], [0.5]], dtype=torch.float64)  # (B=3, S=1)
    var = torch.tensor([[[0.05]], [[0.05]], [[0.05]]], dtype=torch.float64)  # (B, S, K=1)
    es = torch.tensor([[[0.08]], [[0.1]], [[0.1]]], dtype=torch.float64)
    terms = fz0_torch(y[..., None], var, es, alpha)[:, 0, 0]
    mask = torch.tensor([[True], [True], [False]])  # the third row has no target
    ones = torch.ones(3, dtype=torch.float64)
    got = weighted_fz0(y, var, es, mask, ones, alpha)
    assert float(got) == pytest.approx(float(terms[:2].mean()), rel=1e-6)
    w = torch.tensor([3.0, 1.0, 100.0], dtype=torch.float64)  # 100 on a masked row: ignored
    got = weighted_fz0(y, var, es, mask, w, alpha)
    assert float(got) == pytest.approx(float((3 * terms[0] + terms[1]) / 4), rel=1e-6)


def test_average_of_members_keeps_es_above_var_and_monotone():
    torch.manual_seed(1)
    nets = [TailNet(TailNetConfig(n_inputs=5, n_assets=3)) for _ in range(3)]
    for net in nets:
        torch.nn.init.normal_(net.head.weight, std=3.0)  # wild, different members
    x, a, s = torch.randn(128, 5), torch.randint(0, 3, (128,)), torch.rand(128, 2) + 0.01
    var, es = average_tail(nets, x, a, s)
    with torch.no_grad():
        outs = [net(x, a, s) for net in nets]
    torch.testing.assert_close(var, sum(v for v, _ in outs) / 3)
    torch.testing.assert_close(es, sum(e for _, e in outs) / 3)
    assert (torch.diff(var, dim=-1) >= 0).all() and (torch.diff(es, dim=-1) >= 0).all()
    assert (es >= var).all()


def test_ensemble_records_its_choice_and_forecasts_the_member_average(ensemble, panel):
    assert len(ensemble.nets) == 3
    c = ensemble.chosen
    assert c["recency_half_life"] in (0.0, 365.0) and c["weight_decay"] == 1e-3
    assert len(c["val_fz0_members"]) == 3 and c["val_fz0_members"][0] == c["val_fz0"]
    assert np.isfinite(c["val_fz0_ensemble"])
    cut = panel.index.levels[1][750:760]
    full = ensemble.forecast_tail(panel, cutoffs=cut)
    singles = []
    for net in ensemble.nets:
        one = TailNetForecaster.from_state(ensemble.state())
        one.nets = [net]
        singles.append(one.forecast_tail(panel, cutoffs=cut))
    for col in ("var", "es"):
        mean = np.mean([f[col].to_numpy() for f in singles], axis=0)
        np.testing.assert_allclose(full[col].to_numpy(), mean, rtol=1e-6)
    assert (full["es"] >= full["var"]).all()


def test_members_differ_by_seed_and_a_refit_is_identical(ensemble, train, panel):
    w = [torch.cat([p.flatten() for p in net.parameters()]) for net in ensemble.nets]
    assert not torch.equal(w[0], w[1])  # seeds differ: the embeddings start apart at least
    again = _model(ensemble_size=3, recency_half_lives=[0.0, 365.0]).fit(train)
    cut = panel.index.levels[1][750:760]
    pd.testing.assert_frame_equal(ensemble.forecast_tail(panel, cutoffs=cut),
                                  again.forecast_tail(panel, cutoffs=cut))


def test_ensemble_round_trips_through_json(ensemble, panel):
    clone = tail_forecaster_from_state(json.loads(json.dumps(ensemble.state())))
    assert len(clone.nets) == 3
    cut = panel.index.levels[1][750:770]
    pd.testing.assert_frame_equal(ensemble.forecast_tail(panel, cutoffs=cut),
                                  clone.forecast_tail(panel, cutoffs=cut))


def test_a_single_network_state_still_loads(ensemble, panel):
    state = json.loads(json.dumps(ensemble.state()))
    first = state.pop("members")[0]
    state["weights"] = first  # the layout before the seed ensemble
    for key in ("ensemble_size", "recency_half_lives", "objective"):
        state["config"].pop(key)
    old = tail_forecaster_from_state(state)
    assert len(old.nets) == 1
    one = TailNetForecaster.from_state(ensemble.state())
    one.nets = one.nets[:1]
    cut = panel.index.levels[1][750:760]
    pd.testing.assert_frame_equal(old.forecast_tail(panel, cutoffs=cut),
                                  one.forecast_tail(panel, cutoffs=cut))


def test_refit_on_validation_retrains_members_that_left_the_start(train, panel):
    early = _model(ensemble_size=2, recency_half_lives=[0.0]).fit(train)
    refit = _model(ensemble_size=2, recency_half_lives=[0.0], refit_on_validation=True).fit(train)
    assert refit.chosen["epochs_members"] == early.chosen["epochs_members"]  # same choices
    assert refit.chosen["val_fz0_ensemble"] == early.chosen["val_fz0_ensemble"]
    for k, n_ep in enumerate(early.chosen["epochs_members"]):
        same = all(torch.equal(a, b) for a, b in zip(early.nets[k].state_dict().values(),
                                                      refit.nets[k].state_dict().values(),
                                                      strict=True))
        assert same == (n_ep == 0)  # the start stays; a trained member is trained again
    assert max(early.chosen["epochs_members"]) > 0  # the case above is exercised
    # the refit's epochs are counted once per member trained again
    assert refit.fit_stats["epochs"] == (early.fit_stats["epochs"]
                                         + sum(early.chosen["epochs_members"]))
    cut = panel.index.levels[1][750:760]
    fc = refit.forecast_tail(panel, cutoffs=cut)
    assert (fc["es"] >= fc["var"]).all() and np.isfinite(fc[["var", "es"]]).all().all()


def test_an_asset_listed_within_the_validation_window_is_a_typical_asset():
    """NEW's rows all fall in the validation part of the window (its last 15%, 330 of 2,200
    days; the classical scale needs ~250 of an asset's days): no embedding is trained for it,
    so it is validated and forecast with the mean of the trained embeddings, not with its
    untrained random start."""
    old = tail_panel(("AAA", "BBB"), n_days=2200, seed=3)  # a panel whose members train
    dates = old.index.levels[1]
    new = tail_panel(("NEW",), n_days=2200, seed=11)
    new = new[new.index.get_level_values("date") > dates[1900]]
    model = _model(ensemble_size=2, recency_half_lives=[0.0]).fit(
        pd.concat([old, new]).sort_index())
    assert model.assets == ["AAA", "BBB", "NEW"] and model.cold_assets == ["NEW"]
    assert max(model.chosen["epochs_members"]) > 0  # else the embeddings would not matter
    cut = dates[2150:2180]
    got = model.forecast_tail(new, cutoffs=cut)
    assert len(got) and np.isfinite(got[["var", "es"]]).all().all()
    for net in model.nets:  # NEW (entry 3) reads the mean of AAA's and BBB's embeddings
        assert not net.training
        typical = net.embed.weight[1:3].mean(dim=0)
        torch.testing.assert_close(net.embeddings(torch.tensor([3, 1]))[0], typical)
        assert torch.equal(net.embeddings(torch.tensor([3, 1]))[1], net.embed.weight[1])
    clone = TailNetForecaster.from_state(json.loads(json.dumps(model.state())))
    assert clone.cold_assets == ["NEW"]
    pd.testing.assert_frame_equal(clone.forecast_tail(new, cutoffs=cut), got)
    # its own (untrained) embedding row would have given other numbers
    raw = TailNetForecaster.from_state(model.state())
    raw.cold_assets = []
    for net in raw.nets:
        net.set_known(raw._known())
    own = raw.forecast_tail(new, cutoffs=cut)
    assert not np.allclose(own["var"], got["var"], rtol=1e-3)

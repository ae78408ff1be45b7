"""MlpHarForecaster: forecast contract, point-in-time inputs, state round trip, determinism,
and that it beats a constant forecast out of sample on a simulated GARCH panel."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from configs.schema import MlpHarConfig
from features.schema import feature_view
from features.targets import forward_variance
from models.base import FORECAST_COLUMNS, Forecaster
from models.mlp_har import MlpHarForecaster
from models.neural.module import REQUIRED_COLUMNS, forward_log_targets, qlike_terms
from pipelines.evaluation import evaluate
from tests.simulate import simulate_panel

SMALL = MlpHarConfig(hidden=16, max_epochs=3, patience=2)
ASSETS = ("AAA", "BBB", "CCC")


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return simulate_panel(ASSETS, n_days=400, seed=1)


@pytest.fixture(scope="module")
def model(panel: pd.DataFrame) -> MlpHarForecaster:
    return MlpHarForecaster(SMALL, horizons=(1, 7)).fit(panel)


def qlike(realized: np.ndarray, forecast: np.ndarray) -> float:
    """Mean QLIKE, from the one definition the pipeline scores with."""
    return float(np.mean(evaluate.qlike(realized, forecast)))


def test_is_a_forecaster_with_alias(model: MlpHarForecaster) -> None:
    assert isinstance(model, Forecaster)
    assert model.alias == "mlp_har"
    assert model.assets == list(ASSETS)


def test_forecast_frame_contract(model: MlpHarForecaster, panel: pd.DataFrame) -> None:
    fc = model.forecast(panel, horizons=[1, 7])
    assert list(fc.columns) == FORECAST_COLUMNS
    assert np.isfinite(fc["variance"]).all() and (fc["variance"] > 0).all()
    assert not fc.duplicated(["asset", "cutoff", "horizon_days"]).any()
    assert (fc["target_date"] - fc["cutoff"] == pd.to_timedelta(fc["horizon_days"], "D")).all()
    valid = panel[list(REQUIRED_COLUMNS)].notna().all(axis=1)
    assert len(fc) == 2 * int(valid.sum())  # har_rv_30d needs 30 days: 371 rows per asset
    assert len(fc) == 2 * 3 * (400 - 29)
    # A 7-day variance sums seven daily ones: on average ~7× the 1-day forecast.
    by_h = fc.groupby("horizon_days")["variance"].mean()
    assert 4.0 < by_h[7] / by_h[1] < 10.0


def test_forecast_only_requested_cutoffs_and_known_assets(
    model: MlpHarForecaster, panel: pd.DataFrame
) -> None:
    cutoffs = pd.DatetimeIndex(["2020-03-01", "2020-06-15", "2030-01-01"])
    stranger = simulate_panel(("ZZZ",), n_days=400, seed=9)
    both = pd.concat([panel, stranger]).sort_index()
    fc = model.forecast(both, horizons=[7], cutoffs=cutoffs)
    assert set(fc["asset"]) == set(ASSETS)  # ZZZ was not seen in fit: no rows
    assert set(fc["cutoff"]) == set(cutoffs[:2])
    assert (fc["horizon_days"] == 7).all() and len(fc) == 2 * 3


def test_an_asset_listed_within_the_validation_window_is_forecast_as_a_typical_asset(
    model: MlpHarForecaster, panel: pd.DataFrame
) -> None:
    # NEW's 40 days all fall in the last 15% of the window: no training row, no embedding
    new = simulate_panel(("NEW",), n_days=400, seed=4)
    new = new[new.index.get_level_values("date") >= new.index.get_level_values("date")[-40]]
    both = pd.concat([panel, new]).sort_index()
    fitted = MlpHarForecaster(SMALL, horizons=(1, 7)).fit(both)
    assert fitted.assets == list(ASSETS) and fitted.cold_assets == ["NEW"]
    fc = fitted.forecast(both, horizons=[1, 7])
    got = fc[fc["asset"] == "NEW"]
    valid = new[list(REQUIRED_COLUMNS)].notna().all(axis=1)
    assert len(got) == 2 * int(valid.sum()) > 0 and np.isfinite(got["variance"]).all()
    # the network is exactly the one fitted without it (NEW is never trained on nor
    # validated on), so the other assets' forecasts are the same up to float32 rounding (a
    # larger batch may be multiplied in another order)
    assert {**fitted.state(), "cold_assets": []} == model.state()
    known = fc[fc["asset"] != "NEW"].reset_index(drop=True)
    alone = model.forecast(panel, horizons=[1, 7])
    pd.testing.assert_frame_equal(known.drop(columns="variance"), alone.drop(columns="variance"))
    np.testing.assert_allclose(known["variance"], alone["variance"], rtol=1e-6)
    # NEW is forecast with the mean of the learned embeddings: the same as AAA's network
    # with AAA's embedding replaced by that mean, on NEW's rows
    typical = MlpHarForecaster.from_state(json.loads(json.dumps(fitted.state())))
    assert typical.cold_assets == ["NEW"]  # kept by the state
    with torch.no_grad():
        typical.net.embed.weight[0] = typical.net.embed.weight.mean(dim=0)
    as_aaa = typical.forecast(new.rename(index={"NEW": "AAA"}, level="asset"), horizons=[1, 7])
    # (equal up to float32 rounding: a batch of 80 rows is not multiplied as one of 2,306)
    np.testing.assert_allclose(as_aaa["variance"], got["variance"], rtol=1e-6)


def test_untrained_horizon_is_refused(model: MlpHarForecaster, panel: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"\[30\]"):
        model.forecast(panel, horizons=[1, 30])


def test_forecast_is_point_in_time(model: MlpHarForecaster, panel: pd.DataFrame) -> None:
    full = model.forecast(panel, horizons=[1, 7]).set_index(["asset", "cutoff", "horizon_days"])
    dates = panel.index.get_level_values("date")
    for t in pd.DatetimeIndex(["2020-02-05", "2020-07-19", "2020-12-31"]):
        truncated = model.forecast(panel[dates <= t], horizons=[1, 7])
        assert truncated["cutoff"].max() == t
        got = truncated.set_index(["asset", "cutoff", "horizon_days"])["variance"]
        np.testing.assert_allclose(got, full.loc[got.index, "variance"], rtol=1e-6, atol=0)
        # The row at t alone is enough: nothing before it is read either.
        alone = model.forecast(panel[dates == t], horizons=[1, 7])
        at_t = got.xs(t, level="cutoff")
        np.testing.assert_allclose(
            alone.set_index(["asset", "horizon_days"])["variance"].loc[at_t.index], at_t, rtol=1e-6
        )


def test_unavailable_dvol_value_is_never_read(model: MlpHarForecaster, panel: pd.DataFrame) -> None:
    garbage = panel.copy()
    garbage.loc[~garbage["dvol_available"], "dvol_var_1d"] = 1.0  # a pretend fill
    before = model.forecast(panel, horizons=[1])["variance"].to_numpy()
    after = model.forecast(garbage, horizons=[1])["variance"].to_numpy()
    assert np.array_equal(before, after)


def test_fit_refuses_target_columns() -> None:
    with_targets = simulate_panel(("AAA",), n_days=200, seed=0, with_targets=True)
    with pytest.raises(ValueError, match="target_variance_1d"):
        MlpHarForecaster(SMALL).fit(with_targets)


def test_training_targets_come_from_rv_and_stop_at_the_panel_end() -> None:
    panel = simulate_panel(("AAA", "BBB"), n_days=60, seed=2)
    panel = panel.drop(index=pd.Timestamp("2020-01-20"), level="date")  # a gap in the calendar
    log_y = forward_log_targets(panel, horizons=[1, 7])  # (N, 2)
    aaa = panel.xs("AAA", level="asset")
    expected_1d = forward_variance(aaa["rv"].asfreq("D"), 1).reindex(aaa.index)
    np.testing.assert_allclose(np.exp(log_y[: len(aaa), 0]), expected_1d, rtol=1e-12)
    assert np.isnan(log_y[len(aaa) - 7 : len(aaa), 1]).all()  # last 7 days: no 7-day target
    gap_eve = aaa.index.get_loc(pd.Timestamp("2020-01-19"))
    assert np.isnan(log_y[gap_eve, 0])  # no partial sum across the missing day


def test_qlike_is_zero_at_the_truth_and_ignores_masked_pairs() -> None:
    log_y = torch.tensor([[-7.0, -5.0], [-6.0, 0.0]])
    o = torch.tensor([[-7.0, -5.5], [-6.0, -80.0]])  # the masked pair would overflow exp
    mask = torch.tensor([[True, True], [True, False]])
    total, count = qlike_terms(o, log_y, mask)
    assert int(count) == 3
    assert float(total) == pytest.approx(np.exp(0.5) - 0.5 - 1.0, rel=1e-6)


def test_state_round_trip_is_json_and_bit_identical(
    model: MlpHarForecaster, panel: pd.DataFrame
) -> None:
    text = json.dumps(model.state())
    rebuilt = MlpHarForecaster.from_state(json.loads(text))
    a = model.forecast(panel, horizons=[1, 7])
    b = rebuilt.forecast(panel, horizons=[1, 7])
    pd.testing.assert_frame_equal(a.drop(columns="variance"), b.drop(columns="variance"))
    assert np.array_equal(a["variance"].to_numpy(), b["variance"].to_numpy())
    with pytest.raises(ValueError, match="alias"):
        MlpHarForecaster.from_state({**model.state(), "alias": "har_rv"})


def test_same_seed_gives_identical_forecasts(model: MlpHarForecaster, panel: pd.DataFrame) -> None:
    again = MlpHarForecaster(SMALL, horizons=(1, 7)).fit(panel)
    a = model.forecast(panel, horizons=[1, 7])["variance"].to_numpy()
    b = again.forecast(panel, horizons=[1, 7])["variance"].to_numpy()
    assert np.array_equal(a, b)


@pytest.mark.parametrize("seed", [0, 5])
def test_it_beats_a_constant_forecast_out_of_sample(seed: int) -> None:
    full = simulate_panel(("AAA", "BBB"), n_days=1500, seed=seed, with_targets=True)
    dates = full.index.get_level_values("date")
    split = dates.min() + pd.Timedelta(days=1100)
    train = feature_view(full[dates < split])
    model = MlpHarForecaster(MlpHarConfig(hidden=16, max_epochs=10), horizons=(1,)).fit(train)

    fc = model.forecast(feature_view(full), horizons=[1], cutoffs=dates[dates >= split].unique())
    realized = full["target_variance_1d"].reindex(pd.MultiIndex.from_frame(fc[["asset", "cutoff"]]))
    ok = np.isfinite(realized.to_numpy())
    model_loss = qlike(realized.to_numpy()[ok], fc["variance"].to_numpy()[ok])
    constant_loss = qlike(realized.to_numpy()[ok], np.full(ok.sum(), train["rv"].mean()))
    assert model_loss < 0.9 * constant_loss, (model_loss, constant_loss)


def test_an_epoch_is_capped_in_steps_and_the_embedded_panel_keeps_its_batch() -> None:
    from models.neural.module import epoch_batch_size
    from tests.conftest import MARKET

    assert epoch_batch_size(27_000, 512, 256) == 512
    assert epoch_batch_size(512 * 256, 512, 256) == 512
    assert epoch_batch_size(512 * 256 + 1, 512, 256) == 513
    big = epoch_batch_size(1_000_000, 512, 256)
    assert big == 3907 and -(-1_000_000 // big) == 256  # 256 steps of 3,907 rows
    # every daily row of the embedded data is below the cap: its figures keep batches of 512
    cfg = MlpHarConfig()
    rows = sum(len(pd.read_csv(f)) for f in sorted((MARKET / "crypto" / "daily").glob("*.csv*")))
    assert 20_000 < rows < cfg.batch_size * cfg.max_steps_per_epoch


def test_the_residual_network_trains_in_at_most_max_steps_per_epoch(monkeypatch) -> None:
    from torch.utils.data import TensorDataset

    import models.neural.residual as residual

    sizes: list[int] = []
    real = residual.step_loader  # the training batches (validation: one batch of all)
    monkeypatch.setattr(residual, "step_loader", lambda data, batches: (
        sizes.append(batches.batch_size) or real(data, batches)))
    rng = np.random.default_rng(0)
    n = 1_000

    def data(rows: int) -> TensorDataset:
        return TensorDataset(torch.tensor(rng.normal(size=(rows, 3)), dtype=torch.float32),
                             torch.zeros(rows, dtype=torch.long),
                             torch.tensor(rng.normal(size=(rows, 1)), dtype=torch.float32),
                             torch.ones(rows, 1, dtype=torch.bool))

    net = residual.ResidualMlp(residual.ResidualNetConfig(n_inputs=3, n_assets=1, n_horizons=1))
    kw = dict(lr=1e-3, weight_decay=0.0, batch_size=64, max_epochs=1, patience=1, seed=0)
    residual.train_residual(net, data(n), data(50), **kw, max_steps_per_epoch=4)
    residual.train_residual(net, data(n), data(50), **kw)  # no cap: the configured batch
    assert sizes == [250, 64]  # 1,000 rows in 4 steps; no cap: the configured batch

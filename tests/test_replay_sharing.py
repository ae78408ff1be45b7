"""The policy replays of one asset share what does not depend on the forecast (its stress ES
and loss memory, :class:`serving.inputs.LossTerms`): each is computed once per setting for
all days, and every path is bit for bit the one the batch job would serve day after day."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import pipelines.policy_eval.backtest
from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.backtest import backtest
from models.base import asset_frame
from models.registry import build_forecaster
from pipelines.policy_eval.backtest import policy_paths, replay
from pipelines.policy_eval.compare import replay_many, slim
from serving.inputs import LossTerms, asset_history, asset_series
from serving.policy import stress_es
from tests.conftest import MARKET
from tests.served import served_path

CFG = Config().with_overrides({"policy.fhs_min_obs": 60, "backtest.n_jobs": 1})


@pytest.fixture(scope="module")
def setup() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    market = load_market(MARKET, ["BTC", "SOL"], dt.date(2025, 6, 30))
    panel = build_panel(market, CFG.features)
    panel = panel[panel.index.get_level_values("date") >= "2022-06-01"]
    forecasts = {m: backtest(lambda m=m: build_forecaster(m, CFG.models, [1]), panel,
                             dt.date(2024, 1, 1), 120, [1], 300).forecasts
                 for m in ("ewma94", "har_rv")}
    return panel, forecasts


def test_shared_terms_give_each_candidates_own_path_bit_for_bit(setup) -> None:
    panel, fc = setup
    items = [(fc[m], CFG.with_overrides({"policy.confidence": q}))
             for m in fc for q in (0.975, 0.99)]
    items += [(fc["ewma94"], CFG.with_overrides({"policy.stress_floor_weight": 0.0})),
              (fc["har_rv"], CFG.with_overrides({"policy.memory_half_life_days": 5.0})),
              (fc["har_rv"], CFG.with_overrides({"policy.loss": "close_to_close"}))]
    together = policy_paths(panel, items)
    assert [len(p) for p in together] == [len(together[0])] * len(items)
    assert len(together[0]) > 900 and set(together[0]["asset"]) == {"BTC", "SOL"}
    for (f, c), path in zip(items, together, strict=True):
        pd.testing.assert_frame_equal(path, served_path(panel, f, c), check_exact=True)
    # the settings reach the shared terms: each variant's margins differ from its base's,
    # and without a stress weight no stress ES is taken at all
    for k, base in ((1, 0), (3, 2), (5, 2), (6, 2)):
        assert not together[k]["mmf"].equals(together[base]["mmf"])
    assert together[4]["stress_floor"].isna().all() and together[0]["stress_floor"].notna().all()
    # in 2 local processes, in chunks: the same slim paths
    chunked = replay_many(panel, items, CFG.with_overrides({"backtest.n_jobs": 2,
                                                            "backtest.chunk_assets": 1}))
    for path, got in zip(together, chunked, strict=True):
        pd.testing.assert_frame_equal(got, slim(path), check_exact=True)


def test_stress_once_per_confidence_history_once_per_forecaster(setup, monkeypatch) -> None:
    panel, fc = setup
    calls: list[float] = []
    real = LossTerms._stress_grid
    monkeypatch.setattr(LossTerms, "_stress_grid",
                        lambda self, grid, cfg: calls.append(cfg.confidence) or real(
                            self, grid, cfg))
    built: list[int] = []
    real_history = pipelines.policy_eval.backtest.asset_history
    monkeypatch.setattr(pipelines.policy_eval.backtest, "asset_history",
                        lambda frame, f, cfg, series: built.append(len(f)) or real_history(
                            frame, f, cfg, series))
    series: list[str] = []
    real_series = pipelines.policy_eval.backtest.asset_series
    monkeypatch.setattr(pipelines.policy_eval.backtest, "asset_series",
                        lambda frame, cfg: series.append(cfg.policy.loss) or real_series(
                            frame, cfg))
    btc = {m: f[f["asset"] == "BTC"] for m, f in fc.items()}
    items = [(btc[m], CFG.with_overrides({"policy.confidence": q}))
             for m in btc for q in (0.975, 0.99)]
    paths = policy_paths(panel, items)
    assert len(paths[0]) > 400
    assert sorted(calls) == [0.975, 0.99]  # two confidence levels, not four candidates
    assert len(built) == 2  # one history per forecaster, shared by its confidence levels
    assert series == [CFG.policy.loss]  # the forecast-free series once for the asset


def test_loss_terms_refuse_a_history_of_other_losses(setup) -> None:
    panel, fc = setup
    btc = asset_history(asset_frame(panel, "BTC"), fc["ewma94"][fc["ewma94"]["asset"] == "BTC"],
                        CFG)
    sol = asset_history(asset_frame(panel, "SOL"), fc["ewma94"][fc["ewma94"]["asset"] == "SOL"],
                        CFG)
    terms = LossTerms.of(btc)
    terms.check(btc)
    with pytest.raises(ValueError, match="other realized losses"):
        replay(sol, CFG, terms=terms)
    # a shared value is the function's own on the same known losses
    day = int(btc.days[-1])
    seen = int(np.searchsorted(btc.realized_day, day, side="right"))
    assert terms.stress_at(np.array([day]), CFG.policy)[0] == stress_es(
        btc.realized_loss[:seen], day - btc.realized_day[:seen], CFG.policy)


def test_histories_from_the_assets_shared_series_are_its_own_histories(setup) -> None:
    """:func:`asset_history` from the asset's forecast-free series built once equals the one
    built from the frame alone, field by field, for both covered-loss variants and a forecast
    calendar with days the frame lacks; a series of other settings is refused."""
    panel, fc = setup
    frame = asset_frame(panel, "SOL")
    mine = fc["har_rv"][fc["har_rv"]["asset"] == "SOL"]
    extra = mine.iloc[[-1]].assign(cutoff=mine["cutoff"].max() + pd.Timedelta(days=3))
    mine = pd.concat([mine, extra], ignore_index=True)  # a cutoff beyond the frame's rows
    for cfg in (CFG, CFG.with_overrides({"policy.loss": "close_to_close"})):
        series = asset_series(frame, cfg)
        alone, shared = asset_history(frame, mine, cfg), asset_history(frame, mine, cfg, series)
        for name in ("variance", "ret", "loss_next", "short_loss_next", "adv_usd",
                     "realized_loss", "realized_day", "loss_is_proxy"):
            np.testing.assert_array_equal(getattr(shared, name), getattr(alone, name))
        assert shared.dates.equals(alone.dates)
        assert np.isnan(shared.ret[-1]) and shared.loss_is_proxy[-1]  # no row that day
    with pytest.raises(ValueError, match="asset series built for"):
        asset_history(frame, mine, CFG.with_overrides({"policy.liquidity.adv_window": 7}),
                      asset_series(frame, CFG))

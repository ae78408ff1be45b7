"""The policy replays of one asset share what does not depend on the forecast (its stress ES
and loss memory, :class:`serving.inputs.LossTerms`): each is computed once per day and
setting, and every path is bit for bit the one replayed on its own."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import serving.inputs
from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.backtest import backtest
from models.base import asset_frame
from models.registry import build_forecaster
from pipelines.policy_eval.backtest import policy_paths, replay, with_outcomes
from pipelines.policy_eval.compare import replay_many, slim
from serving.inputs import LossTerms, asset_history
from tests.conftest import MARKET

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


def _alone(panel: pd.DataFrame, fc: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """The replay of one candidate with nothing shared (every term computed per day)."""
    blocks = []
    for asset, g in fc.groupby("asset", sort=True):
        block = replay(asset_history(asset_frame(panel, str(asset)), g, cfg), cfg)
        block.insert(0, "asset", asset)
        blocks.append(block)
    return with_outcomes(pd.concat(blocks, ignore_index=True))


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
        pd.testing.assert_frame_equal(path, _alone(panel, f, c), check_exact=True)
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


def test_the_stress_es_is_computed_once_per_day_and_confidence(setup, monkeypatch) -> None:
    panel, fc = setup
    calls: list[int] = []
    real = serving.inputs.stress_es
    monkeypatch.setattr(serving.inputs, "stress_es",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    btc = {m: f[f["asset"] == "BTC"] for m, f in fc.items()}
    items = [(btc[m], CFG.with_overrides({"policy.confidence": q}))
             for m in btc for q in (0.975, 0.99)]
    paths = policy_paths(panel, items)
    days = pd.concat([p["date"] for p in paths]).nunique()
    assert days == len(paths[0]) > 400
    assert len(calls) == 2 * days  # two confidence levels, not four candidates


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
    assert terms.stress(day, CFG.policy) == serving.inputs.stress_es(
        btc.realized_loss[:seen], day - btc.realized_day[:seen], CFG.policy)

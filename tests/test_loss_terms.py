"""The stress ES and loss memory of every day at once (:class:`serving.inputs.LossTerms`) are
the per-day functions' own numbers, bit for bit, whatever the settings: on BTC's real covered
losses and on seeded losses with gaps, missing values and ties."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.base import asset_frame
from serving.inputs import LossTerms, covered_loss
from serving.policy import loss_memory, stress_es
from tests.conftest import MARKET

CFG = Config()


def _per_day(losses: np.ndarray, days: np.ndarray, grid: np.ndarray, fn) -> np.ndarray:
    """The served computation: each day the losses realized by then and their ages."""
    out = []
    for d in grid:
        seen = int(np.searchsorted(days, d, side="right"))
        out.append(fn(losses[:seen], d - days[:seen]))
    return np.array(out, float)


@pytest.fixture(scope="module")
def btc() -> tuple[np.ndarray, np.ndarray]:
    market = load_market(MARKET, ["BTC"], dt.date(2025, 6, 30))
    frame = asset_frame(build_panel(market, CFG.features), "BTC")
    long_loss, _ = covered_loss(frame, CFG.policy)
    realized = long_loss.dropna().sort_index()
    day = realized.index.to_numpy().astype("datetime64[D]").astype(np.int64)
    return realized.to_numpy(float), day


def _simulated() -> tuple[np.ndarray, np.ndarray]:
    """Seeded heavy-tailed losses on irregular days, with NaNs, zeros and repeated values.

    Multiples of 2⁻¹⁰, so that window sums tie exactly: two equally stressed windows with
    different losses (and ES), the earliest of which is the stress window."""
    rng = np.random.default_rng(11)
    day = np.cumsum(rng.choice([1, 1, 1, 2, 5], size=900)).astype(np.int64) + 18_000
    loss = np.round(np.abs(rng.standard_t(3, size=900)) * 0.02 * 1024) / 1024
    loss[rng.random(900) < 0.3] = 0.0          # calm days: many equal (zero) losses
    loss[rng.random(900) < 0.03] = np.nan      # missing values
    loss[100:130] = 0.05                       # a flat run
    loss[200:205] = [0.25, 0.25, 0.25, 0.25, 2.0]  # a window summing to 3 ...
    loss[300:305] = [0.75, 0.75, 0.75, 0.75, 0.0]  # ... and a later one, calmer in its tail
    return loss, day


STRESS = [{}, {"policy.stress_lookback_days": 400},
          {"policy.stress_window_obs": 30, "policy.confidence": 0.99},
          {"policy.stress_window_obs": 5000}, {"policy.stress_window_obs": 5},
          {"policy.confidence": 0.95, "policy.stress_lookback_days": 60}]


@pytest.mark.parametrize("which", ["btc", "simulated"])
@pytest.mark.parametrize("overrides", STRESS)
def test_stress_of_every_day_at_once_is_the_per_day_stress(btc, which, overrides) -> None:
    loss, day = btc if which == "btc" else _simulated()
    policy = CFG.with_overrides(overrides).policy
    # from before the first loss to past the last, every fifth day
    grid = np.arange(day[0] - 3, day[-1] + 4, 5, dtype=np.int64)
    expected = _per_day(loss, day, grid, lambda x, a: stress_es(x, a, policy))
    got = LossTerms(loss, day).stress_at(grid, policy)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[0]) and np.isfinite(got[-1])  # nothing known yet, then a floor


@pytest.mark.parametrize("which", ["btc", "simulated"])
@pytest.mark.parametrize("half_life", [11.0, 2.5, 60.0, 0.7, 365.0])  # 365: in blocks
def test_memory_of_every_day_at_once_is_the_per_day_memory(btc, which, half_life) -> None:
    loss, day = btc if which == "btc" else _simulated()
    # and past the last loss's twenty half-lives, when the memory has let go of it
    grid = np.arange(day[0] - 3, day[-1] + 21 * half_life + 3, 3).astype(np.int64)
    expected = _per_day(loss, day, grid, lambda x, a: loss_memory(x, a, half_life))
    got = LossTerms(loss, day).memory_at(grid, half_life)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[0]) and np.isnan(got[-1]) and np.isfinite(got).mean() > 0.5


def test_days_outside_the_computed_span_extend_it(btc) -> None:
    loss, day = btc
    terms = LossTerms(loss, day)
    late = np.arange(day[-1] - 30, day[-1] + 1, dtype=np.int64)
    early = np.arange(day[0] + 300, day[0] + 330, dtype=np.int64)
    policy = CFG.policy
    first = terms.stress_at(late, policy)
    both = terms.stress_at(np.concatenate([early, late]), policy)  # the span grows to both
    np.testing.assert_array_equal(both[len(early):], first)
    np.testing.assert_array_equal(
        both[:len(early)], _per_day(loss, day, early, lambda x, a: stress_es(x, a, policy)))
    # unordered and repeated days, and none at all
    shuffled = np.array([late[3], early[0], late[3]], dtype=np.int64)
    np.testing.assert_array_equal(terms.memory_at(shuffled, 11.0), _per_day(
        loss, day, shuffled, lambda x, a: loss_memory(x, a, 11.0)))
    assert terms.stress_at(np.empty(0, np.int64), policy).shape == (0,)

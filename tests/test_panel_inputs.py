"""models.panel_inputs.forward_targets: every asset at once, bit for bit the per-asset
definition (features.targets.forward_variance on each asset's complete daily calendar)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.targets import forward_variance
from models.panel_inputs import forward_targets
from tests.simulate import simulate_panel


def per_asset(panel: pd.DataFrame, horizons: tuple[int, ...]) -> np.ndarray:
    """The definition, one asset at a time: its ``rv`` reindexed on the calendar from its first
    to its last date, summed forward, read back at its rows."""
    out = np.full((len(panel), len(horizons)), np.nan)
    for j, h in enumerate(horizons):
        parts = []
        for _, rows in panel["rv"].groupby(level="asset", sort=False):
            dates = rows.index.get_level_values("date")
            calendar = pd.date_range(dates.min(), dates.max(), freq="D")
            rv = pd.Series(rows.to_numpy(dtype=float), index=dates).reindex(calendar)
            fwd = forward_variance(rv, int(h)).reindex(dates)
            parts.append(pd.Series(fwd.to_numpy(), index=rows.index))
        out[:, j] = pd.concat(parts).reindex(panel.index).to_numpy(dtype=float)
    return out


@pytest.fixture(scope="module")
def ragged() -> pd.DataFrame:
    """Assets of different spans, missing days, NaN RV, an asset shorter than a horizon, rows
    shuffled."""
    rng = np.random.default_rng(11)
    panel = simulate_panel(("AAA", "BBB", "CCC", "DDD"), n_days=400, seed=5)
    dates = panel.index.get_level_values("date")
    assets = panel.index.get_level_values("asset")
    keep = rng.random(len(panel)) > 0.03                        # missing days
    keep &= ~((assets == "BBB") & (dates < dates.min() + pd.Timedelta(days=90)))  # late start
    keep &= ~((assets == "CCC") & (dates > dates.min() + pd.Timedelta(days=300)))  # early end
    keep &= ~((assets == "DDD") & (dates > dates.min() + pd.Timedelta(days=4)))    # 5 days
    panel = panel[keep].copy()
    rv = panel["rv"].to_numpy(copy=True)
    rv[rng.random(len(rv)) < 0.02] = np.nan                      # NaN values on present days
    panel["rv"] = rv
    return panel.iloc[rng.permutation(len(panel))]


@pytest.mark.parametrize("horizons", [(1, 7), (1, 7, 30), (3,)])
def test_forward_targets_equal_the_per_asset_definition_bit_for_bit(ragged, horizons):
    got, want = forward_targets(ragged, horizons), per_asset(ragged, horizons)
    assert got.shape == (len(ragged), len(horizons))
    np.testing.assert_array_equal(got, want)  # NaN where NaN, every other value exact
    assert np.isfinite(got).any() and np.isnan(got).any()
    # the 5-day asset has no complete 7-day window; its 1-day targets but the last exist
    short = (ragged.index.get_level_values("asset") == "DDD")
    if 7 in horizons:
        assert np.isnan(got[short, horizons.index(7)]).all()


def test_forward_targets_of_an_unsorted_panel_follow_its_rows(ragged):
    horizons = (1, 7)
    by_row = forward_targets(ragged, horizons)
    order = np.argsort(ragged.index.get_level_values("date").to_numpy(), kind="stable")
    np.testing.assert_array_equal(forward_targets(ragged.iloc[order], horizons), by_row[order])
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        forward_targets(ragged, (0,))
    assert forward_targets(ragged.iloc[:0], horizons).shape == (0, 2)

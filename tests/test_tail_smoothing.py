"""The smoothed tail term of ``benchmarks/tail_smoothing.py``: a causal moving average per
(asset, side, level) series that keeps ES >= VaR and monotonicity in the level."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.tail_smoothing import smoothed


def _tails() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    rows = []
    for asset in ("AAA", "BBB"):
        for day in pd.date_range("2024-01-01", periods=60):
            base = rng.lognormal(-2.5, 0.4)
            for level, mult in ((0.99, 1.0), (0.995, 1.2)):
                rows.append({"model": "m", "asset": asset, "cutoff": day, "side": "long",
                             "level": level, "var": base * mult, "es": base * mult * 1.3})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # any row order


def test_half_life_zero_is_the_forecast_itself():
    t = _tails()
    assert smoothed(t, 0.0) is t


def test_the_smoothing_is_a_causal_ewm_per_series_and_keeps_the_tail_shape():
    t = _tails()
    s = smoothed(t, 3.0).sort_values(["asset", "level", "cutoff"])
    one = t[(t["asset"] == "BBB") & (t["level"] == 0.99)].sort_values("cutoff")
    want = one["es"].ewm(halflife=3.0).mean().to_numpy()
    got = s[(s["asset"] == "BBB") & (s["level"] == 0.99)]["es"].to_numpy()
    np.testing.assert_allclose(got, want)
    assert got[0] == pytest.approx(one["es"].iloc[0])  # day one reads no later day
    assert (s["es"] >= s["var"]).all()
    wide = s.pivot_table(index=["asset", "cutoff"], columns="level", values="var")
    assert (wide[0.995] >= wide[0.99]).all()
    assert s["es"].std() < t["es"].std()  # it smooths

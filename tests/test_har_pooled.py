"""The pooled HAR's fixed effects: the within transformation gives the dummy-design fit."""

from __future__ import annotations

import numpy as np

from configs.schema import HarConfig
from models.har import HarForecaster, ols


def _dummy_fit(x: np.ndarray, y: np.ndarray, assets: np.ndarray, min_obs: int
               ) -> dict[str, tuple[np.ndarray, float]]:
    """The textbook design: one intercept column per asset beside the slopes."""
    names, counts = np.unique(assets, return_counts=True)
    names = names[counts >= min_obs]
    keep = np.isin(assets, names)
    x, y, assets = x[keep], y[keep], assets[keep]
    dummies = (assets[:, None] == names[None, :]).astype(float)
    coef, resid = ols(np.column_stack([dummies, x[:, 1:]]), y)
    out = {}
    for i, asset in enumerate(names):
        rows = assets == asset
        out[str(asset)] = (np.r_[coef[i], coef[len(names):]],
                           float(resid[rows] @ resid[rows] / (rows.sum() - 1)))
    return out


def test_within_transformation_equals_the_dummy_design() -> None:
    rng = np.random.default_rng(3)
    sizes = {"AAA": 400, "BBB": 250, "CCC": 30, "DDD": 600}  # CCC below min_obs
    assets = np.concatenate([np.full(n, a) for a, n in sizes.items()])
    rng.shuffle(assets)  # rows of an asset are not contiguous in a pooled design
    n = len(assets)
    x = np.column_stack([np.ones(n), rng.normal(size=(n, 3))])
    effect = {"AAA": -1.0, "BBB": 0.5, "CCC": 2.0, "DDD": 0.0}
    y = (np.array([effect[a] for a in assets]) + x[:, 1:] @ [0.4, 0.3, 0.2]
         + rng.normal(scale=[0.3 if a == "BBB" else 0.1 for a in assets]))
    model = HarForecaster(HarConfig(min_obs=100), alias="har_rv_pooled")
    got = model._fit_pooled(x, y, assets)
    expected = _dummy_fit(x, y, assets, min_obs=100)
    assert set(got) == set(expected) == {"AAA", "BBB", "DDD"}
    for asset, (coef, resid_var) in expected.items():
        np.testing.assert_allclose(got[asset]["coef"], coef, rtol=1e-10, atol=1e-12)
        assert abs(got[asset]["resid_var"] / resid_var - 1) < 1e-10
        assert got[asset]["n"] == sizes[asset]
    # the noisier asset keeps its own residual variance
    assert got["BBB"]["resid_var"] > 5 * got["AAA"]["resid_var"]


def test_asset_codes_equal_np_unique_by_hashing() -> None:
    from models.har import asset_codes

    rng = np.random.default_rng(5)
    assets = rng.choice(np.array(["S0010", "BTC", "S0002", "eth", "S0100"], dtype=object), 999)
    names, codes = asset_codes(assets)
    want_names, want_codes = np.unique(assets, return_inverse=True)
    assert list(names) == list(want_names) and np.array_equal(codes, want_codes)
    with np.testing.assert_raises(ValueError):
        asset_codes(np.array(["BTC", None], dtype=object))

"""The EWMA recursion without scipy.signal: lfilter's values bit for bit, batched over ragged
assets; a served EWMA model, and FHS tails on EWMA or GARCH, import none of what fits need."""

from __future__ import annotations

import json

import numpy as np
from scipy.signal import lfilter

from features.loaders import load_daily
from models.ewma import ewma_variance, ewma_variances
from tests.conftest import MARKET
from tests.fresh import forecast_code, watched_imports


def _lfilter_reference(returns: np.ndarray, decay: float, init_obs: int) -> np.ndarray:
    """The implementation the batch replaced: scipy's lfilter from the mean-square start."""
    r2 = np.asarray(returns, dtype=float) ** 2
    out = np.full(r2.shape, np.nan)
    if len(r2) < init_obs:
        return out
    start = r2[:init_obs].mean()
    tail, _ = lfilter([1.0 - decay], [1.0, -decay], r2[init_obs:], zi=[decay * start])
    out[init_obs - 1] = start
    out[init_obs:] = tail
    return out


def _returns(asset: str) -> np.ndarray:
    close = load_daily(MARKET / "crypto" / "daily" / f"{asset}.csv.gz")["close"].to_numpy()
    return np.diff(np.log(close))


def test_every_asset_is_lfilters_recursion_bit_for_bit_alone_and_batched() -> None:
    series = [_returns(a) for a in ("BTC", "LINK", "TRX")]  # LINK: the 2020-03-12 0.0001 low
    series += [series[0][:31], series[1][:29], np.array([]), series[2][:400] * 1e-6]
    for decay, init_obs in ((0.94, 30), (0.97, 1), (0.5, 5)):
        batched = ewma_variances(series, decay, init_obs)
        for r, got in zip(series, batched, strict=True):
            want = _lfilter_reference(r, decay, init_obs)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(ewma_variance(r, decay, init_obs), want)
    short = ewma_variances([series[1][:29]], 0.94, 30)[0]
    assert short.shape == (29,) and np.isnan(short).all()  # too short: no forecast at all


def test_serving_an_ewma_model_imports_none_of_what_a_fit_needs() -> None:
    state = {"alias": "ewma94", "kind": "ewma", "config": {}, "assets": ["A"]}
    assert watched_imports(forecast_code(state, rows=2 * (90 - 29))) == []  # from day 30


def test_serving_fhs_tails_imports_neither_arch_nor_scipy_signal_nor_stats(tmp_path) -> None:
    """A tail-driven champion on FHS (`fhs_ewma`, `fhs_garch`) forecasts its VaR/ES at serve
    time without the imports a fit needs (arch, scipy.stats) or scipy.signal."""
    from configs.schema import TailConfig
    from models.tail.registry import build_tail_forecaster
    from tests.tail_panel import tail_panel

    panel = tail_panel(("AAA", "BBB"), n_days=400, seed=3)
    panel.to_parquet(tmp_path / "panel.parquet")
    for alias in ("fhs_ewma", "fhs_garch"):
        state = build_tail_forecaster(alias, TailConfig()).fit(panel).state()
        (tmp_path / f"{alias}.json").write_text(json.dumps(state))
    code = (
        "import json, pandas as pd\n"
        "from models.tail.registry import tail_forecaster_from_state\n"
        f"panel = pd.read_parquet({str(tmp_path / 'panel.parquet')!r})\n"
        "for alias in ('fhs_ewma', 'fhs_garch'):\n"
        f"    state = json.loads(open({str(tmp_path)!r} + f'/{{alias}}.json').read())\n"
        "    out = tail_forecaster_from_state(state).forecast_tail(panel, [0.99])\n"
        "    assert len(out) and out['es'].notna().all(), out\n"
    )
    assert watched_imports(code) == []

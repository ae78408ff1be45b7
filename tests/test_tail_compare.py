"""The tail comparison on hand-made forecasts: joins, pooling, choice by the selection period."""

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.evaluation import tail_compare as tc


def _panel(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-01-01", periods=n, freq="D")
    idx = pd.MultiIndex.from_product([["AAA", "BBB"], dates], names=["asset", "date"])
    loss = np.abs(rng.standard_t(5, size=len(idx))) * 0.02
    return pd.DataFrame({"target_worst_loss_long": loss,
                         "target_worst_loss_short": loss[::-1].copy(),
                         "target_worst_loss_is_proxy": False}, index=idx)


def _forecasts(panel: pd.DataFrame, model: str, var_frac: float, es_frac: float
               ) -> pd.DataFrame:
    idx = panel.index
    rows = []
    for side in ("long", "short"):
        rows.append(pd.DataFrame({"model": model, "asset": idx.get_level_values("asset"),
                                  "cutoff": idx.get_level_values("date"),
                                  "target_date": idx.get_level_values("date")
                                  + pd.Timedelta(days=1), "side": side, "level": 0.99,
                                  "var": var_frac, "es": es_frac}))
    return pd.concat(rows, ignore_index=True)


def test_score_joins_the_realized_fraction_and_fz0():
    panel = _panel()
    fc = _forecasts(panel, "fhs_ewma", 0.06, 0.08)
    s = tc.score(fc, panel)
    first = s[(s.side == "long") & (s.asset == "AAA")].iloc[0]
    loss = 1 - math.exp(-panel["target_worst_loss_long"].iloc[0])
    assert first["loss"] == pytest.approx(loss)
    expected = (max(loss - 0.06, 0) / (0.01 * 0.08) + 0.06 / 0.08 + math.log(0.08) - 1)
    assert first["fz0"] == pytest.approx(expected)
    short = s[(s.side == "short") & (s.asset == "AAA")].iloc[0]
    assert short["loss"] == pytest.approx(math.expm1(panel["target_worst_loss_short"].iloc[0]))


def test_pooled_fz0_is_the_mean_of_daily_cross_sectional_means():
    panel = _panel()
    s = tc.score(_forecasts(panel, "fhs_ewma", 0.06, 0.08), panel)
    t = tc.fz0_table(s)
    row = t[(t.side == "long") & (t.model == "fhs_ewma")].iloc[0]
    long = s[s.side == "long"]
    assert row["fz0"] == pytest.approx(long.groupby("cutoff")["fz0"].mean().mean())
    assert row["days"] == 400


def test_best_classical_and_dm_prefer_the_true_tail():
    panel = _panel(n=1500, seed=1)
    # true 99% tail of 0.02·|t5|: VaR = 0.02·t5.ppf(0.995), far better than a halved one
    from scipy import stats
    q = stats.t.ppf(0.995, 5)
    es = 2 * stats.t.pdf(q, 5) / 0.01 * (5 + q**2) / 4 / 2  # E[|T| | |T| > q]
    var_f, es_f = 1 - math.exp(-0.02 * q), 1 - math.exp(-0.02 * es)
    fc = pd.concat([_forecasts(panel, "fhs_garch", var_f, es_f),
                    _forecasts(panel, "fhs_ewma", var_f / 2, es_f / 2),
                    _forecasts(panel, "tail_nn", var_f / 2, es_f / 2)])
    s = tc.score(fc, panel)
    assert tc.best_classical(s) == "fhs_garch"
    dm = tc.dm_table(s, ["fhs_garch"])
    assert (dm["p_better"] > 0.95).all()  # the halved tails are significantly worse


def test_backtest_table_flags_too_many_breaches():
    panel = _panel(n=500, seed=2)
    fc = pd.concat([_forecasts(panel, "low", 0.005, 0.01), _forecasts(panel, "high", 0.3, 0.4)])
    bt = tc.backtest_table(tc.score(fc, panel)).set_index(["model", "side", "asset"])
    assert not bt.loc[("low", "long", "AAA"), "passes"]
    assert bt.loc[("high", "long", "AAA"), "passes"]
    assert bt.loc[("high", "long", "AAA"), "breaches"] == 0

"""Feature panel on real data: schema coverage, targets, masks and fallbacks, cross-asset columns.

Point-in-time tests live in ``test_features_pit.py``, estimators against known answers in
``test_features_estimators.py``, ``test_features_comovement.py`` and ``test_features_losses.py``,
bad input / store / plots in ``test_features_io.py``.
"""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from configs.schema import FeaturesConfig
from features.build import build_panel
from features.loaders import MarketData
from features.schema import COLUMNS, TARGET_PREFIX, feature_view, undocumented_columns
from features.summary import proxy_comparison
from features.targets import forward_sum

CFG = FeaturesConfig()


@pytest.fixture(scope="module")
def small_market(embedded_market: MarketData) -> MarketData:
    keep = ("BTC", "SOL", "MATIC")
    return MarketData(
        daily={a: embedded_market.daily[a] for a in keep},
        hourly={"BTC": embedded_market.hourly["BTC"]},
        dvol=dict(embedded_market.dvol), macro=dict(embedded_market.macro),
        gaps=embedded_market.gaps, data_dir=embedded_market.data_dir, files=[],
    )


@pytest.fixture(scope="module")
def full_panel(small_market: MarketData) -> pd.DataFrame:
    return build_panel(small_market, CFG)


def test_every_panel_column_is_documented(full_panel):
    assert undocumented_columns(full_panel) == []
    assert set(full_panel.columns) == set(COLUMNS)
    assert list(full_panel.columns) == list(COLUMNS)  # schema order


def test_every_schema_entry_has_a_unit_a_meaning_and_a_group():
    for col in COLUMNS.values():
        assert col.unit and len(col.meaning) > 15 and col.group, col.name
        assert col.name.startswith(TARGET_PREFIX) == (col.group == "target"), col.name


def test_an_undocumented_column_fails_the_build(small_market):
    with pytest.raises(ValueError, match="har_rv_14d"):
        build_panel(small_market, FeaturesConfig(har_windows=[1, 7, 14, 30]))


def test_issue_column_contract_is_present(full_panel):
    """The names the policy code is written against (issue 3)."""
    contract = ["worst_loss_long", "worst_loss_short", "worst_loss_long_intrabar",
                "worst_loss_short_intrabar", "worst_loss_is_proxy", "target_worst_loss_long",
                "target_worst_loss_short", "target_worst_loss_long_intrabar",
                "target_worst_loss_short_intrabar", "target_worst_loss_is_proxy",
                "corr_spx_30d", "beta_btc_30d", "basket_corr_30d", "vix_regime",
                "volume_z_30d", "amihud_30d", "target_variance_30d", "target_return_7d"]
    assert [c for c in contract if c not in full_panel.columns] == []


def test_feature_view_hides_every_target(full_panel):
    view = feature_view(full_panel)
    assert not [c for c in view.columns if c.startswith("target_")]
    assert {"target_variance_1d", "target_variance_7d"} <= set(full_panel.columns)


def test_targets_are_forward_sums_of_the_panel(full_panel):
    btc = full_panel.xs("BTC")
    assert btc["target_variance_1d"].iloc[:-1].to_numpy() == pytest.approx(
        btc["rv"].iloc[1:].to_numpy())
    assert btc["target_variance_7d"].iloc[0] == pytest.approx(btc["rv"].iloc[1:8].sum())
    assert btc["target_variance_30d"].iloc[0] == pytest.approx(btc["rv"].iloc[1:31].sum())
    assert btc["target_return_1d"].iloc[10] == btc["ret_1d"].iloc[11]
    assert btc["target_return_7d"].iloc[10] == pytest.approx(
        np.log(btc["close"].iloc[17] / btc["close"].iloc[10]))
    assert np.isnan(btc["target_variance_30d"].iloc[-30:]).all()
    assert btc["target_worst_loss_long"].iloc[:-1].to_numpy() == pytest.approx(
        btc["worst_loss_long"].iloc[1:].to_numpy())


def test_forward_sum_never_returns_a_partial_sum():
    x = pd.Series([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    out = forward_sum(x, 2)
    assert np.isnan(out.iloc[0]) and np.isnan(out.iloc[1])
    assert out.iloc[2] == 9.0 and out.iloc[3] == 11.0
    assert out.iloc[4:].isna().all()


def test_assets_without_own_dvol_get_market_dvol_with_mask(full_panel):
    sol = full_panel.xs("SOL")
    before = sol.loc[:"2021-03-23"]
    assert not before["dvol_available"].any()
    dvol_cols = ["dvol_var_1d", "dvol_change_1d", "dvol_change_7d", "vrp", "iv_rv_ratio"]
    assert before[dvol_cols].isna().all().all()  # nothing invented before the launch
    after = sol.loc["2021-03-24":]
    assert after["dvol_available"].all() and not after["dvol_is_own"].any()
    btc = full_panel.xs("BTC").loc["2021-03-24":]
    assert btc["dvol_is_own"].all()
    day = "2022-01-03"
    assert sol.loc[day, "dvol_var_1d"] == btc.loc[day, "dvol_var_1d"]
    assert sol.loc[day, "dvol_change_7d"] == btc.loc[day, "dvol_change_7d"]
    assert sol.loc[day, "vrp"] == pytest.approx(sol.loc[day, "dvol_var_1d"]
                                                - sol.loc[day, "har_rv_30d"])
    assert np.isnan(btc.loc["2021-03-24", "dvol_change_1d"])  # no DVOL the day before


def test_rv_uses_hourly_where_available_else_garman_klass(full_panel):
    btc, sol = full_panel.xs("BTC"), full_panel.xs("SOL")
    assert not sol["rv_is_hourly"].any()
    assert sol["rv"].equals(sol["gk_var"])
    assert sol[["rv_down", "bpv", "rskew"]].isna().all().all()  # hourly-only measures
    assert btc["rv_is_hourly"].mean() > 0.99
    # the 2018-02-08..11 Binance outage: those days fall back to the range estimator ...
    outage = btc.loc["2018-02-09"]
    assert not outage["rv_is_hourly"] and outage["rv"] == outage["gk_var"]
    # ... and the worst-loss proxy, flagged; normal days are hourly
    assert outage["worst_loss_is_proxy"] and not btc.loc["2022-06-13", "worst_loss_is_proxy"]
    # SOL without hourly candles: the proxy every day but its listing day, which has none
    assert sol["worst_loss_is_proxy"].iloc[1:].all()
    assert not sol["worst_loss_is_proxy"].iloc[0] and np.isnan(sol["worst_loss_long"].iloc[0])


def test_worst_loss_is_wider_intrabar_and_in_the_crash(full_panel):
    btc = full_panel.xs("BTC")
    # the listing day (2017-08-17: 20 hourly candles, below min_hours_for_rv) has no loss;
    # every other day has one
    assert btc["worst_loss_long"].isna().tolist() == [True] + [False] * (len(btc) - 1)
    btc = btc.iloc[1:]
    assert (btc["worst_loss_long_intrabar"] >= btc["worst_loss_long"] - 1e-12).all()
    assert (btc["worst_loss_short_intrabar"] >= btc["worst_loss_short"] - 1e-12).all()
    crash = btc.loc["2020-03-12"]
    assert crash["worst_loss_long"] > 0.08  # BTC lost > 8% within one hour that day
    assert crash["worst_loss_long"] > btc["worst_loss_long"].quantile(0.999)


def test_beta_to_btc_and_basket_follow_the_assets_trading(full_panel):
    btc, sol, matic = (full_panel.xs(a) for a in ("BTC", "SOL", "MATIC"))
    assert set(btc["beta_btc_30d"].dropna().unique()) == {1.0}
    assert 0.8 < sol["beta_btc_30d"].loc["2022"].median() < 2.0
    assert matic.loc["2024-09-10", "basket_n_assets"] == 3
    assert btc.loc["2024-09-11", "basket_n_assets"] == 2  # MATIC delisted: out of the basket
    day = "2023-05-02"
    assert btc.loc[day, "basket_corr_30d"] == sol.loc[day, "basket_corr_30d"]
    assert 0.3 < btc["basket_corr_30d"].median() < 0.95


def test_macro_columns_are_lagged_and_vix_regime_marks_stress(full_panel):
    btc = full_panel.xs("BTC")
    # 2020-03-16 VIX close 82.69 (a Monday) is used from Tuesday on, not on the Monday
    assert btc.loc["2020-03-16", "vix_level"] != pytest.approx(82.69)
    assert btc.loc["2020-03-17", "vix_level"] == pytest.approx(82.69)
    assert btc.loc["2020-03-17", "vix_regime"] and not btc.loc["2021-11-01", "vix_regime"]
    assert btc["vix_regime"].dtype == "boolean"
    for col in ("corr_us10y_90d", "beta_vix_30d", "corr_gold_90d", "beta_dxy_30d"):
        assert btc[col].loc["2019":].notna().mean() > 0.99, col


def test_liquidity_columns_are_readable(full_panel):
    btc, sol = full_panel.xs("BTC").loc["2024"], full_panel.xs("SOL").loc["2024"]
    assert btc["amihud_30d"].median() < sol["amihud_30d"].median()  # BTC is the deeper market
    assert 0.001 < btc["amihud_30d"].median() < 10  # bp per $1M: a readable number
    assert abs(btc["volume_z_30d"].median()) < 1


def test_panel_is_one_row_per_asset_day(full_panel):
    assert full_panel.index.is_unique
    matic = full_panel.xs("MATIC")
    assert matic.index.max() == pd.Timestamp(dt.date(2024, 9, 10))


def test_garman_klass_proxy_tracks_hourly_rv_on_btc(full_panel):
    table = proxy_comparison(full_panel).set_index(["asset", "estimator", "horizon"])
    gk = table.loc[("BTC", "gk_var", "1d")]
    assert gk["n"] > 2800 and gk["corr_log"] > 0.9 and abs(gk["bias"]) < 0.2
    assert table.loc[("BTC", "yang_zhang_var_30d", "30d"), "corr"] > 0.95

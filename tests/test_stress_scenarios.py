"""Joint scenarios: FHS keeps the cross-asset dependence, episodes are replayed from hourly
data (daily and missing flagged), filtered to today's σ, shocks follow betas."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from configs.schema import StressConfig, StressEpisode
from pipelines.stress.montecarlo import (
    MIN_DATES,
    ewma_correlation,
    fhs_paths,
    fhs_pool,
    monte_carlo,
    standardized_returns,
    t_copula,
    t_copula_paths,
)
from pipelines.stress.scenarios import (
    ewma_sigma,
    historical,
    historical_scenarios,
    hypothetical_scenarios,
)


def _daily(log_ret: np.ndarray, start: str = "2018-01-01") -> pd.DataFrame:
    close = 100.0 * np.exp(np.cumsum(log_ret))
    index = pd.date_range(start, periods=len(close), freq="D", name="date")
    opens = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame({"open": opens, "high": np.maximum(opens, close),
                         "low": np.minimum(opens, close), "close": close,
                         "volume": 1e6}, index=index)


def _pair(rho: float, n: int, seed: int) -> dict[str, pd.DataFrame]:
    """Two assets with GARCH-like common volatility clusters and correlation ``rho``."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n, 2))
    e[:, 1] = rho * e[:, 0] + np.sqrt(1 - rho**2) * e[:, 1]
    vol = 0.03 * np.exp(np.cumsum(0.05 * rng.standard_normal(n)) * 0.3)  # slow regimes
    return {"A": _daily(vol * e[:, 0]), "B": _daily(1.5 * vol * e[:, 1])}


def test_joint_fhs_preserves_the_correlation_of_a_known_pair() -> None:
    rho, n_days, n_paths = 0.6, 3_000, 40_000
    z = standardized_returns(_pair(rho, n_days, 1), ["A", "B"], 0.94)
    rel = fhs_paths(z.to_numpy(), np.array([0.02, 0.05]), n_paths, 1, seed=3)
    x = np.log(rel[:, 1, :])
    # sampling error of a correlation: (1 − ρ²)/√N for the 3,000 days of history, plus the
    # resampling error over 40,000 paths; 0.06 is over 3 standard errors of the sum
    assert np.corrcoef(x.T)[0, 1] == pytest.approx(rho, abs=0.06)
    assert x.std(axis=0) == pytest.approx([0.02, 0.05], rel=0.1)  # rescaled to today's σ
    # drawing each asset's date independently would destroy it: the test can tell
    rng = np.random.default_rng(4)
    zz = z.to_numpy()
    independent = np.column_stack([zz[rng.integers(0, len(zz), n_paths), k] for k in range(2)])
    assert abs(np.corrcoef(independent.T)[0, 1]) < 0.05


def test_monte_carlo_draws_whole_cross_sections_and_is_seeded() -> None:
    daily = _pair(0.3, 600, 2)
    sigma = np.array([0.02, 0.04])
    a = monte_carlo(daily, ["A", "B"], sigma, 500, 2, seed=9, decay=0.94)
    b = monte_carlo(daily, ["A", "B"], sigma, 500, 2, seed=9, decay=0.94)
    assert np.array_equal(a.relative, b.relative) and a.relative.shape == (500, 3, 2)
    z = standardized_returns(daily, ["A", "B"], 0.94).to_numpy()
    first_step = np.log(a.relative[:, 1, :]) / sigma
    # every drawn pair of standardized returns is one historical date's pair
    rows = {tuple(np.round(r, 9)) for r in z}
    assert all(tuple(np.round(r, 9)) in rows for r in first_step)
    assert a.delay_steps == 0 and "complete cross-sections" in a.note


def _hourly(daily: pd.DataFrame, day: str, hourly_log_ret: np.ndarray) -> pd.DataFrame:
    start = daily.loc[:pd.Timestamp(day) - pd.Timedelta(days=1), "close"].iloc[-1]
    close = start * np.exp(np.cumsum(hourly_log_ret))
    index = pd.date_range(day, periods=len(close), freq="h", name="timestamp")
    opens = np.concatenate([[start], close[:-1]])
    return pd.DataFrame({"open": opens, "close": close}, index=index)


def test_episode_hourly_daily_and_missing_sources_and_filtering() -> None:
    rng = np.random.default_rng(0)
    daily = {"A": _daily(0.02 * rng.standard_normal(400)),
             "B": _daily(0.03 * rng.standard_normal(400)),
             "C": _daily(0.03 * rng.standard_normal(100), start="2018-12-01")}
    day = "2018-06-01"
    hourly = {"A": _hourly(daily["A"], day, np.full(24, -0.01))}  # −24% log over the day
    ep = StressEpisode(name="crash", start=dt.date(2018, 6, 1), end=dt.date(2018, 6, 1))
    x, source, filled = historical(ep, daily, hourly, ["A", "B", "C"])
    assert source == {"A": "hourly", "B": "daily", "C": "missing"} and filled == 0
    assert x.shape == (25, 3)
    assert x[:, 0] == pytest.approx(-0.01 * np.arange(25))
    b = daily["B"].loc[day]
    assert x[-1, 1] == pytest.approx(np.log(b["close"] / b["open"]))  # daily close reached
    assert x[12, 1] == pytest.approx(x[-1, 1] / 2)  # log-linear within the day
    assert np.isnan(x[:, 2]).all()

    sigma_today = np.array([0.05, 0.01, 0.02])
    cfg = StressConfig(episodes=[ep, StressEpisode(name="later", start=dt.date(2019, 1, 1),
                                                   end=dt.date(2019, 1, 2))])
    scns = historical_scenarios(cfg, daily, hourly, ["A", "B", "C"], sigma_today,
                                dt.date(2018, 12, 31), delay_steps=1)
    assert [s.name for s in scns] == ["crash", "crash_filtered"]  # 2019 is after the as-of
    asis, filt = scns
    then = ewma_sigma(daily["A"]["close"], 0.94).loc[day]  # known the day before
    assert np.log(filt.relative[0, -1, 0]) == pytest.approx(-0.24 * 0.05 / then)
    assert np.log(asis.relative[0, -1, 0]) == pytest.approx(-0.24)
    assert filt.missing_assets == ["C"] and np.isnan(filt.relative[0, :, 2]).all()


def test_hours_that_stop_before_the_episode_ends_give_way_to_the_daily_path() -> None:
    """A feed that ends six hours into a crash day is not the crash: carrying its last close
    through the other eighteen hours would replay −6% where the day fell −38%. The daily
    path (flagged) covers it instead, and only hours of a path in use count as filled;
    hours missing inside the day, with candles after them, keep the last close."""
    rng = np.random.default_rng(1)
    daily = {"A": _daily(0.02 * rng.standard_normal(200))}
    day = "2018-06-01"
    daily["A"].loc[day, "close"] = daily["A"].loc[day, "open"] * np.exp(-0.48)  # −38%
    hours = _hourly(daily["A"], day, np.full(24, -0.02))
    ep = StressEpisode(name="crash", start=dt.date(2018, 6, 1), end=dt.date(2018, 6, 1))
    x, source, filled = historical(ep, daily, {"A": hours.iloc[:6]}, ["A"])
    assert source == {"A": "daily"} and filled == 0
    assert x[-1, 0] == pytest.approx(-0.48)  # the day's close, not the feed's last hour
    inside = hours.drop(hours.index[8:11])  # three hours lost inside the day
    x, source, filled = historical(ep, daily, {"A": inside}, ["A"])
    assert source == {"A": "hourly"} and filled == 3
    assert x[9, 0] == pytest.approx(x[8, 0]) and x[-1, 0] == pytest.approx(-0.48)


def test_ewma_sigma_uses_only_past_returns() -> None:
    close = pd.Series(100 * np.exp(np.cumsum(np.full(60, 0.01))),
                      index=pd.date_range("2020-01-01", periods=60, freq="D"))
    s = ewma_sigma(close, 0.94)
    shocked = close.copy()
    shocked.iloc[50:] *= 0.5  # a crash on day 50 ...
    t = ewma_sigma(shocked, 0.94)
    assert t.iloc[:51].equals(s.iloc[:51])  # ... is not in σ of day 50, only from day 51
    assert t.iloc[51] > s.iloc[51]


def test_beta_and_correlation_one_shocks() -> None:
    rng = np.random.default_rng(7)
    x = 0.03 * rng.standard_normal(800)
    y = 0.5 * x + 0.01 * rng.standard_normal(800)
    daily = {"BTC": _daily(x), "ALT": _daily(y)}
    sigma = np.array([0.04, 0.03])  # ALT, BTC (sorted)
    cfg = StressConfig(collapse_assets=["ALT"])
    built, skipped = hypothetical_scenarios(cfg, daily, ["ALT", "BTC"], sigma, 1)
    scns = {s.name: s for s in built}
    assert skipped == []
    beta = scns["BTC_drop30_beta"].relative[0]
    assert beta.shape == (3, 2) and beta[1, 1] == pytest.approx(0.7)
    assert np.log(beta[1, 0]) / np.log(0.7) == pytest.approx(0.5, abs=0.03)
    corr1 = scns["BTC_drop30_corr1"].relative[0]
    assert np.log(corr1[2, 0]) == pytest.approx(np.log(0.7) * 0.04 / 0.03)
    vol = scns["vol_x3"]
    assert vol.sigma_multiplier == 3.0
    assert np.log(vol.relative[0, 1]) == pytest.approx(-2.33 * 3 * sigma)
    assert scns["ALT_collapse"].relative[0, 1].tolist() == pytest.approx([0.1, 1.0])


def _shock_inputs() -> tuple[StressConfig, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(7)
    x = 0.03 * rng.standard_normal(800)
    daily = {"BTC": _daily(x), "ALT": _daily(0.5 * x + 0.01 * rng.standard_normal(800))}
    return StressConfig(collapse_assets=["ALT"]), daily


def test_an_unusable_shock_asset_skips_its_shocks_with_the_reason() -> None:
    """Both shocks are "the shock asset moves, the others follow": with its data stale or no
    forecast they are not built (never from a placeholder σ), and say why."""
    cfg, daily = _shock_inputs()
    built, skipped = hypothetical_scenarios(cfg, daily, ["ALT", "BTC"],
                                            np.array([0.04, 0.03]), 1, unusable=["BTC"])
    assert [s.name for s in built] == ["vol_x3", "ALT_collapse"]
    assert [(s.name, s.kind) for s in skipped] == [("BTC_drop30_beta", "hypothetical"),
                                                   ("BTC_drop30_corr1", "hypothetical")]
    assert all("shock asset BTC is unusable" in s.reason for s in skipped)
    # an unusable asset's own collapse is skipped too, said so
    built, skipped = hypothetical_scenarios(cfg, daily, ["ALT", "BTC"],
                                            np.array([0.04, 0.03]), 1, unusable=["ALT"])
    assert "ALT_collapse" not in [s.name for s in built]
    assert [s.name for s in skipped] == ["ALT_collapse"] and "ALT is unusable" in skipped[0].reason


def test_a_shock_or_collapse_asset_that_is_not_published_is_skipped_with_the_reason() -> None:
    """A misspelt ``shock_asset`` (or one a challenger's frame lacks) would otherwise build
    neither market-wide shock and say nothing; the stress gate refuses on such a skip."""
    _, daily = _shock_inputs()
    cfg = StressConfig(shock_asset="XBT", collapse_assets=["ALT", "SOLL"])
    built, skipped = hypothetical_scenarios(cfg, daily, ["ALT", "BTC"],
                                            np.array([0.04, 0.03]), 1)
    assert [s.name for s in built] == ["vol_x3", "ALT_collapse"]
    assert [s.name for s in skipped] == ["XBT_drop30_beta", "XBT_drop30_corr1",
                                         "SOLL_collapse"]
    assert "shock asset XBT is not among the 2 published assets" in skipped[0].reason
    assert "SOLL is not among the published assets" in skipped[2].reason


def test_correlation_one_needs_a_positive_shock_sigma() -> None:
    """σ_shock = 0 (or NaN) would give every other asset a move of −inf, i.e. a price of 0:
    the correlation-one shock is skipped, the beta shock (no σ) still stands."""
    cfg, daily = _shock_inputs()
    for bad in (0.0, np.nan):
        built, skipped = hypothetical_scenarios(cfg, daily, ["ALT", "BTC"],
                                                np.array([0.04, bad]), 1)
        names = [s.name for s in built]
        assert "BTC_drop30_beta" in names and "BTC_drop30_corr1" not in names
        assert [s.name for s in skipped] == ["BTC_drop30_corr1"]
        assert "sigma_1d of BTC" in skipped[0].reason


def test_a_move_that_cannot_be_computed_is_missing_not_a_price_of_zero() -> None:
    """A non-finite log move (here from an infinite σ) is NaN in the scenario, so the
    accounts holding that asset are excluded, not liquidated at a price of 0."""
    cfg, daily = _shock_inputs()
    built, _ = hypothetical_scenarios(cfg, daily, ["ALT", "BTC"], np.array([np.inf, 0.03]), 1)
    vol = next(s for s in built if s.name == "vol_x3")
    assert vol.missing_assets == ["ALT"] and np.isnan(vol.relative[0, :, 0]).all()
    assert np.isfinite(vol.relative[0, :, 1]).all()


def test_t_copula_keeps_marginals_and_adds_tail_dependence() -> None:
    rho = 0.6
    z = standardized_returns(_pair(rho, 3_000, 1), ["A", "B"], 0.94).to_numpy()
    corr = ewma_correlation(z, 0.999)  # long memory: close to the sample correlation
    assert corr[0, 1] == pytest.approx(rho, abs=0.06) and np.allclose(np.diag(corr), 1)
    sigma = np.array([0.02, 0.05])
    heavy = np.log(t_copula_paths(z, sigma, corr, 3.0, 40_000, 1, seed=5)[:, 1, :])
    gauss = np.log(t_copula_paths(z, sigma, corr, 1e6, 40_000, 1, seed=5)[:, 1, :])
    # marginals are each asset's FHS distribution: same quantiles as z × σ_today
    for k in range(2):
        assert np.quantile(heavy[:, k], [0.05, 0.5, 0.95]) == pytest.approx(
            np.quantile(z[:, k] * sigma[k], [0.05, 0.5, 0.95]), abs=0.15 * sigma[k])
    # joint 2% crashes happen more often under the t copula (tail dependence) than Gaussian
    def joint_tail(x: np.ndarray) -> float:
        q = np.quantile(x, 0.02, axis=0)
        return float(((x[:, 0] < q[0]) & (x[:, 1] < q[1])).mean())
    assert joint_tail(heavy) > 1.3 * joint_tail(gauss)


def _young(source: pd.DataFrame, days: int, scale: float, seed: int) -> pd.DataFrame:
    """An asset listed ``days`` days before ``source``'s last date whose daily log returns
    are ``scale`` × the source's plus a little noise of its own."""
    r = np.log(source["close"]).diff().iloc[-days:].to_numpy(copy=True)
    r[0] = 0.0
    noise = 0.002 * np.random.default_rng(seed).standard_normal(days)
    return _daily(scale * r + noise, start=str(source.index[-days].date()))


def test_fhs_pool_equals_the_complete_cross_sections_when_every_asset_is_seasoned() -> None:
    daily = _pair(0.3, 600, 2)
    pool = fhs_pool(daily, ["A", "B"], 0.94)
    assert pool.proxies == {}
    pd.testing.assert_frame_equal(pool.z, standardized_returns(daily, ["A", "B"], 0.94))


def test_a_young_asset_moves_with_its_most_correlated_seasoned_proxy() -> None:
    daily = _pair(0.3, 600, 2)
    daily["C"] = _young(daily["B"], 150, 2.0, seed=1)  # B's moves, twice as large
    assets = ["A", "B", "C"]
    # with C the complete cross-sections fall far below a year: before, no joint scenario
    assert len(standardized_returns(daily, assets, 0.94)) < MIN_DATES
    pool = fhs_pool(daily, assets, 0.94)
    assert pool.proxies == {"C": "B"}  # B, not A (listed first, 0.3 correlated with B)
    seasoned = standardized_returns(daily, ["A", "B"], 0.94)
    assert pool.z.index.equals(seasoned.index) and len(pool.z) >= MIN_DATES
    assert np.array_equal(pool.z["C"].to_numpy(), seasoned["B"].to_numpy())
    assert "C by B" in pool.describe()
    sigma = np.array([0.02, 0.04, 0.09])
    mc = monte_carlo(daily, assets, sigma, 300, 2, seed=4, decay=0.94)
    assert mc.source == {"A": "fhs", "B": "fhs", "C": "proxy:B"}
    assert "C by B" in mc.note
    x = np.log(mc.relative)
    # the same standardized draws as B on every path, at C's own σ
    assert np.allclose(x[..., 2] / sigma[2], x[..., 1] / sigma[1])
    tc = t_copula(daily, assets, sigma, 300, 2, seed=4, decay=0.94, dof=4.0)
    assert tc.source["C"] == "proxy:B" and np.isfinite(tc.relative).all()
    y = np.log(tc.relative)
    assert np.allclose(y[..., 2] / sigma[2], y[..., 1] / sigma[1])
    # the seasoned assets' copula is the one of the pair alone, draw for draw
    pair = t_copula(daily, ["A", "B"], sigma[:2], 300, 2, seed=4, decay=0.94, dof=4.0)
    assert np.array_equal(tc.relative[..., :2], pair.relative)


def test_an_asset_of_two_years_does_not_cut_the_pool_to_its_listing() -> None:
    """A pool of complete cross-sections would start at the youngest asset's listing, and
    every crash before it would leave the draws: the pool spans at least ``min_share`` of
    the longest history; a younger asset moves by its proxy."""
    daily = _pair(0.3, 1500, 2)
    daily["C"] = _young(daily["B"], 400, 1.0, seed=3)
    z_longest = standardized_returns(daily, ["A"], 0.94)
    pool = fhs_pool(daily, ["A", "B", "C"], 0.94)
    assert pool.proxies == {"C": "B"} and len(pool.z) >= 0.8 * len(z_longest)
    assert pool.z.index[0] == standardized_returns(daily, ["A", "B"], 0.94).index[0]
    # without the share, C's ~370 complete cross-sections (over a year) would have been all
    cut = fhs_pool(daily, ["A", "B", "C"], 0.94, min_share=0.0)
    assert cut.proxies == {} and MIN_DATES <= len(cut.z) < 0.3 * len(z_longest)


def test_a_proxy_needs_common_history_else_the_longest_history_is_used() -> None:
    daily = _pair(0.3, 600, 2)
    daily["A"] = daily["A"].iloc[50:]  # B has the longest history now
    daily["D"] = _young(daily["A"], 45, 1.0, seed=2)  # 15 standardized returns (EWMA needs 30)
    pool = fhs_pool(daily, ["A", "B", "D"], 0.94)
    assert pool.proxies == {"D": "B"}


def test_no_seasoned_asset_is_a_clear_error() -> None:
    daily = _pair(0.3, 200, 2)  # 170 standardized returns each
    with pytest.raises(ValueError, match=r">= 250 dates .* A, B; none has them"):
        fhs_pool(daily, ["A", "B"], 0.94)


def test_the_proxies_of_all_young_assets_at_once_are_each_ones_own() -> None:
    """The masked matrix products give each young asset the proxy that a correlation per
    pair (pandas, pairwise complete) gives, with too few common dates falling back to the
    first seasoned column."""
    from pipelines.stress.montecarlo import PROXY_MIN_OBS, proxies_for

    def proxy_for(own: pd.Series, seasoned: pd.DataFrame) -> str:  # pandas, pair by pair
        common = seasoned[own.notna()].notna().sum()
        corr = seasoned.corrwith(own)
        eligible = corr[(common >= PROXY_MIN_OBS) & np.isfinite(corr)]
        return str(eligible.idxmax()) if len(eligible) else str(seasoned.columns[0])

    rng = np.random.default_rng(11)
    base = rng.standard_normal((400, 4))
    seasoned = pd.DataFrame(base, columns=["S0", "S1", "S2", "S3"])
    seasoned.iloc[:50, 2] = np.nan  # a seasoned asset listed later
    young = {}
    for k in range(12):
        mix = rng.dirichlet(np.ones(4))
        col = base @ mix + rng.normal(0, 0.8, 400)
        col[: int(rng.integers(100, 390))] = np.nan  # listed at different dates
        young[f"Y{k}"] = col
    young["Y_short"] = np.r_[np.full(385, np.nan), rng.standard_normal(15)]  # < 30 common
    frame = pd.DataFrame(young)
    got = proxies_for(frame, seasoned)
    assert got == {a: proxy_for(frame[a], seasoned) for a in frame.columns}
    assert got["Y_short"] == "S0"

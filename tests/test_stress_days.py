"""Market-wide stress days found by rule (``pipelines.policy_eval.episodes.detect_stress_days``)
and their report beside the configured episodes: known answers on hand-built losses, the
point-in-time threshold, the warnings of the run, and the rule on real hourly candles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from features.losses import worst_loss_features
from pipelines.policy_eval.episodes import STRESS_DAY_COLUMNS, detect_stress_days, on_days
from pipelines.policy_eval.pipeline import stress_day_lines, stress_days_table
from tests.paths import margin_path

RULE = {"quantile": 0.99, "window_days": 1095, "min_history": 250, "min_share": 0.5,
        "min_assets": 3}


def _ramp(days: int = 250, assets: tuple[str, ...] = ("A", "B", "C", "D")) -> pd.DataFrame:
    """Every asset lost i/1000 on day i, then a last day to set: the only day with
    ``min_history`` (250) losses before it, against the 99% quantile of days 0..249, 0.24651
    (linear interpolation at position 0.99 × 249 = 246.51)."""
    index = pd.date_range("2020-01-01", periods=days + 1)
    values = np.tile((np.arange(days + 1) / 1000.0)[:, None], (1, len(assets)))
    return pd.DataFrame(values, index=index, columns=list(assets))


def test_a_day_is_a_stress_day_when_enough_assets_pass_their_own_trailing_quantile():
    losses = _ramp()
    last = losses.index[-1]
    losses.loc[last] = [0.2466, 0.2465, 0.4, 0.3]  # A just beyond 0.24651, B just below it
    days = detect_stress_days(losses, **RULE)
    assert list(days.columns) == STRESS_DAY_COLUMNS
    (row,) = days.itertuples()
    assert row.loss_day == last and row.assets == 4 and row.beyond == 3
    assert row.share == pytest.approx(0.75) and row.beyond_assets == "A,C,D"
    assert row.worst_asset == "C" and row.worst_loss == pytest.approx(0.4)
    assert row.median_loss == pytest.approx(np.median([0.2466, 0.2465, 0.4, 0.3]))
    # two of four: half the assets, but fewer than min_assets
    losses.loc[last] = [0.5, 0.5, 0.1, 0.1]
    none = detect_stress_days(losses, **RULE)
    assert none.empty and none["loss_day"].dtype == "datetime64[ns]"  # .dt still works
    # three of seven: at least min_assets, but under half of the assets
    wide = _ramp(assets=tuple("ABCDEFG"))
    wide.loc[wide.index[-1]] = [0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1]
    assert detect_stress_days(wide, **RULE).empty
    assert len(detect_stress_days(wide, **{**RULE, "min_share": 3 / 7})) == 1


def test_an_asset_without_history_or_without_a_loss_that_day_is_not_judged():
    losses = _ramp()
    last = losses.index[-1]
    losses.loc[last] = [0.5, 0.5, 0.5, np.nan]  # D has no loss that day
    losses.loc[losses.index[:100], "C"] = np.nan  # C: 150 losses before, under min_history
    pairs = {**RULE, "min_assets": 2}
    (row,) = detect_stress_days(losses, **pairs).itertuples()
    assert row.assets == 2 and row.beyond == 2 and row.beyond_assets == "A,B"
    assert detect_stress_days(losses, **RULE).empty  # two assets judged: under min_assets
    shorter = detect_stress_days(losses, **{**RULE, "min_history": 120}).set_index("loss_day")
    assert shorter.loc[last, "assets"] == 3 and shorter.loc[last, "beyond_assets"] == "A,B,C"


def test_a_day_is_judged_on_earlier_days_only_and_later_data_never_changes_it():
    rng = np.random.default_rng(5)
    index = pd.date_range("2019-01-01", periods=900)
    losses = pd.DataFrame(np.abs(rng.normal(0, 0.03, (900, 5))), index=index,
                          columns=list("ABCDE"))
    crash = index[600]
    losses.loc[crash] = 0.4
    days = detect_stress_days(losses, **RULE)
    assert crash in set(days["loss_day"])
    # (that a day's own loss stays out of its threshold is the known answer of the first
    # test: 0.2466 beyond 0.24651 only because the window ends the day before)
    later = losses.copy()
    later.loc[index[601:]] = later.loc[index[601:]] * 10  # a far more volatile future
    again = detect_stress_days(later, **RULE)
    upto = lambda d: d[d["loss_day"] <= crash].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(upto(again), upto(days))
    truncated = detect_stress_days(losses.loc[:crash], **RULE)
    pd.testing.assert_frame_equal(truncated, upto(days))


def test_unsorted_days_are_refused():
    losses = _ramp()
    with pytest.raises(ValueError, match="sorted, unique days"):
        detect_stress_days(losses.iloc[::-1], **RULE)


def _panel(losses: pd.DataFrame) -> pd.DataFrame:
    """A feature panel with only the covered loss columns (log losses of the fractions)."""
    long = -np.log1p(-losses)
    frame = long.stack().rename("worst_loss_long").to_frame()
    frame.index = frame.index.set_names(["date", "asset"])
    frame = frame.swaplevel().sort_index()
    return frame.assign(worst_loss_short=0.0)


def test_the_table_names_the_episode_period_and_each_policys_outcome_that_day():
    """Three crashes on hand-built losses: one in the selection period on a listed episode
    day, one in the evaluation period on no listed day (a warning), one before either period
    (not reported); each policy's breaches and bad debt that day come from its path."""
    rng = np.random.default_rng(11)
    index = pd.date_range("2020-01-01", "2024-12-31")
    losses = pd.DataFrame(np.abs(rng.normal(0, 0.02, (len(index), 4))), index=index,
                          columns=list("ABCD"))
    listed, unlisted, early = (pd.Timestamp(d) for d in ("2022-11-09", "2024-03-05",
                                                           "2020-11-02"))
    for day in (listed, unlisted, early):
        losses.loc[day] = 0.3
    cfg = Config().with_overrides({"evaluation.selection_start": "2021-01-01",
                                   "evaluation.selection_end": "2023-06-30",
                                   "evaluation.evaluation_start": "2023-07-01"})
    dates = pd.date_range("2021-01-01", "2024-12-30")
    path = margin_path(dates, 0.2, 3, assets=("A", "B", "C", "D"))
    path = path.assign(loss_next=-np.log1p(-losses.shift(-1).reindex(dates).to_numpy()
                                           .T.ravel()))
    from pipelines.policy_eval.backtest import with_outcomes

    path = with_outcomes(path)
    table = stress_days_table(_panel(losses), {"p": path}, {"frozen": "p", "gone": "absent"},
                              cfg)
    assert table["loss_day"].tolist() == [listed, unlisted]
    assert table["period"].tolist() == ["selection", "evaluation"]
    assert table["episode"].tolist() == ["2022-11 FTX", ""]
    assert table["frozen_breached"].tolist() == [4, 4]  # a 30% loss under a 20% margin
    assert table["frozen_bad_debt"].tolist() == pytest.approx([4 * 0.1 / 1.05] * 2)
    assert "gone_breached" not in table  # a role whose path was not replayed
    (line,) = stress_day_lines(table, cfg)
    assert line.startswith("loss day 2024-03-05: 4 of 4 assets lost more than their own "
                           "trailing 99.0% quantile")
    assert "frozen policy: 4 assets breached, bad debt at LT 0.3810" in line
    assert "add it to evaluation.episodes" in line
    off = cfg.with_overrides({"evaluation.stress_days.enabled": False})
    assert stress_days_table(_panel(losses), {"p": path}, {"frozen": "p"}, off).empty
    assert stress_day_lines(pd.DataFrame(), off) == []


def test_on_days_counts_a_day_without_rows_as_nothing_lost():
    dates = pd.date_range("2022-01-01", periods=10)
    path = margin_path(dates, 0.01, 1, assets=("A", "B"))
    out = on_days(path, pd.Series([dates[3] + pd.Timedelta(days=1), pd.Timestamp("2030-01-01")]))
    assert out.loc[0, "judged"] == 2 and out.loc[1].tolist() == [0, 0, 0.0]
    row = path[path["date"] == dates[3]]
    assert out.loc[0, "breached"] == int(row["breach"].sum())
    assert out.loc[0, "bad_debt_lt"] == pytest.approx(row["bad_debt_lt"].sum())


def test_the_rule_finds_the_luna_crash_in_real_hourly_candles(embedded_market):
    """Five assets' real hourly candles, 2019-2022: 2022-05-11 (LUNA/UST) is a stress day
    (at least three of five beyond their own trailing 99% quantile) and an ordinary day of
    that spring is not."""
    cfg = Config().features
    frames = {}
    for asset in ("BTC", "ETH", "BNB", "LINK", "LTC"):
        daily = embedded_market.daily[asset].loc["2019-01-01":"2022-06-30"]
        hourly = embedded_market.hourly[asset].loc["2019-01-01":"2022-06-30 23:00"]
        loss = worst_loss_features(daily, hourly, cfg)["worst_loss_long"]
        frames[asset] = 1.0 - np.exp(-loss.clip(lower=0.0))
    days = detect_stress_days(pd.DataFrame(frames).sort_index(), **RULE)
    found = set(days["loss_day"].dt.strftime("%Y-%m-%d"))
    assert "2022-05-11" in found and "2022-04-20" not in found
    luna = days.set_index("loss_day").loc["2022-05-11"]
    assert luna["assets"] == 5 and luna["beyond"] >= 3


def test_the_report_lists_the_days_and_says_how_many_no_episode_lists(tmp_path):
    from pipelines.report_md import stress_days_section

    assert stress_days_section(tmp_path) == ""  # a run that did not write the table
    (tmp_path / "policy_stress_days.csv").write_text("\n")  # the rule disabled: no columns
    assert stress_days_section(tmp_path) == ""
    pd.DataFrame(columns=["loss_day", "period", "episode", *STRESS_DAY_COLUMNS[1:]]).to_csv(
        tmp_path / "policy_stress_days.csv", index=False)
    assert "_None: no day of either period met the rule._" in stress_days_section(tmp_path)
    pd.DataFrame({"loss_day": ["2022-05-11", "2024-03-05"], "period": ["selection",
                                                                       "evaluation"],
                  "episode": ["2022-05 LUNA/UST", np.nan], "assets": [12, 12],
                  "beyond": [11, 9]}).to_csv(tmp_path / "policy_stress_days.csv", index=False)
    text = stress_days_section(tmp_path)
    assert "2 days, 1 not listed." in text
    assert "| 2024-03-05 | evaluation |                  |       12 |        9 |" in text


def test_a_day_the_policy_did_not_replay_reads_as_unknown_and_the_warnings_are_capped():
    cfg = Config().with_overrides({"evaluation.evaluation_end": "2030-12-31"})
    days = pd.DataFrame({
        "loss_day": pd.date_range("2024-01-01", periods=13), "period": "evaluation",
        "episode": [""] * 12 + ["2024 listed"], "assets": 12, "beyond": 9, "share": 0.75,
        "median_loss": 0.1, "worst_asset": "AAA", "worst_loss": 0.3,
        "beyond_assets": "AAA", "frozen_breached": [np.nan] + [2.0] * 12,
        "frozen_bad_debt": [np.nan] + [0.01] * 12})
    lines = stress_day_lines(days, cfg)
    assert len(lines) == 11 and lines[-1] == ("... and 2 more such days "
                                              "(outputs/backtest/policy_stress_days.csv)")
    assert "(the frozen policy has no replayed row that day)" in lines[0]
    assert "(the frozen policy: 2 assets breached, bad debt at LT 0.0100)" in lines[1]
    assert len(stress_day_lines(days, cfg, most=20)) == 12  # the listed day is not warned
    # a day inside the periods on which the path has no row: NaN, not 0 breached
    dates = pd.date_range("2023-07-01", "2023-12-31")
    path = margin_path(dates, 0.2, 1, assets=("A", "B", "C"))
    index = pd.date_range("2020-01-01", "2024-06-30")
    losses = pd.DataFrame(0.01 + 0.01 * np.random.default_rng(2).random((len(index), 3)),
                          index=index, columns=list("ABC"))
    losses.loc["2024-03-05"] = 0.3  # after the path's last row
    table = stress_days_table(_panel(losses), {"p": path}, {"frozen": "p"}, cfg)
    row = table.set_index("loss_day").loc["2024-03-05"]
    assert np.isnan(row["frozen_breached"]) and np.isnan(row["frozen_bad_debt"])


def test_the_stress_test_replays_the_found_days_no_episode_covers(embedded_market, caplog):
    """Five assets' real candles to 2022-11-30: the days found by the rule become one-day
    historical scenarios unless a configured stress episode covers them, only up to the
    as-of, and an asset whose losses cannot be computed is left out, not fatal."""
    import datetime as dt
    from types import SimpleNamespace

    from pipelines.stress.job import found_episodes

    as_of = dt.date(2022, 11, 30)
    assets = ("BTC", "ETH", "BNB", "LINK", "LTC")
    data = SimpleNamespace(
        daily={a: embedded_market.daily[a].loc[:"2022-11-30"] for a in assets},
        hourly={a: embedded_market.hourly[a].loc[:"2022-11-30 23:00"] for a in assets})
    bare = Config().with_overrides({"stress.episodes": []})
    found, skipped = found_episodes(bare, data, as_of)
    names = [e.name for e in found]
    assert skipped == [] and {"found_2020-03-12", "found_2021-05-19", "found_2022-05-11"} \
        <= set(names)
    assert all(e.start == e.end <= as_of for e in found)
    # the default list covers the COVID crash, the mining ban and LUNA: not replayed twice
    listed = [e.name for e in found_episodes(Config(), data, as_of)[0]]
    assert "found_2022-05-11" not in listed and "found_2020-03-12" not in listed
    assert set(listed) < set(names) and listed
    # before the crash happened it is not known
    early, _ = found_episodes(bare, data, dt.date(2022, 5, 10))
    assert "found_2022-05-11" not in [e.name for e in early]
    # on its day, the listed LUNA episode (to 2022-05-12) is not replayed yet: the found
    # day is, so the crash is stressed either way
    during = [e.name for e in found_episodes(Config(), data, dt.date(2022, 5, 11))[0]]
    assert "found_2022-05-11" in during
    # a listed episode already named like a found day keeps its name to itself
    named = bare.with_overrides({"stress.episodes": [
        {"name": "found_2022-05-11", "start": "2022-01-03", "end": "2022-01-03"}]})
    assert "found_2022-05-11" not in [e.name for e in found_episodes(named, data, as_of)[0]]
    # an asset whose candles lack a column is left out of the rule (four assets remain)
    broken = SimpleNamespace(daily={**data.daily, "LTC": data.daily["LTC"].drop(
        columns="close")}, hourly=data.hourly)
    with caplog.at_level("WARNING", logger="pipelines.stress.job"):
        rest, skipped = found_episodes(bare, broken, as_of)
    assert skipped == [] and "LTC left out of the stress-day rule" in caplog.text
    assert "found_2022-05-11" in [e.name for e in rest]  # the four others still judge
    off = bare.with_overrides({"stress.found_days": False})
    assert found_episodes(off, data, as_of) == ([], [])
    no_rule = bare.with_overrides({"evaluation.stress_days.enabled": False})
    assert found_episodes(no_rule, data, as_of) == ([], [])


def test_the_stress_job_reads_the_covered_loss_the_panel_holds_even_across_a_daily_gap(
        tmp_path):
    """A daily candle removed from a real file (the loader keeps the gap): the stress job's
    loss of each day equals the feature panel's ``worst_loss_long`` (the day after the gap
    included: measured on the complete calendar, not from the close two days back), for an
    hourly asset and for the range proxy (AAVE has no hourly file)."""
    import datetime as dt
    import gzip

    from features.build import build_panel
    from features.loaders import load_market
    from pipelines.stress.job import covered_losses
    from serving.inputs import covered_loss
    from tests.conftest import write_slice

    root = write_slice(tmp_path / "data", ["BTC", "AAVE"], "2024-01-01", "2024-06-30")
    for asset in ("BTC", "AAVE"):
        path = root / "crypto" / "daily" / f"{asset}.csv.gz"
        frame = pd.read_csv(path, dtype={"timestamp": str})
        frame = frame[~frame["timestamp"].str.startswith("2024-01-18")]
        with gzip.open(path, "wt") as fh:
            frame.to_csv(fh, index=False)
    market = load_market(root)
    assert pd.Timestamp("2024-01-18") not in market.daily["AAVE"].index  # a gap, not filled
    for cfg in (Config(), Config().with_overrides({"policy.loss": "close_to_close"})):
        panel = build_panel(market, cfg.features)
        mine = covered_losses(cfg, market, dt.date(2024, 6, 30))
        for asset in ("BTC", "AAVE"):
            loss = covered_loss(panel.xs(asset, level="asset"), cfg.policy)[0]
            want = 1.0 - np.exp(-loss.clip(lower=0.0))
            pd.testing.assert_series_equal(mine[asset].reindex(want.index), want,
                                           check_names=False)
    # the proxy the day after the gap: from that day's own candle (a log loss of 0.0672),
    # not from the close two days back (0.1023, what the raw frame without its calendar gave)
    first = covered_losses(Config(), market, dt.date(2024, 6, 30))["AAVE"]
    assert first.loc["2024-01-19"] == pytest.approx(1.0 - np.exp(-0.0671847), abs=1e-6)


def test_a_rule_that_cannot_run_is_a_warning_not_a_failed_run():
    """A panel without the covered-loss column (a feature set the rule cannot read): the
    table is empty and the run's end says why, rather than the policy step failing."""
    panel = _panel(_ramp()).drop(columns="worst_loss_long")
    table = stress_days_table(panel, {}, {}, Config())
    assert table.empty
    (line,) = stress_day_lines(table, Config())
    assert line.startswith("market-wide stress days not looked for: KeyError")


def test_the_report_names_at_most_twelve_assets_a_day_and_says_how_many_more(tmp_path):
    from pipelines.report_md import shortened, stress_days_section

    names = ",".join(f"A{i:03d}" for i in range(40))
    assert shortened(names, 12) == ",".join(f"A{i:03d}" for i in range(12)) + " (+28 more)"
    assert shortened("BTC,ETH", 12) == "BTC,ETH" and shortened("", 12) == ""
    pd.DataFrame({"loss_day": ["2024-03-05"], "period": ["evaluation"], "episode": [""],
                  "assets": [40], "beyond": [40], "beyond_assets": [names]}).to_csv(
        tmp_path / "policy_stress_days.csv", index=False)
    text = stress_days_section(tmp_path)
    assert "A011 (+28 more)" in text and "A012" not in text

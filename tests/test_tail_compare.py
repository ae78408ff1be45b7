"""The tail comparison on hand-made forecasts: joins, pooling, choice by the selection period."""

import math

import numpy as np
import pandas as pd
import pytest

from models.backtest import NoForecastsError
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


def test_a_model_covering_few_asset_days_does_not_shrink_the_pooled_comparison():
    """CAViaR at a high level forecasts only the assets with a long history: kept in the pool
    it would cut every model to those assets (and change which classical model is best). A
    model below 95 % of the best-covered one's asset-days is listed with NaN instead."""
    panel = _panel(n=400, seed=5)
    full = pd.concat([_forecasts(panel, "evt_garch", 0.06, 0.08),
                      _forecasts(panel, "fhs_garch", 0.07, 0.09)])
    partial = _forecasts(panel, "caviar", 0.06, 0.08)
    partial = partial[partial["asset"] == "AAA"]  # half the asset-days
    s = tc.score(pd.concat([full, partial], ignore_index=True), panel)
    t = tc.fz0_table(s).set_index(["side", "model"])
    alone = tc.fz0_table(tc.score(full, panel)).set_index(["side", "model"])
    for model in ("evt_garch", "fhs_garch"):  # their support: both assets, every day
        assert t.loc[("long", model), "fz0"] == pytest.approx(alone.loc[("long", model), "fz0"])
        assert t.loc[("long", model), "asset_days"] == 800
    assert np.isnan(t.loc[("long", "caviar"), "fz0"])
    assert t.loc[("long", "caviar"), "coverage"] == pytest.approx(0.5)
    assert "caviar" not in tc.daily_fz0(s, "long", 0.99).columns
    assert tc.best_classical(s) == tc.best_classical(tc.score(full, panel))
    # one asset-day short of every one (a late refit failure): still pooled, on common rows
    nearly = pd.concat([full, _forecasts(panel, "caviar", 0.06, 0.08).iloc[2:]])
    assert "caviar" in tc.daily_fz0(tc.score(nearly, panel), "long", 0.99).columns


def test_a_period_holds_the_rows_whose_loss_happens_in_it():
    # the forecast made at the selection period's last cutoff is judged on the evaluation
    # period's first day: it belongs to the evaluation period, and that day's loss cannot
    # move a selection-period figure
    panel = _panel(n=30)
    s = tc.score(_forecasts(panel, "fhs_ewma", 0.06, 0.08), panel)
    sel = tc.period(s, "2023-01-01", "2023-01-10")
    evl = tc.period(s, "2023-01-11", None)
    assert sel["cutoff"].max() == pd.Timestamp("2023-01-09")
    assert evl["cutoff"].min() == pd.Timestamp("2023-01-10")
    assert len(sel) + len(evl) == len(s) and not set(sel.index) & set(evl.index)
    moved = panel.copy()
    moved.loc[("AAA", pd.Timestamp("2023-01-10")), "target_worst_loss_long"] = 0.9
    s2 = tc.score(_forecasts(moved, "fhs_ewma", 0.06, 0.08), moved)
    pd.testing.assert_frame_equal(tc.fz0_table(tc.period(s2, "2023-01-01", "2023-01-10")),
                                  tc.fz0_table(sel))
    assert not tc.fz0_table(tc.period(s2, "2023-01-11", None)).equals(tc.fz0_table(evl))


def test_best_classical_and_dm_prefer_the_true_tail():
    panel = _panel(n=1500, seed=1)
    # true 99% tail of 0.02·|t5|: VaR = 0.02·t5.ppf(0.995), far better than a halved one
    from scipy import stats
    q = stats.t.ppf(0.995, 5)
    es = 2 * stats.t.pdf(q, 5) / 0.01 * (5 + q**2) / 4  # E[|T| | |T| > q], above q
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


def test_a_day_without_a_var_is_left_out_of_every_backtest():
    """A missing VaR is not a day without a breach: the independence test (and the expected
    count) read the scored days only, as coverage and DQ do."""
    panel = _panel(n=500, seed=3)
    fc = _forecasts(panel, "mid", 0.03, 0.05)
    scores = tc.score(fc, panel)
    gaps = scores.copy()
    hole = (gaps["asset"] == "AAA") & gaps["cutoff"].between("2023-03-01", "2023-05-31")
    gaps.loc[hole, "var"] = np.nan
    with_gaps = tc.backtest_table(gaps).set_index(["side", "asset"])
    dropped = tc.backtest_table(scores[~hole]).set_index(["side", "asset"])
    for col in ("n", "breaches", "expected", "p_coverage", "p_independence", "p_dq"):
        assert with_gaps.loc[("long", "AAA"), col] == pytest.approx(
            dropped.loc[("long", "AAA"), col]), col
    assert with_gaps.loc[("long", "AAA"), "n"] < with_gaps.loc[("long", "BBB"), "n"]


def test_the_verdict_reads_the_size_it_is_given():
    panel = _panel(n=500, seed=3)
    # VaR 0.07: coverage p-values 0.03-0.74 and independence 0.48-0.80 across the 4 groups
    bt = {size: tc.backtest_table(tc.score(_forecasts(panel, "mid", 0.07, 0.09), panel),
                                  test_size=size) for size in (0.01, 0.5)}
    for size, table in bt.items():
        expected = (table["p_coverage"] >= size) & (table["p_independence"] >= size)
        assert (table["passes"] == expected).all()
    assert bt[0.01]["passes"].sum() > bt[0.5]["passes"].sum()


def test_a_statistic_undefined_on_a_young_asset_is_nan_there_and_listed():
    """An asset with 3 scored days (listed weeks before the as-of): the DQ regression has
    more regressors than rows. Before, that raised and ended the whole tail step."""
    panel = _panel(n=500, seed=2)
    young = panel.xs("BBB", level="asset").iloc[-3:]
    panel = pd.concat([panel.drop(index="BBB", level="asset"),
                       pd.concat({"NEW": young}, names=["asset", "date"])])
    s = tc.score(_forecasts(panel, "high", 0.3, 0.4), panel)
    failures: list[dict[str, str]] = []
    bt = tc.backtest_table(s, dq_lags=4, failures=failures).set_index(["side", "asset"])
    assert bt.loc[("long", "AAA"), "passes"] and np.isfinite(bt.loc[("long", "AAA"), "p_dq"])
    new = bt.loc[("long", "NEW")]
    assert new["n"] == 3 and math.isnan(new["p_dq"]) and np.isfinite(new["p_coverage"])
    dq = [f for f in failures if f["stage"] == "backtest dq"]
    assert {(f["side"], f["asset"]) for f in dq} == {("long", "NEW"), ("short", "NEW")}
    assert "needs more rows than regressors" in dq[0]["reason"]
    # the table's other statistics of NEW are its own rows' (3 rows, no breach at VaR 0.3)
    assert new["breaches"] == int((s[(s.side == "long") & (s.asset == "NEW")]["hit"]).sum())
    # no breach in 3 days is no evidence of coverage: NEW does not count as passing
    assert new["p_coverage"] >= tc.TEST_SIZE and not new["passes"]


def test_an_asset_passes_only_on_a_year_of_scored_days():
    """The same covering forecasts pass on 250 scored days and not on 249."""
    panel = _panel(n=tc.MIN_VERDICT_DAYS, seed=2)
    bt = tc.backtest_table(tc.score(_forecasts(panel, "high", 0.3, 0.4), panel))
    assert (bt["n"] == tc.MIN_VERDICT_DAYS).all() and bt["passes"].all()
    short = panel.groupby(level="asset").tail(tc.MIN_VERDICT_DAYS - 1)
    bt = tc.backtest_table(tc.score(_forecasts(short, "high", 0.3, 0.4), short))
    assert (bt["p_coverage"] >= tc.TEST_SIZE).all() and not bt["passes"].any()


def test_a_failing_tail_model_is_left_out_and_listed(monkeypatch: pytest.MonkeyPatch):
    from configs.schema import Config

    panel = _panel(n=400, seed=3)
    built: list[str] = []

    class Broken:
        alias = "caviar"

        def fit(self, panel: pd.DataFrame) -> "Broken":
            raise np.linalg.LinAlgError("singular design")

    def fake_walk(make, panel, start, end, refit_every, levels, min_train_days, hook=None,
                  refused=None):
        model = make()
        built.append(model.alias)
        model.fit(panel)
        return _forecasts(panel, "x", 0.3, 0.4).drop(columns="model")

    class Fine(Broken):
        def __init__(self, alias: str) -> None:
            self.alias = alias

        def fit(self, panel: pd.DataFrame) -> "Fine":
            return self

    monkeypatch.setattr(tc, "tail_walk_forward", fake_walk)
    monkeypatch.setattr(tc, "build_tail_forecaster",
                        lambda a, t, u, m: Broken() if a == "caviar" else Fine(a))
    cfg = Config().with_overrides({"tail.enabled": ["fhs_ewma", "caviar", "qr_har"]})
    failures: list[dict[str, str]] = []
    fc = tc.walk_forward_all(panel, cfg, failures=failures)
    assert built == ["fhs_ewma", "caviar", "qr_har"]
    assert sorted(fc["model"].unique()) == ["fhs_ewma", "qr_har"]
    assert failures == [{"stage": "walk-forward", "model": "caviar", "side": "", "asset": "",
                         "reason": "LinAlgError: singular design", "days": None}]
    with pytest.raises(np.linalg.LinAlgError):  # without a failures list: the error stands
        tc.walk_forward_all(panel, cfg)
    monkeypatch.setattr(tc, "build_tail_forecaster", lambda a, t, u, m: Broken())
    with pytest.raises(NoForecastsError, match="no tail model produced a forecast: fhs_ewma"):
        tc.walk_forward_all(panel, cfg, failures=[])
    # no model fails, but no asset is ever old enough: said, with each asset's first day
    monkeypatch.setattr(tc, "build_tail_forecaster", lambda a, t, u, m: Fine(a))
    monkeypatch.setattr(tc, "tail_walk_forward", lambda *a, **k: pd.DataFrame(
        columns=["asset", "cutoff", "side", "level", "var", "es"]))
    with pytest.raises(NoForecastsError, match=r"no asset has tail\.min_train_days \(365\) "
                       r"days.*First day of each asset: AAA 2023-01-01, BBB 2023-01-01"):
        tc.walk_forward_all(panel, cfg, failures=[])


def test_a_refit_failing_after_the_selection_period_keeps_the_forecasts_before_it(
        monkeypatch: pytest.MonkeyPatch):
    """A model whose refit raises in the evaluation period keeps the forecasts of its
    earlier refits (the choice is made as if nobody knew) and is listed; one failing in the
    selection period is left out whole, as before."""
    from configs.schema import Config
    from models.tail.backtest import TailRefitError

    panel = _panel(n=400, seed=3)
    cfg = Config().with_overrides({"tail.enabled": ["caviar"],
                                   "evaluation.selection_start": "2023-01-01",
                                   "evaluation.selection_end": "2023-06-30",
                                   "evaluation.evaluation_start": "2023-07-01"})
    before = _forecasts(panel, "x", 0.3, 0.4).drop(columns="model")
    before = before[before["cutoff"] < "2023-10-01"]

    def failing_at(day: str):
        def walk(make, panel, start, end, refit_every, levels, min_train_days, hook=None,
                 refused=None):
            raise TailRefitError(pd.Timestamp(day), ValueError("singular"), before.copy())
        return walk

    monkeypatch.setattr(tc, "build_tail_forecaster", lambda a, t, u, m: None)
    monkeypatch.setattr(tc, "tail_walk_forward", failing_at("2023-10-01"))
    failures: list[dict] = []
    fc = tc.walk_forward_all(panel, cfg, failures=failures)
    assert len(fc) == len(before) and set(fc["model"]) == {"caviar"}
    assert failures[0]["reason"] == ("TailRefitError: refit of 2023-10-01: ValueError: "
                                     "singular; its forecasts before that refit kept")
    monkeypatch.setattr(tc, "tail_walk_forward", failing_at("2023-04-01"))
    with pytest.raises(NoForecastsError, match="caviar: TailRefitError: refit of 2023-04-01"):
        tc.walk_forward_all(panel, cfg, failures=[])


def test_the_tail_walk_forward_hands_back_the_refits_before_a_failing_one():
    from configs.schema import TailConfig
    from models.tail.backtest import TailRefitError, tail_walk_forward
    from models.tail.classical import HsTail
    from tests.tail_panel import tail_panel

    panel = tail_panel(("AAA", "BBB"), n_days=700, seed=4)
    start = panel.index.levels[1][400]
    fits: list[pd.Timestamp] = []

    class FailsLate(HsTail):
        def fit(self, p):
            fits.append(p.index.get_level_values("date").max())
            if len(fits) == 3:
                raise ValueError("third refit")
            return super().fit(p)

    with pytest.raises(TailRefitError) as err:
        tail_walk_forward(lambda: FailsLate(TailConfig().hs, "hs"), panel, start, None, 91,
                          [0.99], 300)
    assert err.value.fit_end == fits[2]
    done = err.value.done
    assert len(done) and done["cutoff"].max() < fits[2]
    assert set(done["fitted_through"]) == set(fits[:2])


def test_a_model_forecasting_outside_fz0s_domain_is_not_scored_and_listed():
    good = _forecasts(_panel(n=30), "good", 0.3, 0.4)
    bad = _forecasts(_panel(n=30), "bad", 0.3, 0.4)
    bad.loc[5, "es"] = 0.2  # ES below VaR on one row
    failures: list[dict] = []
    kept = tc.in_fz0_domain(pd.concat([good, bad], ignore_index=True), failures)
    assert set(kept["model"]) == {"good"} and len(kept) == len(good)
    assert len(failures) == 1 and failures[0]["model"] == "bad"
    assert failures[0]["reason"].startswith("1 forecasts outside FZ0's domain (0 <= VaR <= ES")
    assert tc.in_fz0_domain(good, []) is good


def test_assets_a_tail_model_declines_to_fit_are_listed_once_per_side():
    """A refit that declines an asset and side (EVT's degenerate GPD, ``refused``) hands the
    refusal up from the walk-forward, and the tail step lists each asset and side once, with
    the first refit and how many declined it."""
    from configs.schema import TailConfig
    from models.tail.backtest import tail_walk_forward
    from models.tail.classical import HsTail
    from pipelines.tail_step import TailStep, failure_lines
    from tests.conftest import MARKET
    from tests.tail_panel import tail_panel

    class Declining(HsTail):
        def fit(self, p):
            self.refused = {"long": {"PEG": "3 excesses over the threshold 0.01: need 20"},
                            "short": {}}
            return super().fit(p)

    panel = tail_panel(("AAA", "PEG"), n_days=700, seed=2)
    declined: list[dict] = []
    tail_walk_forward(lambda: Declining(TailConfig().hs, "hs"), panel,
                      panel.index.levels[1][400], None, 91, [0.99], 300, refused=declined)
    refits = sorted({d["fit_end"] for d in declined})
    assert len(refits) == 4 and {(d["asset"], d["side"]) for d in declined} == {("PEG", "long")}
    rows = tc.refused_rows("evt_garch", declined)
    assert rows == [tc.failure("fit", "evt_garch", (
        f"declined at 4 of its refits from {refits[0]:%F}: 3 excesses over the threshold "
        "0.01: need 20"), "long", "PEG")]
    step = TailStep(pd.DataFrame(),
                    {"failures": pd.DataFrame(rows, columns=tc.FAILURE_COLUMNS)}, MARKET)
    assert failure_lines(step) == [f"tail model declined: evt_garch PEG long: {rows[0]['reason']}"]
    assert tc.refused_rows("evt_garch", []) == []


def test_a_model_left_out_of_the_pool_is_said_and_the_year_blocks_share_one_pool():
    """The benchmark below the coverage share: no DM against it, a failures row saying why,
    and the MCS names what it left out; each year block compares the whole period's pool
    (a model in it that misses part of one block is not dropped there)."""
    panel = _panel(n=800, seed=7)
    evt = _forecasts(panel, "evt_garch", 0.06, 0.08)
    thin = evt[~((evt["asset"] == "BBB") & (evt["cutoff"] < panel.index.levels[1][100]))]
    s = tc.score(pd.concat([_forecasts(panel, "tail_nn", 0.06, 0.09),
                            _forecasts(panel, "fhs_garch", 0.07, 0.09), thin],
                           ignore_index=True), panel)
    failures: list[dict] = []
    assert tc.dm_table(s, ["evt_garch"], failures=failures).empty  # 93.75 % < 95 %
    assert failures == []  # said once, by left_out, as a note
    left: list[dict] = []
    assert tc.left_out(s, "long", 0.99, left) == ["evt_garch"]
    assert left == [tc.failure(tc.POOLED_STAGE, "evt_garch", (
        "at 0.99 it forecasts 93.8% of the asset-days, the best-covered model 100.0% (under "
        "95% of it): left out of the pooled FZ0, DM and MCS there"), "long")]
    from pipelines.tail_step import TailStep, failure_lines, not_judged_lines
    from tests.conftest import MARKET

    step = TailStep(pd.DataFrame(),
                    {"failures": pd.DataFrame(left, columns=tc.FAILURE_COLUMNS)}, MARKET)
    assert failure_lines(step) == []  # an intended exclusion: a note, the exit unchanged
    assert not_judged_lines(step) == [f"not pooled: evt_garch long: {left[0]['reason']}"]
    # 60 of 800 days missing: in the whole-period pool (96.25 %); block one alone would drop it
    few = evt[~((evt["asset"] == "BBB") & (evt["cutoff"] < panel.index.levels[1][60]))]
    s2 = tc.score(pd.concat([_forecasts(panel, "tail_nn", 0.03, 0.05), few],
                            ignore_index=True), panel)
    years = tc.fz0_by_year(s2, "evt_garch", panel.index.levels[1][0])
    first = years[(years["side"] == "long") & (years["start"] == years["start"].min())]
    assert set(first["model"]) == {"tail_nn", "evt_garch"}
    assert np.isfinite(first.set_index("model").at["tail_nn", "p_better"])


def test_a_forecast_of_no_loss_is_unscored_not_a_failed_backtest():
    """A peg forecast at VaR = ES = 0 on some days: no FZ0 there and no ES test rows, so no
    'statistic undefined' line for it; the model stays in the scoring."""
    panel = _panel(n=400, seed=9)
    f = _forecasts(panel, "hs", 0.06, 0.08)
    zero = (f["asset"] == "BBB") & (f["cutoff"] < panel.index.levels[1][30])
    f.loc[zero, ["var", "es"]] = 0.0
    failures: list[dict] = []
    kept = tc.in_fz0_domain(f, failures)
    assert failures == [] and len(kept) == len(f)
    s = tc.score(kept, panel)
    assert s.loc[s["cutoff"].isin(f.loc[zero, "cutoff"]) & (s["asset"] == "BBB"),
                 "fz0"].isna().all()
    bt = tc.backtest_table(s, failures=failures)
    assert failures == [] and len(bt) == 4


def test_a_short_period_mcs_is_not_judged():
    from pipelines.tail_step import TailStep, failure_lines, not_judged_lines
    from tests.conftest import MARKET

    panel = _panel(n=5, seed=1)
    s = tc.score(pd.concat([_forecasts(panel, "a", 0.06, 0.09),
                            _forecasts(panel, "b", 0.07, 0.09)]), panel)
    failures: list[dict] = []
    assert tc.mcs_frame(s, failures=failures).empty
    assert failures[0]["stage"] == "mcs" and failures[0]["days"] == 5
    step = TailStep(pd.DataFrame(),
                    {"failures": pd.DataFrame(failures, columns=tc.FAILURE_COLUMNS)}, MARKET)
    assert failure_lines(step) == [] and len(not_judged_lines(step)) == 1


def test_the_mcs_says_on_how_many_common_days_it_compared():
    panel = _panel(n=120, seed=4)
    b = _forecasts(panel, "b", 0.07, 0.09)
    late = b["cutoff"] >= panel.index.levels[1][116]  # b lacks the last 4 days: still pooled
    s = tc.score(pd.concat([_forecasts(panel, "a", 0.06, 0.09), b[~late]]), panel)
    days = s[(s["model"] == "a") & (s["side"] == "long")].dropna(subset=["fz0"])["cutoff"]
    frame = tc.mcs_frame(s, reps=100)
    assert set(frame.index) == {"a", "b"}
    assert frame["days"].eq(days[days < panel.index.levels[1][116]].nunique()).all()
    assert frame["days"].iloc[0] < days.nunique()

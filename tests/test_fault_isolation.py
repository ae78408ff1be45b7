"""A forecaster or diagnostic that fails for one asset costs that asset, never the run."""

from __future__ import annotations

import datetime as dt
from typing import Any, Self

import numpy as np
import pandas as pd
import pytest

from configs.schema import FeaturesConfig, ModelsConfig, PlausibilityConfig
from models.backtest import (
    ForecastFailureError,
    backtest,
    plan,
    walk_forward,
    whole_failures,
)
from models.ewma import EwmaForecaster
from models.plausibility import implausibility, trailing_realized_variance
from models.registry import build_forecaster
from pipelines.evaluation.comparison import (
    diagnostic_failures,
    dm_table,
    mcs_table,
    mz_table,
    var_table,
)
from pipelines.evaluation.evaluate import scored
from pipelines.evaluation.stats import mincer_zarnowitz
from pipelines.run import EXIT_COMPLETED_WITH_FAILURES, RunResult, exit_status
from tests.simulate import simulate_panel

OOS = dt.date(2021, 6, 1)
H = [1, 7]


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return simulate_panel(("AAA", "BBB", "CCC"), n_days=700, seed=4)


def _run(make: Any, panel: pd.DataFrame, **kw: Any):
    return backtest(make, panel, OOS, 91, H, 300, **kw)


class _Pooled(EwmaForecaster):
    """EWMA declared pooled, with faults injected per asset (``fail_fit`` / ``blow_up``)."""

    fail_fit: tuple[str, ...] = ()
    blow_up: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__(alias="faulty")
        self.per_asset = False

    def fit(self, panel: pd.DataFrame) -> Self:
        if set(self.fail_fit) & set(panel.index.get_level_values("asset")):
            raise np.linalg.LinAlgError("Singular matrix")
        return super().fit(panel)

    def forecast(self, panel: pd.DataFrame, horizons: list[int],
                 cutoffs: pd.DatetimeIndex | None = None) -> pd.DataFrame:
        fc = super().forecast(panel, horizons, cutoffs)
        fc.loc[fc["asset"].isin(self.blow_up), "variance"] *= 1e20  # an EGARCH at 1e23
        return fc


def _faulty(fail_fit: tuple[str, ...] = (), blow_up: tuple[str, ...] = (),
            per_asset: bool = False) -> _Pooled:
    model = _Pooled()
    model.fail_fit, model.blow_up, model.per_asset = fail_fit, blow_up, per_asset
    return model


def test_per_asset_tasks_give_the_numbers_of_one_joint_fit(panel):
    for alias in ("garch11_t", "har_rv", "ewma94"):
        per_asset = _run(lambda a=alias: build_forecaster(a, ModelsConfig(), H), panel)

        def joint(a: str = alias) -> Any:
            model = build_forecaster(a, ModelsConfig(), H)
            model.per_asset = False  # one task per refit, all assets in it: the old loop
            return model

        together = _run(joint, panel)
        assert per_asset.failures.empty and together.failures.empty
        pd.testing.assert_frame_equal(per_asset.forecasts, together.forecasts, check_exact=True)
        assert set(per_asset.forecasts["asset"]) == {"AAA", "BBB", "CCC"}


def test_tasks_are_independent_of_the_order_a_mapper_runs_them(panel):
    seen: list[tuple[int, tuple[str, ...]]] = []

    def backwards(fn: Any, tasks: Any) -> list[Any]:  # what a cluster may do
        done = [fn(t) for t in reversed(list(tasks))]
        seen.extend((r.task.k, r.task.assets) for r in done)
        return done

    make = lambda: build_forecaster("ewma94", ModelsConfig(), H)  # noqa: E731
    tasks = plan(panel.drop(columns=[c for c in panel if c.startswith("target_")]), OOS, 91,
                 300, per_asset=True)
    assert len(tasks) == 3 * 3 and all(len(t.assets) == 1 for t in tasks)  # asset × refit
    out = _run(make, panel, mapper=backwards)
    assert len(seen) == len(tasks) and seen[0] == (tasks[-1].k, tasks[-1].assets)
    pd.testing.assert_frame_equal(out.forecasts, _run(make, panel).forecasts)


def test_a_per_asset_model_that_raises_on_one_asset_loses_only_that_asset(panel):
    healthy = _run(lambda: _faulty(per_asset=True), panel)
    out = _run(lambda: _faulty(fail_fit=("BBB",), per_asset=True), panel)
    assert set(out.forecasts["asset"]) == {"AAA", "CCC"}
    f = out.failures
    assert list(zip(f["asset"], f["horizon_days"], f["stage"], strict=True)) == [
        ("BBB", 1, "fit"), ("BBB", 7, "fit")]
    assert f["reason"].str.contains("LinAlgError: Singular matrix").all()
    assert f["reason"].str.startswith("refit 2021-06-01").all()
    keep = healthy.forecasts[healthy.forecasts["asset"] != "BBB"].reset_index(drop=True)
    pd.testing.assert_frame_equal(out.forecasts, keep)


def test_chunks_of_a_per_asset_model_give_the_numbers_of_one_task_per_asset(panel):
    features = panel.drop(columns=[c for c in panel if c.startswith("target_")])
    tasks = plan(features, OOS, 91, 300, per_asset=True, chunk_assets=2)
    assert [t.assets for t in tasks[:2]] == [("AAA", "BBB"), ("CCC",)]
    assert all(t.separable for t in tasks)
    for alias in ("garch11_t", "har_rv", "ewma94"):
        def make(a: str = alias) -> Any:
            return build_forecaster(a, ModelsConfig(), H)
        one = _run(make, panel)
        for size in (2, 50):
            chunked = _run(make, panel, chunk_assets=size)
            pd.testing.assert_frame_equal(chunked.forecasts, one.forecasts, check_exact=True)
            assert chunked.failures.empty


def test_a_chunk_with_one_failing_asset_is_redone_asset_by_asset(panel):
    healthy = _run(lambda: _faulty(per_asset=True), panel)
    one = _run(lambda: _faulty(fail_fit=("BBB",), per_asset=True), panel)
    out = _run(lambda: _faulty(fail_fit=("BBB",), per_asset=True), panel, chunk_assets=3)
    assert set(out.forecasts["asset"]) == {"AAA", "CCC"}
    pd.testing.assert_frame_equal(out.failures, one.failures)  # same triples, same reasons
    keep = healthy.forecasts[healthy.forecasts["asset"] != "BBB"].reset_index(drop=True)
    pd.testing.assert_frame_equal(out.forecasts, keep)
    every = _run(lambda: _faulty(fail_fit=("AAA", "BBB", "CCC"), per_asset=True), panel,
                 chunk_assets=3)
    assert every.forecasts.empty and set(every.failures["asset"]) == {"AAA", "BBB", "CCC"}
    assert (every.failures["stage"] == "fit").all()


def test_a_pooled_model_with_implausible_values_on_one_asset_loses_that_asset(panel):
    out = _run(lambda: _faulty(blow_up=("CCC",)), panel)
    assert set(out.forecasts["asset"]) == {"AAA", "BBB"}
    f = out.failures
    assert list(zip(f["asset"], f["horizon_days"], f["stage"], strict=True)) == [
        ("CCC", 1, "plausibility"), ("CCC", 7, "plausibility")]
    n_cutoffs = out.forecasts[(out.forecasts["asset"] == "AAA")
                              & (out.forecasts["horizon_days"] == 1)].shape[0]
    assert (f["rows"] == n_cutoffs).all()  # every CCC row was out of band, all are counted
    assert f["reason"].str.contains(r"band \[0.01, 50\]").all()


class _LateFault(EwmaForecaster):
    """Pooled EWMA that breaks late: CCC's forecasts from ``blow_from`` on are out of band,
    and a fit with BBB on rows up to ``fail_from`` or later raises."""

    def __init__(self, blow_from: str | None = None, fail_from: str | None = None) -> None:
        super().__init__(alias="late")
        self.per_asset = False
        self.blow_from, self.fail_from = blow_from, fail_from

    def fit(self, panel: pd.DataFrame) -> Self:
        last = panel.index.get_level_values("date").max()
        if (self.fail_from is not None and last >= pd.Timestamp(self.fail_from)
                and "BBB" in set(panel.index.get_level_values("asset"))):
            raise np.linalg.LinAlgError("Singular matrix")
        return super().fit(panel)

    def forecast(self, panel: pd.DataFrame, horizons: list[int],
                 cutoffs: pd.DatetimeIndex | None = None) -> pd.DataFrame:
        fc = super().forecast(panel, horizons, cutoffs)
        if self.blow_from is not None:
            late = fc["asset"].eq("CCC") & (fc["cutoff"] >= pd.Timestamp(self.blow_from))
            fc.loc[late, "variance"] *= 1e20
        return fc


def test_a_late_failure_withholds_the_forecasts_made_before_it(panel):
    """The failed triple leaves the forecasts; what it forecast before its first failure is
    kept apart (``withheld``, with the failure's date) for a choice made before that date."""
    healthy = _run(lambda: _LateFault(), panel).forecasts
    out = _run(lambda: _LateFault(blow_from="2021-09-15", fail_from="2021-08-01"), panel)
    assert set(out.forecasts["asset"]) == {"AAA"}
    w = out.withheld
    assert set(w["asset"]) == {"BBB", "CCC"} and set(w["horizon_days"]) == {1, 7}
    refits = sorted(healthy["fitted_through"].unique())
    failed_fit = min(r for r in refits if r >= pd.Timestamp("2021-08-01"))  # BBB's first
    bbb, ccc = w[w["asset"] == "BBB"], w[w["asset"] == "CCC"]
    assert (bbb["failed_from"] == failed_fit).all() and (bbb["cutoff"] < failed_fit).all()
    assert (ccc["failed_from"] == pd.Timestamp("2021-09-15")).all()
    assert ccc["cutoff"].max() == pd.Timestamp("2021-09-14")
    # BBB's withheld rows are the healthy run's, up to its failed refit
    before = healthy[(healthy["asset"] == "BBB") & (healthy["cutoff"] < failed_fit)]
    pd.testing.assert_frame_equal(bbb.drop(columns="failed_from").reset_index(drop=True),
                                  before.reset_index(drop=True))
    # nothing withheld where nothing failed
    assert _run(lambda: _LateFault(), panel).withheld.empty


def test_a_pooled_fit_broken_by_one_asset_loses_only_that_asset(panel):
    healthy = _run(lambda: _faulty(), panel)
    out = _run(lambda: _faulty(fail_fit=("BBB",)), panel)
    assert set(out.forecasts["asset"]) == {"AAA", "CCC"}
    f = out.failures
    assert list(zip(f["asset"], f["horizon_days"], f["stage"], strict=True)) == [
        ("BBB", 1, "fit"), ("BBB", 7, "fit")]
    assert f["reason"].str.contains("fails with this asset .LinAlgError: Singular matrix").all()
    keep = healthy.forecasts[healthy.forecasts["asset"] != "BBB"].reset_index(drop=True)
    pd.testing.assert_frame_equal(out.forecasts, keep)


def test_a_pooled_model_that_cannot_fit_loses_every_asset(panel):
    out = _run(lambda: _faulty(fail_fit=("AAA", "BBB")), panel)  # no asset alone is the cause
    assert out.forecasts.empty
    assert len(out.failures) == 3 * 2 and set(out.failures["stage"]) == {"fit"}
    assert out.failures["reason"].str.contains("LinAlgError: Singular matrix").all()
    with pytest.raises(ForecastFailureError, match="faulty AAA h=1: refit 2021-06-01"):
        walk_forward(lambda: _faulty(fail_fit=("AAA", "BBB")), panel, OOS, 91, H, 300)


class _Declining(EwmaForecaster):
    """EWMA that declines BBB at the fit whose window ends on ``decline_at`` (a degenerate
    fit by its own judgment): no error, simply no forecast for that refit's segment."""

    decline_at: pd.Timestamp | None = None

    def __init__(self) -> None:
        super().__init__(alias="declining")

    def fit(self, panel: pd.DataFrame) -> Self:
        self._end = panel.index.get_level_values("date").max()
        return super().fit(panel)

    def forecast(self, panel: pd.DataFrame, horizons: list[int],
                 cutoffs: pd.DatetimeIndex | None = None) -> pd.DataFrame:
        fc = super().forecast(panel, horizons, cutoffs)
        return fc[~((fc["asset"] == "BBB") & (self._end == self.decline_at))]


def test_a_refit_the_model_declines_is_said_and_keeps_the_other_forecasts(panel):
    """BBB forecast from the first refit, declined at the second: one ``declined`` row per
    horizon names the refit and its segment (the common support drops those days for every
    model of BBB, which nothing said); the triple keeps its other forecasts."""
    plain = _run(lambda: build_forecaster("ewma94", ModelsConfig(), H), panel)
    refits = sorted(plain.forecasts["fitted_through"].unique())
    model = _Declining()
    model.decline_at = pd.Timestamp(refits[1])
    wf = _run(lambda: model, panel)
    rows = wf.failures.set_index(["asset", "horizon_days"])
    assert set(rows.index) == {("BBB", 1), ("BBB", 7)} and set(rows["stage"]) == {"declined"}
    assert rows["reason"].str.startswith(f"refit {pd.Timestamp(refits[1]).date()}:").all()
    assert whole_failures(wf.failures).empty
    bbb = wf.forecasts[wf.forecasts["asset"] == "BBB"]
    assert pd.Timestamp(refits[1]) not in set(bbb["fitted_through"])
    assert len(bbb) == len(plain.forecasts[plain.forecasts["asset"] == "BBB"]) - len(
        plain.forecasts[(plain.forecasts["asset"] == "BBB")
                        & (plain.forecasts["fitted_through"] == refits[1])])
    # the asset's first refit declined (eligible, forecast from the second on): said too
    first = _Declining()
    first.decline_at = pd.Timestamp(refits[0])
    early = _run(lambda: first, panel).failures.set_index(["asset", "horizon_days"])
    assert set(early.index) == {("BBB", 1), ("BBB", 7)}
    assert set(early["stage"]) == {"declined"}
    assert early["reason"].str.startswith(f"refit {pd.Timestamp(refits[0]).date()}:").all()
    assert early["reason"].str.contains(
        f"forecast from the refit of {pd.Timestamp(refits[1]).date()}").all()
    # a model that never forecast an asset is no_forecast, not declined
    never = _Declining()
    never.decline_at = None
    never.forecast = lambda p, h, c=None: EwmaForecaster.forecast(  # type: ignore[method-assign]
        never, p, h, c).query("asset != 'BBB'")
    assert set(_run(lambda: never, panel).failures["stage"]) == {"no_forecast"}
    # nor is a segment in which the asset has no row (a feed gap over the whole quarter): the
    # rule itself returns nothing there (a row of another stage would hide one in the table)
    import models.backtest as bt

    dates = panel.index.get_level_values("date")
    gap = ((panel.index.get_level_values("asset") == "BBB")
           & (dates >= refits[1]) & (dates < refits[2]))
    said: list[list] = []
    real = bt._declined

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        said.append(real(*args, **kwargs))
        return said[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bt, "_declined", spy)
        _run(lambda: build_forecaster("ewma94", ModelsConfig(), H), panel[~gap])
    assert said == [[]]


def test_scoring_keeps_an_asset_that_one_model_failed_on_for_the_others(panel):
    make = lambda: build_forecaster("ewma94", ModelsConfig(), H)  # noqa: E731
    good = _run(make, panel).forecasts
    failed = good[good["asset"] != "BBB"]
    both = scored({"a": good, "b": failed}, panel)
    alone = scored({"a": good}, panel)
    assert set(both.loc[both["model"] == "a", "asset"]) == {"AAA", "BBB", "CCC"}
    assert set(both.loc[both["model"] == "b", "asset"]) == {"AAA", "CCC"}
    pd.testing.assert_frame_equal(both[both["model"] == "a"].reset_index(drop=True), alone)


def test_forecasts_after_a_data_gap_are_dropped_alone_not_the_model(panel):
    """A 25-day gap in BBB's data (an exchange outage) leaves the trailing window too few
    realized-variance days to check the forecasts after it: those are dropped, each alone;
    before, they failed the model on BBB for the whole backtest."""
    dates = panel.index.get_level_values("date")
    gap = (panel.index.get_level_values("asset") == "BBB") & (
        dates >= "2021-08-01") & (dates <= "2021-08-25")
    holed = panel[~gap]
    make = lambda: build_forecaster("ewma94", ModelsConfig(), H)  # noqa: E731
    out = _run(make, holed)
    unchecked = _run(make, holed, plausibility=PlausibilityConfig(enabled=False)).forecasts
    bounds = PlausibilityConfig()
    _, count = trailing_realized_variance(holed.xs("BBB", level="asset")["rv"],
                                          bounds.window_days, bounds.min_obs)
    blind = set(count.index[count < bounds.min_obs])
    fc = unchecked[~((unchecked["asset"] == "BBB") & unchecked["cutoff"].isin(blind))]
    pd.testing.assert_frame_equal(out.forecasts, fc.reset_index(drop=True))
    assert set(out.forecasts["asset"]) == {"AAA", "BBB", "CCC"}
    f = out.failures
    assert list(zip(f["asset"], f["horizon_days"], f["stage"], strict=True)) == [
        ("BBB", 1, "unverifiable"), ("BBB", 7, "unverifiable")]
    dropped = len(unchecked) - len(out.forecasts)
    assert dropped == 2 * f["rows"].iloc[0] and 0 < f["rows"].iloc[0] < 15
    assert f["reason"].str.contains("forecasts dropped .the others kept., first at "
                                    "2021-08-26: fewer than 15 realized-variance days").all()
    # a model also wrong after the gap fails whole, as before: its wrong rows are counted
    bad = _run(lambda: _faulty(blow_up=("BBB",), per_asset=True), holed).failures
    assert set(bad["stage"]) == {"plausibility"} and set(bad["asset"]) == {"BBB"}
    assert (bad["rows"] == len(unchecked[(unchecked["asset"] == "BBB")
                                         & (unchecked["horizon_days"] == 1)]) - len(blind
                                         & set(unchecked["cutoff"]))).all()


# ------------------------------------------------------------------------- plausibility


def test_implausibility_names_the_first_rule_broken():
    bounds = PlausibilityConfig()
    reasons = implausibility(
        [7e-3, np.nan, 0.0, 1e-8, 7e-3, 7e-3, 7e-3 * 60, 7e-3 / 120, 7e-3 * 49],
        7, [1e-3, 1e-3, 1e-3, 1e-3, np.nan, 0.0, 1e-3, 1e-3, 1e-3], bounds)
    assert reasons[0] == "" and reasons[-1] == ""  # in band, and just inside its top
    assert "not finite" in reasons[1] and "not positive" in reasons[2]
    assert "below the floor" in reasons[3]
    assert "fewer than 15 realized-variance days" in reasons[4]
    assert "flat-lined" in reasons[5]
    assert reasons[6].startswith("forecast is 60x") and reasons[7].startswith("forecast is 0.0083x")
    off = implausibility([1e-8, -1.0], 1, [1.0, 1.0], bounds.model_copy(update={"enabled": False}))
    assert off[0] == "" and "not positive" in off[1]  # off: only finite and positive


def test_implausibility_equals_the_rules_applied_row_by_row():
    from models.plausibility import _reason

    rng = np.random.default_rng(11)
    b = PlausibilityConfig()
    rv = np.exp(rng.normal(-7, 1, 4000))
    v = rv * 7 * np.exp(rng.normal(0, 2.5, 4000))  # many outside the band either side
    v[:8] = [np.nan, np.inf, -np.inf, 0.0, -1e-3, 1e-300, 7 * b.max_ratio, 7 * b.min_ratio]
    rv[6:10] = [1.0, 1.0, np.nan, 0.0]  # the band's edges themselves are plausible
    h = rng.choice([1, 7], 4000).astype(float)
    h[6:8] = 7.0
    for bounds in (b, b.model_copy(update={"enabled": False})):
        got = implausibility(v, h, rv, bounds)
        with np.errstate(all="ignore"):
            want = [_reason(v[i], np.sqrt(v[i] / h[i]) if v[i] > 0 else np.nan, rv[i],
                            v[i] / (h[i] * rv[i]), bounds) for i in range(len(v))]
        assert list(got) == want
    on = implausibility(v, h, rv, b)
    assert on[6] == on[7] == "" and all(on[:6]) and 0 < sum(map(bool, on)) < len(on) / 2


def test_trailing_realized_variance_uses_calendar_days_and_counts_a_gap():
    days = pd.date_range("2024-01-01", periods=60, freq="D")
    rv = pd.Series(np.r_[np.full(30, 1e-3), np.full(30, 4e-3)], index=days).drop(days[35:52])
    mean, count = trailing_realized_variance(rv, 30, 15)
    assert mean.loc["2024-01-30"] == pytest.approx(1e-3) and count.loc["2024-01-30"] == 30
    # 2024-02-29: the window 01-31..02-29 holds 01-31..02-04 and 02-22..02-29: 13 values
    assert count.loc["2024-02-29"] == 13 and np.isnan(mean.loc["2024-02-29"])
    mean10, _ = trailing_realized_variance(rv, 30, 10)
    assert mean10.loc["2024-02-29"] == pytest.approx(4e-3)  # never older days to fill it


# ------------------------------------------------------------------------- diagnostics


def test_singular_mincer_zarnowitz_design_is_nan_with_a_reason_not_an_error():
    rng = np.random.default_rng(0)
    realized = np.exp(rng.normal(-6, 1, 300))
    forecast = np.exp(rng.normal(-6, 0.5, 300))
    forecast[:5] = 1e23  # the EGARCH 7-day forecast that stopped the run
    r = mincer_zarnowitz(realized, forecast, maxlags=6)
    assert np.isnan(r.statistic) and np.isnan(r.slope) and np.isnan(r.r_squared)
    assert r.note.startswith("singular design")


def _scores(rng: np.random.Generator) -> pd.DataFrame:
    cutoffs = pd.date_range("2024-01-01", periods=200, freq="D")
    rows = []
    for model in ("garch11_t", "b"):
        for asset in ("AAA", "BBB"):
            v = np.exp(rng.normal(-6, 0.4, 200))
            if model == "b" and asset == "BBB":
                v[:5] = 1e23
            realized = v * rng.chisquare(3, 200) / 3
            rows.append(pd.DataFrame({"model": model, "asset": asset, "cutoff": cutoffs,
                                      "horizon_days": 1, "variance": v,
                                      "realized": realized}))
    out = pd.concat(rows, ignore_index=True)
    out["qlike"] = out["realized"] / out["variance"] - np.log(out["realized"] / out["variance"]) - 1
    return out


def test_diagnostics_that_cannot_be_computed_are_nan_with_a_reason():
    scores = _scores(np.random.default_rng(1))
    mz = mz_table(scores).set_index(["model", "asset"])
    assert mz.loc[("b", "BBB"), "mz_note"].startswith("singular design")
    assert np.isnan(mz.loc[("b", "BBB"), "mz_r2"])
    assert (mz.drop(("b", "BBB"))["mz_note"] == "").all()
    assert mz.drop(("b", "BBB"))["mz_r2"].notna().all()
    short = scores[scores["cutoff"] < "2024-01-06"]  # 5 rows: too few for DM at h=7, and MCS
    dm = dm_table(short.assign(horizon_days=7))
    assert dm["dm_stat"].isna().all() and dm["dm_note"].str.contains("ValueError").all()
    mcs = mcs_table(short)
    assert mcs["mcs_p"].isna().all() and mcs["mcs_note"].str.contains(">= 10 rows").all()
    compared = dm.merge(mcs, on=["asset", "horizon_days", "model"], how="outer")
    listed = diagnostic_failures(compared)
    assert set(listed["diagnostic"]) == {"diebold_mariano", "model_confidence_set"}


def test_dm_and_mcs_say_on_how_many_days_they_compared_models():
    """A model whose losses stop early is compared with the benchmark on its own days (DM
    pairs) and shortens the MCS's common support for every model: both counts are shown."""
    rng = np.random.default_rng(2)
    cutoffs = pd.date_range("2024-01-01", periods=200, freq="D")
    scores = pd.concat([pd.DataFrame({"model": m, "asset": "AAA", "cutoff": cutoffs,
                                      "horizon_days": 1,
                                      "qlike": rng.gamma(2.0, 0.5, 200) + 0.1 * k})
                        for k, m in enumerate(("a", "b", "c"))], ignore_index=True)
    scores.loc[(scores["model"] == "c") & (scores["cutoff"] >= cutoffs[150]), "qlike"] = np.nan
    dm = dm_table(scores, benchmark="a").set_index("model")
    assert dm.loc["b", "dm_pairs"] == 200 and dm.loc["c", "dm_pairs"] == 150
    assert dm["dm_note"].eq("").all()
    mcs = mcs_table(scores, reps=50).set_index("model")
    assert mcs["mcs_days"].eq(150).all() and mcs["mcs_note"].eq("").all()


def test_var_backtest_without_enough_history_is_nan_with_a_reason():
    panel = simulate_panel(("AAA",), n_days=120, seed=3)
    cutoffs = panel.index.get_level_values("date")[:50]
    fc = pd.DataFrame({"asset": "AAA", "cutoff": cutoffs, "horizon_days": 1,
                       "target_date": cutoffs + pd.Timedelta(days=1), "variance": 1e-3})
    var = var_table({"m": fc}, panel)
    assert var.loc[0, "var_pass"] is None and var.loc[0, "var_note"] != ""


# ------------------------------------------------------------------------- run summary


def _result_fields(**given: Any) -> dict[str, Any]:
    """The fields of a :class:`RunResult` with nothing in them, ``given`` replaced."""
    return dict(fingerprint="x", table=pd.DataFrame(), comparison=pd.DataFrame(), selected="m",
                selection_reason="", selection=pd.DataFrame(), policy_summary=pd.DataFrame(),
                stress=pd.DataFrame(), model_version="1", promoted=True, gate_reason="",
                failures={}, served=None) | given


def test_run_summary_lists_failures_and_sets_the_exit_code():
    base = _result_fields()
    clean = RunResult(**base)
    assert not clean.completed_with_failures and exit_status(clean) == 0
    assert clean.failure_lines() == []
    failed = pd.DataFrame([{"model": "egarch_t", "asset": "PUMP", "horizon_days": 7,
                            "stage": "plausibility", "reason": "3 implausible forecasts",
                            "rows": 3},
                           {"model": "garch11_t", "asset": "GAP", "horizon_days": 1,
                            "stage": "unverifiable", "reason": "2 forecasts dropped",
                            "rows": 2}])
    diag = pd.DataFrame([{"model": "b", "asset": "X", "horizon_days": 1,
                          "diagnostic": "mincer_zarnowitz", "reason": "singular design"}] * 25)
    result = RunResult(**{**base, "failures": {"crypto/daily/EMPTY.csv.gz": "no rows"}},
                       forecast_failures=failed, diagnostic_failures=diag)
    assert exit_status(result) == EXIT_COMPLETED_WITH_FAILURES == 4
    lines = result.failure_lines()
    assert lines[0] == ("forecast failed: egarch_t PUMP h=7d (plausibility): "
                        "3 implausible forecasts")
    assert lines[1] == ("forecasts dropped: garch11_t GAP h=1d (unverifiable): "
                        "2 forecasts dropped")
    assert sum(line.startswith("diagnostic undefined") for line in lines) == 20
    assert "... and 5 more" in lines[22] and lines[-1].startswith("skipped file crypto/daily")
    # with tail.in_run, what the tail step left out is listed too, and sets the exit code
    tail = RunResult(**base, tail_failures=["tail model failed: caviar: LinAlgError"])
    assert exit_status(tail) == 4 and tail.failure_lines() == tail.tail_failures
    # a step of the run that failed on its own (the stress after the serve) as well
    stress = RunResult(**base, step_failures=["stress of 2025-06-30 skipped: OSError: disk"])
    assert exit_status(stress) == 4 and stress.failure_lines() == stress.step_failures


def test_a_young_assets_undefined_statistics_are_not_judged_not_failures():
    """An asset scored on a few days (listed lately) leaves its MCS and VaR backtest
    undefined: one "not judged" line, exit 0. The same statistics undefined on an asset
    scored on enough days to judge are failures (exit 4)."""
    from features.build import build_panel
    from features.loaders import load_market
    from pipelines.evaluation.comparison import comparison
    from pipelines.evaluation.evaluate import loss_table
    from tests.conftest import MARKET

    market = load_market(MARKET, ["BTC", "SOL"], dt.date(2025, 6, 30))
    cfg_models = ModelsConfig()
    panel = build_panel(market, FeaturesConfig())
    panel = panel[panel.index.get_level_values("date") >= "2023-01-01"]
    forecasts = {m: backtest(lambda m=m: build_forecaster(m, cfg_models, [1, 7]), panel,
                             dt.date(2024, 1, 1), 120, [1, 7], 300).forecasts
                 for m in ("ewma94", "garch11_t")}  # garch11_t: the DM benchmark
    young = {m: f[(f["asset"] != "SOL") | (f["cutoff"] >= "2025-06-20")]
             for m, f in forecasts.items()}  # SOL: its last 10 cutoffs only
    scores = scored(young, panel)
    table = loss_table(scores)
    diag = diagnostic_failures(comparison(scores, table, young, panel))
    assert set(diag["asset"]) == {"SOL"}
    # DM needs 30 pairs at either horizon (DM_MIN_PAIRS), the MCS more than h=7's 4 days,
    # Mincer-Zarnowitz more pairs than twice its 12 HAC lags at h=7, the FHS VaR 100 losses
    assert set(diag["diagnostic"]) == {"diebold_mariano", "model_confidence_set",
                                       "mincer_zarnowitz", "var_backtest"}
    assert (diag["scored_days"] <= 10).all()
    base = _result_fields(table=table)
    result = RunResult(**base, diagnostic_failures=diag)
    assert exit_status(result) == 0 and result.failure_lines() == []
    assert result.not_judged_lines() == [
        f"not judged: SOL: scored on {int(diag['scored_days'].max())} days (< 250); "
        "8 diagnostics not computable yet (diebold_mariano, mincer_zarnowitz, "
        "model_confidence_set, var_backtest)"]
    judged = RunResult(**base, diagnostic_failures=diag.assign(scored_days=400))
    assert exit_status(judged) == EXIT_COMPLETED_WITH_FAILURES
    assert len(judged.failure_lines()) == 8 and judged.not_judged_lines() == []
    assert len(diag[diag["diagnostic"] == "diebold_mariano"]) == 2  # h = 1 and h = 7


def test_task_rows_of_one_asset_equal_the_boolean_filter_sorted_or_not():
    from models.backtest import _task_rows

    idx = pd.MultiIndex.from_product([["AAA", "BBB", "CCC"],
                                      pd.date_range("2024-01-01", periods=4)],
                                     names=["asset", "date"])
    frame = pd.DataFrame({"x": range(12)}, index=idx)
    for f in (frame, frame.iloc[::-1]):  # binary search when sorted, a scan when not
        want = f[f.index.get_level_values("asset").isin(("BBB",))]
        pd.testing.assert_frame_equal(_task_rows(f, ("BBB",)), want)
    pooled = _task_rows(frame, ("AAA", "CCC"))
    assert list(pooled["x"]) == [0, 1, 2, 3, 8, 9, 10, 11]


class _Counted(_Pooled):
    """:class:`_Pooled` counting its fit calls (class-wide: the walk-forward builds many)."""

    fits = 0

    def fit(self, panel: pd.DataFrame) -> Self:
        type(self).fits += 1
        return super().fit(panel)


@pytest.fixture(scope="module")
def wide() -> pd.DataFrame:
    """40 simulated assets: more than LEAVE_EACH_OUT_MAX, so the culprit is bisected."""
    return simulate_panel(tuple(f"A{i:02d}" for i in range(40)), n_days=500, seed=5)


def _counted(fail_fit: tuple[str, ...]) -> _Counted:
    model = _Counted()
    model.fail_fit = fail_fit
    return model


def test_a_pooled_fit_broken_by_one_of_many_assets_finds_it_in_few_fits(wide):
    """One bad asset late in the order: the same result as leaving each asset out in turn
    (that asset lost, the rest equal to a healthy run without it), in O(log A) fits per
    refit instead of one per asset before it."""
    from models.backtest import LEAVE_EACH_OUT_MAX

    assert len(wide.index.get_level_values("asset").unique()) > LEAVE_EACH_OUT_MAX
    oos = dt.date(2021, 1, 1)
    healthy = backtest(lambda: _faulty(), wide[wide.index.get_level_values("asset") != "A37"],
                       oos, 91, H, 300)
    _Counted.fits = 0
    out = backtest(lambda: _counted(("A37",)), wide, oos, 91, H, 300)
    refits = len(plan(wide, oos, 91, 300, False))
    assert set(out.failures["asset"]) == {"A37"} and set(out.failures["stage"]) == {"fit"}
    pd.testing.assert_frame_equal(out.forecasts, healthy.forecasts)
    # per refit: the failed fit, 2 probes on each of ~log2(40) levels, the fit without it
    assert _Counted.fits <= refits * (2 + 2 * 6) < refits * 38


def test_a_pooled_fit_that_fails_as_a_whole_gives_up_after_few_fits(wide):
    """A failure no single asset causes (two bad assets in different halves) costs two probe
    fits per refit, not 41, and loses every asset as before."""
    oos = dt.date(2021, 1, 1)
    _Counted.fits = 0
    out = backtest(lambda: _counted(("A03", "A33")), wide, oos, 91, H, 300)
    refits = len(plan(wide, oos, 91, 300, False))
    assert out.forecasts.empty and len(out.failures) == 40 * len(H)
    assert _Counted.fits == refits * 3

"""One contract, every registered tail forecaster (models/tail)."""

import json

import numpy as np
import pandas as pd
import pytest

from configs.schema import TailConfig
from models.tail.base import TAIL_COLUMNS
from models.tail.registry import (
    TAIL_REGISTRY,
    build_tail_forecaster,
    tail_forecaster_from_state,
)
from tests.tail_panel import tail_panel

LEVELS = [0.975, 0.99, 0.995]
FAST = TailConfig().model_copy(update={  # shrunk so every alias fits in a few seconds
    "tail_nn": TailConfig().tail_nn.model_copy(update={
        "max_epochs": 3, "hidden": 4, "weight_decays": [1e-3]}),
    # 600 training days: every level fitted (the default 10 leaves only 97.5 %)
    "caviar": TailConfig().caviar.model_copy(update={"min_exceedances": 2.0}),
})


# the registered aliases (``tail_nn`` with its default objective, scale_nll), and each
# configurable variant of one that changes its construction
VARIANTS = {alias: (alias, FAST) for alias in TAIL_REGISTRY} | {
    "tail_nn:fz0": ("tail_nn", FAST.model_copy(update={
        "tail_nn": FAST.tail_nn.model_copy(update={"objective": "fz0"})})),
}


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return tail_panel()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def fitted(request, panel):
    train = panel[panel.index.get_level_values("date") <= panel.index.levels[1][600]]
    alias, cfg = VARIANTS[request.param]
    return build_tail_forecaster(alias, cfg).fit(train)


def _cutoffs(panel, positions=(620, 700, 800, 899)):
    return pd.DatetimeIndex([panel.index.levels[1][i] for i in positions])


def test_columns_levels_and_sides(fitted, panel):
    cut = _cutoffs(panel)
    fc = fitted.forecast_tail(panel, LEVELS, cut)
    assert list(fc.columns) == TAIL_COLUMNS
    assert len(fc) == 2 * len(cut) * 2 * len(LEVELS)  # assets × cutoffs × sides × levels
    assert set(fc["side"]) == {"long", "short"} and sorted(set(fc["level"])) == LEVELS
    assert ((fc["target_date"] - fc["cutoff"]).dt.days == 1).all()
    assert np.isfinite(fc[["var", "es"]]).all().all() and (fc["var"] > 0).all()


def test_es_above_var_and_both_monotone_in_level(fitted, panel):
    fc = fitted.forecast_tail(panel, LEVELS, panel.index.levels[1][610:900])
    assert (fc["es"] >= fc["var"] - 1e-12).all()
    for col in ("var", "es"):
        wide = fc.pivot_table(index=["asset", "side", "cutoff"], columns="level", values=col)
        assert (wide.diff(axis=1).iloc[:, 1:] >= -1e-12).all().all(), col


def test_forecast_reads_nothing_after_its_cutoff(fitted, panel):
    for t in _cutoffs(panel)[:3]:
        full = fitted.forecast_tail(panel, LEVELS, pd.DatetimeIndex([t]))
        cut = fitted.forecast_tail(panel[panel.index.get_level_values("date") <= t], LEVELS,
                                   pd.DatetimeIndex([t]))
        pd.testing.assert_frame_equal(full, cut)


def test_a_forecast_at_some_cutoffs_is_the_forecast_of_every_cutoff_there(fitted, panel):
    """Asking for a few cutoffs (a serve asks for one) gives exactly the rows of the
    forecast of every cutoff: a model that computes less for fewer cutoffs (FHS and EVT
    forecast σ only on the days their window reads, and one cutoff for every asset at once)
    computes the same numbers — early cutoffs with a short window, and the last one."""
    every = fitted.forecast_tail(panel, LEVELS, None)
    singles = [pd.DatetimeIndex([c]) for c in _cutoffs(panel, (40, 100, 620, 700, 899))]
    for cut in (_cutoffs(panel), *singles, pd.DatetimeIndex([])):
        some = fitted.forecast_tail(panel, LEVELS, cut)
        want = every[every["cutoff"].isin(cut)].reset_index(drop=True)
        assert len(some) == len(want)
        if len(cut) and cut[0] >= panel.index.levels[1][620]:  # past every model's warm-up
            assert len(some) > 0
        # the filtered and unfiltered simulations exactly; a regression to the last bits a
        # batch of another size moves (BLAS), the network to float32's
        exact = fitted.alias in ("fhs_ewma", "fhs_garch", "evt_garch", "hs", "caviar")
        rtol = 1e-6 if fitted.alias == "tail_nn" else 1e-10
        pd.testing.assert_frame_equal(some.reset_index(drop=True), want, check_exact=exact,
                                      rtol=rtol, atol=1e-12)


def test_fit_is_deterministic_and_never_reads_target_columns(panel):
    # models build their targets from worst_loss_* of the rows they are given; a target_*
    # column (the future) handed over by mistake must change nothing
    t = panel.index.levels[1][600]
    upto = panel[panel.index.get_level_values("date") <= t]
    leaky = upto.assign(target_worst_loss_long=1.0, target_worst_loss_short=1.0)
    for alias in ("fhs_garch", "evt_garch", "qr_har"):
        a = build_tail_forecaster(alias, FAST).fit(upto).forecast_tail(panel, LEVELS)
        b = build_tail_forecaster(alias, FAST).fit(leaky).forecast_tail(panel, LEVELS)
        pd.testing.assert_frame_equal(a, b)


def test_state_round_trip_is_json_and_forecasts_identically(fitted, panel):
    state = json.loads(json.dumps(fitted.state()))
    clone = tail_forecaster_from_state(state)
    cut = _cutoffs(panel)
    pd.testing.assert_frame_equal(fitted.forecast_tail(panel, LEVELS, cut),
                                  clone.forecast_tail(panel, LEVELS, cut))


def test_unknown_alias_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown tail forecaster"):
        build_tail_forecaster("nope", FAST)


def test_every_tail_model_drives_a_served_policy(fitted, panel):
    """Any tail model the choice may freeze can be served: its state bundled as a
    tail-driven champion (:mod:`serving.tail_source`), the batch job publishes the model's
    own ES of the as-of as the loss ES, from the columns the serve would build for it
    (``features.window.serve_columns``) as from every column."""
    from configs.schema import Config
    from features.window import serve_columns
    from models.registry import build_forecaster
    from serving.apply import bundle_forecasts, policy_frame
    from serving.tail_source import FALLBACK_NOTE, entry

    dates = panel.index.levels[1]
    fit_cutoff, as_of = dates[600], dates[700]
    train = panel[panel.index.get_level_values("date") <= fit_cutoff]
    cfg = Config().with_overrides({"policy.confidence": 0.99})
    sigma = build_forecaster("ewma94", cfg.models, [1]).fit(train)
    stored = sigma.forecast(train, [1], pd.DatetimeIndex(dates[300:601]))
    bundle = json.loads(json.dumps({
        "forecaster": sigma.state(), "fit_cutoff": fit_cutoff.date().isoformat(),
        "config": cfg.resolved(), "forecasts": bundle_forecasts(stored, 1),
        "tail": entry(fitted.alias, 0.99, fitted.state(), pd.DataFrame(columns=TAIL_COLUMNS),
                      fit_cutoff, ["AAA", "BBB"])}, default=str))
    visible = panel[panel.index.get_level_values("date") <= as_of]
    want = fitted.forecast_tail(visible, [0.99], pd.DatetimeIndex([as_of]))
    want = want[want["side"] == "long"].set_index("asset")
    served = policy_frame(sigma, bundle, panel, as_of.date()).set_index("asset")
    for asset in ("AAA", "BBB"):
        assert served.at[asset, "loss_es"] == pytest.approx(want.at[asset, "es"], rel=1e-9)
        assert served.at[asset, "loss_var"] == pytest.approx(want.at[asset, "var"], rel=1e-9)
        assert FALLBACK_NOTE.format(model=fitted.alias) not in served.at[asset, "reason"]
    columns = serve_columns(bundle)
    if columns is not None:  # audited: the same parameters from those columns alone
        narrow = panel[[c for c in panel.columns if c in columns]]
        pd.testing.assert_frame_equal(
            policy_frame(sigma, bundle, narrow, as_of.date()).set_index("asset"), served)


@pytest.mark.parametrize("alias", ["fhs_ewma", "fhs_garch", "evt_garch"])
@pytest.mark.parametrize("interval_days,variant", [(1, "close"), (3, "intrabar")])
def test_one_cutoff_is_the_forecast_of_every_cutoff_on_a_ragged_panel(alias, interval_days,
                                                                      variant):
    """The one-cutoff path (every asset at once) on the panels a serve meets: an asset with
    a 30-day gap and NaN losses, one listed late, one whose data end early, rows out of
    order, a cutoff on a day one asset has no row, half-filled windows; a 3-day interval and
    the intrabar loss. Exactly the rows of the forecast of every cutoff."""
    panel = tail_panel(("AAA", "BBB", "CCC", "DDD"), n_days=700, seed=11)
    dates = panel.index.get_level_values("date")
    asset = panel.index.get_level_values("asset")
    first = dates.min()
    gap = (asset == "AAA") & (dates >= first + pd.Timedelta(days=400)) \
        & (dates < first + pd.Timedelta(days=430))
    late = (asset == "BBB") & (dates < first + pd.Timedelta(days=250))
    early = (asset == "CCC") & (dates > first + pd.Timedelta(days=600))
    ragged = panel[~(gap | late | early)].copy()
    nan_rows = (ragged.index.get_level_values("asset") == "AAA") \
        & (np.arange(len(ragged)) % 17 == 0)
    ragged.loc[nan_rows, ["worst_loss_long", "worst_loss_long_intrabar"]] = np.nan
    ragged = ragged.sample(frac=1.0, random_state=3)  # out of order
    section = getattr(FAST, alias).model_copy(update={
        "loss_variant": variant, "window": 200 if alias != "evt_garch" else 400,
        "min_obs": 50 if alias != "evt_garch" else 150})
    cfg = FAST.model_copy(update={alias: section})
    fit_rows = ragged[ragged.index.get_level_values("date") <= first + pd.Timedelta(days=450)]
    model = build_tail_forecaster(alias, cfg, interval_days).fit(fit_rows)
    every = model.forecast_tail(ragged, LEVELS, None)
    probes = [first + pd.Timedelta(days=d) for d in (120, 300, 415, 445, 599, 650, 699)]
    for t in probes:
        one = model.forecast_tail(ragged, LEVELS, pd.DatetimeIndex([t]))
        want = every[every["cutoff"] == t].reset_index(drop=True)
        pd.testing.assert_frame_equal(one.reset_index(drop=True), want, check_exact=True)
    seen = set(every[every["cutoff"].isin(probes)]["asset"])
    assert {"AAA", "CCC", "DDD"} <= seen  # (BBB: a per-asset GARCH needs more fitted rows)
    # the gap's day: AAA has no row, so no forecast there, the others do
    on_gap = model.forecast_tail(ragged, LEVELS, pd.DatetimeIndex([probes[2]]))
    assert "AAA" not in set(on_gap["asset"]) and len(on_gap) > 0

"""Seasoning (:mod:`serving.seasoning`): while an asset has fewer realized losses in the stress
look-back than one stress window, its stress ES is at least the largest of the seasoned
assets' that day, in the replay and in the batch job alike, and the reason says so."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from features.schema import feature_view
from models.base import asset_frame
from models.registry import build_forecaster
from pipelines.policy_eval.backtest import policy_paths
from serving.apply import bundle_forecasts, policy_frame, policy_frame_per_asset, reference_today
from serving.inputs import asset_series
from serving.policy import stress_es
from serving.seasoning import (
    ANY,
    HOURLY,
    PROXY,
    build,
    key_of,
    reference,
    season,
)
from tests.conftest import write_slice
from tests.served import served_path

SMALL = Config().policy.model_copy(update={"stress_window_obs": 5, "stress_lookback_days": 100,
                                          "confidence": 0.9})


def test_season_known_answers() -> None:
    own = np.array([0.05, 0.30, np.nan, 0.10, 0.08])
    count = np.array([3, 2, 0, 7, 4])  # window 5: rows 0, 1, 2 and 4 are young
    ref = np.array([0.20, 0.20, 0.20, 0.20, np.nan])
    out, notes = season(own, count, ref, ["ETH", "ETH", "BTC", "ETH", ""], SMALL)
    np.testing.assert_array_equal(out, [0.20, 0.30, 0.20, 0.10, 0.08])
    assert notes[0] == ("young: 3 of 5 losses in the stress look-back, stress ES of ETH "
                        "(0.2000) used")
    assert notes[1].endswith("its own stress ES above every seasoned asset's")
    assert "stress ES of BTC (0.2000) used" in notes[2]  # no loss of its own yet
    assert notes[3] == ""  # seasoned: its own, no note
    assert notes[4].endswith("no seasoned asset to take a stress window from")


def test_the_reference_is_the_worst_seasoned_stress_es_on_the_young_days() -> None:
    rng = np.random.default_rng(7)
    days = np.arange(20, dtype=np.int64)
    losses = {"AAA": (rng.exponential(0.02, 20), days),
              "BBB": (rng.exponential(0.05, 20), days),
              "NEW": (np.array([0.5, 0.01, 0.02]), np.array([12, 13, 14], np.int64))}
    asked = {n: d for n, (_, d) in losses.items()}
    ref = build(losses, asked, [SMALL])
    table_days, groups, sources = ref.tables[key_of(SMALL)]
    # no proxy flags given: every asset counts as hourly-measured, the proxy group is empty
    np.testing.assert_array_equal(groups[ANY], groups[HOURLY])
    assert np.isnan(groups[PROXY]).all() and (sources[PROXY] == -1).all()
    value, source = groups[ANY], sources[ANY]
    # young days: AAA and BBB before their fifth loss (days 0-3), NEW on all its days
    np.testing.assert_array_equal(table_days, [0, 1, 2, 3, 12, 13, 14])
    assert np.isnan(value[:4]).all() and (source[:4] == -1).all()  # nobody seasoned yet
    for k, d in enumerate([12, 13, 14], start=4):
        es = {n: stress_es(x[day <= d], d - day[day <= d], SMALL)
              for n, (x, day) in losses.items() if n != "NEW"}
        best = max(es, key=lambda n: es[n])
        assert value[k] == es[best] and ref.names[source[k]] == best
    got, names = ref.at(np.array([13]), SMALL)
    assert got[0] == value[5] and names == [ref.names[source[5]]]
    with pytest.raises(ValueError, match="no stress reference on day 8"):
        ref.at(np.array([8]), SMALL)  # a day nobody was young: not built, never guessed
    with pytest.raises(ValueError, match="no stress reference built"):
        ref.at(np.array([13]), SMALL.model_copy(update={"confidence": 0.99}))
    # a tie goes to the first asset in name order
    tie = build({"B": (np.full(8, 0.1), np.arange(8)), "A": (np.full(8, 0.1), np.arange(8)),
                 "C": (np.array([0.01]), np.array([7]))},
                {"B": np.arange(8), "A": np.arange(8), "C": np.array([7])}, [SMALL])
    assert tie.at(np.array([7]), SMALL)[1] == ["A"]


def test_a_young_asset_is_compared_with_assets_measured_as_it_is() -> None:
    """A range-proxy asset's stress ES is not lent to a young hourly-measured one while an
    hourly-measured seasoned asset exists, and the other way round; with no asset of its
    kind seasoned, the worst of any."""
    days = np.arange(10, dtype=np.int64)
    losses = {"RNG": (np.full(10, 0.3), days), "HRL": (np.full(10, 0.1), days),
              "NEW": (np.array([0.01]), np.array([9]))}
    asked = {"RNG": days, "HRL": days, "NEW": np.array([9])}
    proxy = {"RNG": (days, np.ones(10, bool)), "HRL": (days, np.zeros(10, bool)),
             "NEW": (np.array([9]), np.array([False]))}
    ref = build(losses, asked, [SMALL], proxy)
    hrl = stress_es(np.full(10, 0.1), 9 - days, SMALL)
    rng = stress_es(np.full(10, 0.3), 9 - days, SMALL)
    assert ref.at(np.array([9]), SMALL) == (np.array([hrl]), ["HRL"])
    value, source = ref.at(np.array([9]), SMALL, np.array([True]))
    assert value[0] == rng and source == ["RNG"]
    # HRL's losses measured by the proxy too from day 9: no hourly-measured asset, the worst
    proxy["HRL"] = (days, days >= 9)
    value, source = build(losses, asked, [SMALL], proxy).at(np.array([9]), SMALL)
    assert value[0] == rng and source == ["RNG"]


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """MATIC (listed 2019-04-26, seasoned from 2020-01; its March 2020 crash makes it the
    riskier) and SOL, listed 2020-08-11 and young until 2021-04-17."""
    dest = tmp_path_factory.mktemp("market")
    market = load_market(write_slice(dest, ["MATIC", "SOL"], "2019-04-01", "2021-06-30"))
    return build_panel(market, Config().features)


CFG = Config().with_overrides({"policy.fhs_min_obs": 20, "policy.fhs_window": 120,
                               "policy.stress_floor_weight": 1.0})


def _forecasts(panel: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    model = build_forecaster("ewma94", CFG.models, [1]).fit(panel)
    return model.forecast(panel, [1], pd.date_range(start, end, freq="D"))


def test_a_young_asset_borrows_the_seasoned_stress_window_in_the_replay(listing) -> None:
    fc = _forecasts(listing, "2021-02-01", "2021-06-30")
    path = policy_paths(listing, [(fc, CFG)])[0].set_index(["asset", "date"])
    p = CFG.policy
    matic = asset_series(asset_frame(listing, "MATIC"), CFG)
    sol = asset_series(asset_frame(listing, "SOL"), CFG)

    def es_on(series, day: pd.Timestamp) -> float:
        d = (day - pd.Timestamp(0)).days
        known = series.realized_day <= d
        return stress_es(series.realized_loss[known], d - series.realized_day[known], p)

    sol_rows = path.loc["SOL"]
    young = sol_rows.index[sol_rows.index <= "2021-04-17"]
    assert len(young) == 76  # 2021-02-01 .. 2021-04-17
    borrowed = 0
    for day in young:
        own, ref = es_on(sol, day), es_on(matic, day)
        assert sol_rows.at[day, "stress_floor"] == max(own, ref)
        assert "young:" in sol_rows.at[day, "reason"]
        borrowed += ref > own
        if ref > own:
            assert f"stress ES of MATIC ({ref:.4f}) used" in sol_rows.at[day, "reason"]
    assert borrowed > 0  # the rule binds on real data: SOL's own first months were calmer
    seasoned = sol_rows.index[sol_rows.index > "2021-04-17"]
    assert len(seasoned) > 60
    for day in seasoned[::10]:
        assert sol_rows.at[day, "stress_floor"] == es_on(sol, day)
    assert not sol_rows.loc[seasoned, "reason"].str.contains("young").any()
    assert not path.loc["MATIC", "reason"].str.contains("young").any()


def test_the_served_young_asset_is_the_replayed_one_day_after_day(listing) -> None:
    """The batch job's way (each day's reference from the panel it sees, the served
    ``decide`` on that day's inputs) gives the replayed path bit for bit, across the day SOL
    seasons."""
    fc = _forecasts(listing, "2021-03-25", "2021-05-10")
    replayed = policy_paths(listing, [(fc, CFG)])[0]
    served = served_path(listing, fc, CFG)
    pd.testing.assert_frame_equal(replayed, served, check_exact=True)
    assert replayed["reason"].str.contains("young").sum() == 24  # SOL, 03-25 .. 04-17


def test_a_new_listing_is_served_no_looser_than_the_riskiest_seasoned_asset(tmp_path) -> None:
    """The fault that motivated the rule: an asset listed 121 days before the as-of was
    served a lower stress floor and a higher LT than ETH's. Now its floor is the worst
    hourly-measured seasoned one's, the batch equals the per-asset path, the row is flagged
    and the reason says why."""
    market = load_market(write_slice(tmp_path, ["AAVE", "BTC", "ETH", "SOL"], "2020-06-01",
                                     "2025-06-30"))
    panel = feature_view(build_panel(market, Config().features))
    asset, date = panel.index.get_level_values("asset"), panel.index.get_level_values("date")
    new = panel[(asset == "SOL") & (date > "2025-03-01")].rename(index={"SOL": "NEW"})
    panel = pd.concat([panel[asset != "SOL"], new]).sort_index()
    as_of = dt.date(2025, 6, 30)
    cfg = Config()
    model = build_forecaster("ewma94", cfg.models, [1]).fit(panel)
    cutoffs = pd.date_range("2025-01-01", as_of, freq="D")
    bundle = json.loads(json.dumps(
        {"forecaster": model.state(), "fit_cutoff": as_of.isoformat(), "config": cfg.resolved(),
         "forecasts": bundle_forecasts(model.forecast(panel, [1], cutoffs), 1)}, default=str))
    fast = policy_frame(model, bundle, panel, as_of)
    pd.testing.assert_frame_equal(fast, policy_frame_per_asset(model, bundle, panel, as_of),
                                  check_exact=True)
    rows = fast.set_index("asset")
    w = cfg.policy.stress_floor_weight
    worst = max(("BTC", "ETH"), key=lambda a: rows.at[a, "stress_floor"])
    assert rows.at["NEW", "stress_floor"] == rows.at[worst, "stress_floor"]
    assert f"young: 121 of 250 losses in the stress look-back, stress ES of {worst} " \
        f"({rows.at[worst, 'stress_floor'] / w:.4f}) used" in rows.at["NEW", "reason"]
    assert rows.at["NEW", "lt"] <= rows.at[worst, "lt"] + 0.01  # LB may differ a little
    assert not rows.loc[["BTC", "ETH"], "reason"].str.contains("young").any()
    # AAVE (no hourly data: range-proxy losses) has the highest floor, but NEW's losses are
    # hourly-measured, so it is compared with the hourly-measured seasoned assets only
    assert rows.at["AAVE", "flag_proxy"] and not rows.at["NEW", "flag_proxy"]
    assert rows.at["AAVE", "stress_floor"] > 2 * rows.at["NEW", "stress_floor"]
    assert rows["flag_young"].tolist() == [False, False, False, True]


def test_the_as_of_reference_is_the_replays_on_that_day(listing) -> None:
    """The batch job asks one day (``on``): a seasoned universe is seen from one vectorised
    count (no table), a day with a young asset gets the replay's numbers for that day."""
    p = CFG.policy
    whole = reference(listing, [p])[p.loss]
    days = whole.tables[key_of(p)][0]
    young_day = int((pd.Timestamp("2021-03-01") - pd.Timestamp(0)).days)
    seasoned_day = int((pd.Timestamp("2021-06-01") - pd.Timestamp(0)).days)
    assert young_day in days and seasoned_day not in days
    for proxy in (False, True):
        flag = np.array([proxy])
        want = whole.at(np.array([young_day]), p, flag)
        got = reference(listing[listing.index.get_level_values("date") <= "2021-03-01"], [p],
                        on=young_day)[p.loss].at(np.array([young_day]), p, flag)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1] == want[1]
    seasoned = reference(listing[listing.index.get_level_values("date") <= "2021-06-01"], [p],
                         on=seasoned_day)[p.loss]
    assert not len(seasoned.tables[key_of(p)][0])
    visible = listing[listing.index.get_level_values("date") <= "2021-06-01"]
    assert reference_today(visible, CFG, pd.Timestamp("2021-06-01")) is None

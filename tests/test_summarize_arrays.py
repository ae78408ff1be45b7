"""The report's per-asset summary and the frontier's points read each asset as slices of its
columns; their figures are those of the per-asset frames and pandas reductions they replaced,
bit for bit, on a replayed path of real data with holes, an asset with a few days and a
budget."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.backtest import backtest
from models.registry import build_forecaster
from pipelines.evaluation.coverage import basel_traffic_light
from pipelines.policy_eval.acceptance import accept_asset
from pipelines.policy_eval.backtest import at_lb, policy_path, static_path
from pipelines.policy_eval.compare import static_paths, static_schedule
from pipelines.policy_eval.episodes import episode_of, stress_bad_debt, stress_table
from pipelines.policy_eval.frontier import POOLED, frontier_points, pareto, with_pooled
from pipelines.policy_eval.report import summarize
from tests.conftest import MARKET

CFG = Config().with_overrides({"policy.fhs_min_obs": 60})


def _reference(path: pd.DataFrame, p: float, episodes, budgets) -> pd.DataFrame:
    """The frame-per-asset summary (the implementation the array one replaced)."""
    stress = stress_bad_debt(path, episodes)
    rows = []
    for asset, g in path.groupby("asset", sort=True):
        g = g.sort_values("date")
        known = g[g["loss_frac"].notna() & g["mmf"].notna()]
        if known.empty:
            continue
        budget = budgets.get(asset, math.nan)  # budgets in force, none here: not judged
        row = {"asset": asset, **accept_asset(known, p, 0.05, 4, float(stress.get(asset, 0.0)),
                                              budget)}
        if known["short_loss_frac"].notna().any():
            row["short_breaches"] = int((known["short_loss_frac"] > known["mmf"]).sum())
            row["short_bad_debt_sum"] = float(known["bad_debt_short"].sum())
        hits = (known["loss_frac"] > known["mmf"]).to_numpy()
        row["red_windows"] = basel_traffic_light(hits, 250, p).n_red
        row.update({"bad_debt_lt_sum": float(known["bad_debt_lt"].sum()),
                    "bad_debt_ltv_sum": float(known["bad_debt_ltv"].sum()),
                    "stress_bad_debt_lt": float(stress.get(asset, 0.0)),
                    "mean_mmf": float(g["mmf"].mean()), "mean_imf": float(g["imf"].mean()),
                    "mean_lt": float(g["lt"].mean()), "mean_ltv": float(g["ltv"].mean()),
                    "mean_lb": float(g["lb"].mean())})
        s = g.set_index("date")["imf"].dropna()
        row.update({"peak_to_trough": float(s.max() / s.min()),
                    "max_increase_5d": float((s - s.shift(5)).max()),
                    "max_increase_30d": float((s - s.shift(30)).max())})
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def replay_setup() -> tuple[pd.DataFrame, pd.DataFrame]:
    market = load_market(MARKET, ["BTC", "SOL", "TRX"], dt.date(2025, 6, 30))
    panel = build_panel(market, CFG.features)
    panel = panel[panel.index.get_level_values("date") >= "2022-06-01"]
    fc = backtest(lambda: build_forecaster("ewma94", CFG.models, [1]), panel,
                  dt.date(2023, 9, 1), 120, [1], 300).forecasts
    return panel, policy_path(panel, fc, CFG)


@pytest.fixture(scope="module")
def replayed(replay_setup) -> pd.DataFrame:
    return replay_setup[1]


def test_the_array_summary_is_the_frame_summary_bit_for_bit(replayed) -> None:
    path = replayed.copy()
    rng = np.random.default_rng(5)
    holes = rng.choice(len(path), size=60, replace=False)
    path.loc[holes[:30], "loss_frac"] = np.nan        # unrealized days
    path.loc[holes[30:], "imf"] = np.nan              # a gap in the margin series
    trx = path.index[path["asset"] == "TRX"]
    path = path.drop(trx[4:])                          # TRX: too few days for the DQ test
    path = path.sample(frac=1.0, random_state=1)       # rows in no particular order
    episodes = CFG.evaluation.episodes
    budgets = {"BTC": 0.0, "SOL": 1.0}
    got = summarize(path, 0.01, episodes, budgets=budgets)
    want = _reference(path, 0.01, episodes, budgets)
    assert list(got["asset"]) == ["BTC", "SOL", "TRX"] and got["breaches"].sum() > 0
    trx_row = got.set_index("asset").loc["TRX"]
    assert trx_row["n"] <= 4 and not trx_row["acceptable"] and np.isnan(trx_row["dq_p"])
    assert np.isnan(trx_row["stress_budget"]) and "no stress budget" in trx_row["why_not"]
    unbudgeted = summarize(path, 0.01, episodes, budgets=None).set_index("asset")
    assert np.isinf(unbudgeted["stress_budget"]).all()
    assert (unbudgeted.loc["BTC", "acceptable"]
            == (not unbudgeted.loc["BTC", "under_coverage"]
                and unbudgeted.loc["BTC", "independence_p"] > 0.05
                and unbudgeted.loc["BTC", "dq_p"] > 0.05))
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_stress_bad_debt_is_on_one_lb_basis_whether_or_not_an_asset_has_a_budget(
        replayed) -> None:
    """Budgets are set at the comparison LB: every row's ``stress_bad_debt`` is the path's at
    that LB (budgeted or not), ``stress_bad_debt_lt`` the policy's own."""
    episodes = {"whole replay": (dt.date(2023, 9, 1), dt.date(2025, 6, 30))}
    at_cmp = at_lb(replayed, 1.5)
    got = summarize(replayed, 0.01, episodes, budgets={"BTC": 1.0},
                    budget_path=at_cmp).set_index("asset")
    cmp, own = stress_bad_debt(at_cmp, episodes), stress_bad_debt(replayed, episodes)
    assert np.isnan(got.loc["SOL", "stress_budget"])  # no budget: the basis stays the same
    for asset in got.index:
        assert got.loc[asset, "stress_bad_debt"] == cmp[asset]
        assert got.loc[asset, "stress_bad_debt_lt"] == own[asset]
    assert (cmp != own).any()  # the two bases differ here, so the check can fail


def _reference_points(paths, labels, cfg: Config) -> pd.DataFrame:
    """The frame-per-asset frontier points (the implementation the array one replaced)."""
    eps, u = cfg.evaluation.episodes, cfg.features.update_interval_days
    rows = []
    for name, path in paths.items():
        family, knob = labels[name]
        path = at_lb(path[path["loss_frac"].notna()], cfg.evaluation.comparison_lb)
        for asset, g in path.groupby("asset", sort=True):
            stress = episode_of(g, eps, u).notna()
            rows.append({"family": family, "knob": knob, "asset": asset,
                         "capital": float(g["capital"].mean()),
                         "bad_debt": float(g["bad_debt_lt"].sum()),
                         "stress_bad_debt": float(g.loc[stress, "bad_debt_lt"].sum()),
                         "breaches": int(g["breach"].fillna(False).astype(bool).sum()),
                         "days": int(g["loss_frac"].notna().sum())})
    out = with_pooled(pd.DataFrame(rows))  # the pooling itself is unchanged
    for measure in ("bad_debt", "stress_bad_debt"):
        out[f"frontier_{measure}"] = False
        for _, g in out.groupby("asset"):
            out.loc[pareto(g, measure), f"frontier_{measure}"] = True
    return out


def test_the_array_frontier_is_the_frame_frontier_bit_for_bit(replayed) -> None:
    """Each asset's point read from slices of the sorted path, the panels' Pareto flags from
    each panel's rows: the same table as a frame per asset, on replayed and static paths with
    rows in no order, unrealized days and a family on one asset only."""
    path = replayed.sample(frac=1.0, random_state=3)
    path.loc[path.index[:40], "loss_next"] = np.nan  # unrealized days
    half = static_path(path, 0.5 * path["mmf"].to_numpy(), path["lt"].to_numpy(),
                       path["lb"].to_numpy(), path["imf"].to_numpy())
    fixed = static_path(path, 0.12, 0.88 / 1.05, 1.05, 0.15)
    btc = fixed[fixed["asset"] == "BTC"]
    paths = {"policy": path, "half": half, "fixed": fixed, "btc_only": btc}
    labels = {"policy": ("fam", 0.99), "half": ("fam", 0.95), "fixed": ("static", 0.99),
              "btc_only": ("aave_v3", np.nan)}
    got = frontier_points(paths, labels, CFG)
    want = _reference_points(paths, labels, CFG)
    assert set(got["asset"]) == {"BTC", "SOL", "TRX", POOLED}
    assert got["stress_bad_debt"].gt(0).any() and got["frontier_bad_debt"].sum() >= 4
    assert not got["frontier_bad_debt"].all()
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def _reference_static(template: pd.DataFrame, panel: pd.DataFrame, cfg: Config,
                      confidence: float) -> pd.DataFrame:
    """The static path with its outcomes computed asset by asset (the code it replaced)."""
    lb, blocks = cfg.evaluation.comparison_lb, []
    for asset, g in template.groupby("asset", sort=True):
        years = sorted(pd.to_datetime(g["date"]).dt.year.unique())
        table = static_schedule(panel.xs(asset, level="asset"), years, cfg, confidence)
        mmf = pd.to_datetime(g["date"]).dt.year.map(table.set_index("year")["mmf"]).to_numpy()
        ok = np.isfinite(mmf)
        if ok.any():
            m = mmf[ok]
            imf = np.minimum(m * (1 + cfg.policy.apc.buffer), 0.99)
            blocks.append(static_path(g[ok], m, (1 - m) / lb, lb, imf,
                                      g.loc[ok, "liquidity_addon"].fillna(0.0).to_numpy()))
    return pd.concat(blocks, ignore_index=True)


@pytest.mark.parametrize("confidence", [0.975, 0.99])
def test_the_static_path_in_one_pass_is_the_per_asset_path_bit_for_bit(replay_setup,
                                                                       confidence) -> None:
    panel, template = replay_setup
    template = template.sample(frac=1.0, random_state=2)  # rows in no particular order
    got, schedule = static_paths(template, panel, CFG, confidence)
    assert set(got["asset"]) == {"BTC", "SOL", "TRX"} and got["breach"].sum() > 0
    assert set(schedule["asset"]) == {"BTC", "SOL", "TRX"}
    pd.testing.assert_frame_equal(got, _reference_static(template, panel, CFG, confidence),
                                  check_exact=True)


def test_the_static_tables_of_every_confidence_in_one_pass_are_each_levels_own(
        replay_setup) -> None:
    """The grid's static tables built together (each asset's history read once) are the
    path and schedule each level's own call gives."""
    from pipelines.policy_eval.compare import static_paths_at

    panel, template = replay_setup
    levels = [0.99, 0.95, 0.975, 0.99]  # the policy's own level is also in the grid
    together = static_paths_at(template, panel, CFG, levels)
    assert list(together) == [0.99, 0.95, 0.975]
    for q in (0.95, 0.975, 0.99):
        path, schedule = static_paths(template, panel, CFG, q)
        pd.testing.assert_frame_equal(together[q][0], path, check_exact=True)
        pd.testing.assert_frame_equal(together[q][1], schedule, check_exact=True)
        pd.testing.assert_frame_equal(together[q][0], _reference_static(template, panel, CFG, q),
                                      check_exact=True)
    assert not together[0.95][1]["mmf"].equals(together[0.99][1]["mmf"])  # levels differ


def test_the_static_tables_in_asset_chunks_on_dask_are_the_ones_built_here(replay_setup):
    """The schedules computed per asset chunk on 2 Dask workers (one asset a chunk), the
    outcomes then in one pass here: the same paths and schedules, bit for bit."""
    from pipelines.engine import make_engine
    from pipelines.policy_eval.compare import static_paths_at

    panel, template = replay_setup
    levels = [0.99, 0.95]
    here = static_paths_at(template, panel, CFG, levels)
    cfg = CFG.with_overrides({"backtest.chunk_assets": 1})
    with make_engine("dask", n_workers=2, say=lambda _: None) as dask:
        shipped: list[pd.DataFrame] = []
        mapped = dask.map
        dask.map = lambda fn, items, **kw: shipped.extend(items) or mapped(fn, items, **kw)  # type: ignore[method-assign]
        there = static_paths_at(template, panel, cfg, levels, dask)
    assert [sorted(set(part["asset"])) for part in shipped] == [["BTC"], ["SOL"], ["TRX"]]
    for q in levels:
        pd.testing.assert_frame_equal(there[q][0], here[q][0], check_exact=True)
        pd.testing.assert_frame_equal(there[q][1], here[q][1], check_exact=True)


def _reference_stress(path: pd.DataFrame, episodes, u: int = 1) -> pd.DataFrame:
    """The stress table from a frame per (episode, asset) (the code it replaced, with the
    margin read on the worst-loss row)."""
    cols = ["episode", "asset", "worst_loss", "mmf_at_worst", "lt_at_worst", "breaches",
            "bad_debt_lt", "bad_debt_ltv"]
    name = episode_of(path, episodes, u)
    rows = []
    for (ep, asset), g in path[name.notna()].groupby([name[name.notna()], "asset"], sort=True):
        if g["loss_frac"].notna().any():
            g = g.sort_values("date")
            worst = g.loc[g["loss_frac"].idxmax()]  # the first of a tie, in date order
            rows.append({"episode": ep, "asset": asset,
                         "worst_loss": float(g["loss_frac"].max()),
                         "mmf_at_worst": float(worst["mmf"]), "lt_at_worst": float(worst["lt"]),
                         "breaches": int(g["breach"].fillna(False).astype(bool).sum()),
                         "bad_debt_lt": float(g["bad_debt_lt"].sum()),
                         "bad_debt_ltv": float(g["bad_debt_ltv"].sum())})
    return pd.DataFrame(rows, columns=cols)


def test_the_stress_table_on_slices_is_the_frame_table_bit_for_bit(replayed) -> None:
    path = replayed.sample(frac=1.0, random_state=4)  # rows in no particular order
    episodes = dict(CFG.evaluation.episodes)
    # an episode over the replayed period, and one in which nothing is realized yet
    episodes["late_2024"] = (dt.date(2024, 7, 1), dt.date(2024, 9, 30))
    last = pd.Timestamp(path["date"].max()).date()
    episodes["unrealized"] = (last - dt.timedelta(days=2), last + dt.timedelta(days=30))
    path.loc[path["date"] >= pd.Timestamp(last - dt.timedelta(days=3)), "loss_frac"] = np.nan
    got = stress_table(path, episodes)
    assert len(got) >= 3 and "unrealized" not in set(got["episode"])
    assert got["bad_debt_lt"].gt(0).any() or got["breaches"].gt(0).any()
    pd.testing.assert_frame_equal(got, _reference_stress(path, episodes), check_exact=True)
    empty = stress_table(path, {"none": (dt.date(2000, 1, 1), dt.date(2000, 2, 1))})
    assert empty.empty and list(empty.columns) == list(got.columns)


def test_the_frontier_with_a_task_per_path_on_dask_is_the_one_built_here(replayed) -> None:
    """Each path's points of both periods computed on 2 Dask workers (one task a path, only
    the points coming back), pooled and flagged here: the same frontier, bit for bit."""
    from pipelines.engine import make_engine
    from pipelines.policy_eval.pipeline import _frontier

    path = replayed
    half = static_path(path, 0.5 * path["mmf"].to_numpy(), path["lt"].to_numpy(),
                       path["lb"].to_numpy(), path["imf"].to_numpy())
    fixed = static_path(path, 0.12, 0.88 / 1.05, 1.05, 0.15)
    paths = {"policy:ewma94": path, "policy:ewma94@confidence=0.95": half,
             "aave_v3": fixed[fixed["asset"] == "BTC"]}
    settings = {"policy:ewma94": {"forecaster": "ewma94", "policy.confidence": 0.99},
                "policy:ewma94@confidence=0.95": {"forecaster": "ewma94",
                                                  "policy.confidence": 0.95}}
    knobs = {"policy:ewma94": ("ewma94:confidence", 0.99)}
    here = _frontier(paths, settings, knobs, {0.99: fixed}, CFG)
    with make_engine("dask", n_workers=2, say=lambda _: None) as dask:
        shipped: list[tuple] = []
        mapped = dask.map
        dask.map = lambda fn, items, **kw: shipped.extend(items) or mapped(fn, items, **kw)  # type: ignore[method-assign]
        there = _frontier(paths, settings, knobs, {0.99: fixed}, CFG, dask)
    assert [item[:2] for item in shipped][:3] == [("ewma94", 0.99), ("ewma94", 0.95),
                                                 ("ewma94:confidence", 0.99)]
    assert len(shipped) == 5 and set(here["period"]) == {"evaluation"}
    assert {"static", "aave_v3", "ewma94", "ewma94:confidence"} <= set(here["family"])
    assert here["frontier_bad_debt"].any() and (here["asset"] == POOLED).any()
    pd.testing.assert_frame_equal(there, here, check_exact=True)

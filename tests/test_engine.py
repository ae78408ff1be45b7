"""The fan-out engine gives the same numbers in process, in local processes and on Dask."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipelines.engine import chunked, make_engine


def seeded_tail(seed: int, n: int = 20_000) -> float:
    """A task with a seeded random draw: where it runs must not change what it returns."""
    draws = np.random.default_rng(seed).standard_t(4, size=n)
    return float(np.quantile(draws, 0.99))


def test_local_engine_in_process_and_in_processes_agree():
    seeds = list(range(6))
    with make_engine("local", n_jobs=1) as one, make_engine("local", n_jobs=2) as two:
        assert one.map(seeded_tail, seeds) == two.map(seeded_tail, seeds)


@pytest.mark.timeout(180)
def test_dask_local_cluster_with_two_workers_matches_the_local_engine():
    seeds = list(range(8))
    said: list[str] = []
    with make_engine("local", n_jobs=1) as local:
        expected = local.map(seeded_tail, seeds, n=5_000)
    with make_engine("dask", n_workers=2, say=said.append) as dask:
        got = dask.map(seeded_tail, seeds, n=5_000)
        assert len(dask.client.scheduler_info()["workers"]) == 2
    assert got == expected
    assert said and "dashboard http://127.0.0.1:" in said[0]


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="unknown engine 'spark'"):
        make_engine("spark")  # type: ignore[arg-type]


def test_chunked_keeps_order_and_covers_everything():
    assert chunked(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_mapper_runs_a_walk_forward_identically_on_dask():
    """The walk-forward's tasks give the same forecasts in process and on 2 Dask workers."""
    from configs.schema import Config
    from features.build import build_panel
    from features.loaders import load_market
    from models.backtest import backtest
    from models.registry import build_forecaster
    from tests.conftest import MARKET

    market = load_market(MARKET, ["BTC", "SOL"], dt.date(2025, 6, 30))
    cfg = Config()
    panel = build_panel(market, cfg.features)
    panel = panel[panel.index.get_level_values("date") >= "2023-01-01"]

    def run(mapper):
        return backtest(lambda: build_forecaster("har_rv", cfg.models, [1]), panel,
                        dt.date(2024, 6, 1), 120, [1], 300, mapper=mapper).forecasts

    with make_engine("local", n_jobs=1) as local:
        expected = run(local.mapper)
    with make_engine("dask", n_workers=2, say=lambda _: None) as dask:
        got = run(dask.mapper)
    assert len(expected) > 500 and set(expected["asset"]) == {"BTC", "SOL"}
    pd.testing.assert_frame_equal(got, expected)


def test_every_model_started_at_once_on_dask_gives_each_models_own_walk_forward():
    """The retrain starts every model's walk-forward before reading any, pooled ones first,
    on one feature view sent to the workers once: each model's forecasts, failures and task
    count are those of its own walk-forward run alone in process."""
    from configs.schema import Config
    from features.build import build_panel
    from features.loaders import load_market
    from models.backtest import backtest
    from models.registry import build_forecaster
    from pipelines.walk_forwards import start_walk_forwards
    from tests.conftest import MARKET

    market = load_market(MARKET, ["BTC", "SOL", "ETH"], dt.date(2025, 6, 30))
    models = ["ewma94", "har_rv", "har_rv_pooled"]
    cfg = Config().with_overrides({"models.enabled": models, "backtest.oos_start": "2024-06-01",
                                   "backtest.refit_every": 120, "backtest.horizons": [1, 7],
                                   "backtest.min_train_days": 300,
                                   "backtest.chunk_assets": 2})
    panel = build_panel(market, cfg.features)
    panel = panel[panel.index.get_level_values("date") >= "2023-01-01"]
    bt = cfg.backtest
    alone = {a: backtest(lambda a=a: build_forecaster(a, cfg.models, bt.horizons), panel,
                         bt.oos_start, bt.refit_every, bt.horizons, bt.min_train_days,
                         plausibility=bt.plausibility, chunk_assets=bt.chunk_assets)
             for a in models}
    with make_engine("dask", n_workers=2, say=lambda _: None) as dask:
        scattered: list[type] = []
        scatter = dask.client.scatter
        dask.client.scatter = lambda data, **kw: (  # type: ignore[method-assign]
            scattered.append(type(data)) or scatter(data, **kw))
        with dask.sharing():
            pending = start_walk_forwards(cfg, panel, dask.mapper)
            assert list(pending) == ["har_rv_pooled", "ewma94", "har_rv"]  # pooled first
            got = {a: p.result() for a, p in pending.items()}
    assert scattered == [pd.DataFrame]  # the feature view, once for the three models
    for a in models:
        assert len(alone[a].forecasts) > 500
        pd.testing.assert_frame_equal(got[a].forecasts, alone[a].forecasts)
        pd.testing.assert_frame_equal(got[a].failures, alone[a].failures)
        assert got[a].task_seconds > 0


def test_policy_replays_on_dask_match_the_local_processes():
    """The same replays, cut into one-asset tasks on 2 Dask workers (the panel shipped once,
    each forecast chunk once), give the paths of whole replays in local processes."""
    from configs.schema import Config
    from features.build import build_panel
    from features.loaders import load_market
    from models.backtest import backtest
    from models.registry import build_forecaster
    from pipelines.policy_eval.compare import replay_many
    from tests.conftest import MARKET

    market = load_market(MARKET, ["BTC", "ETH", "SOL"], dt.date(2025, 6, 30))
    cfg = Config().with_overrides({"policy.fhs_min_obs": 60, "backtest.n_jobs": 1,
                                   "backtest.chunk_assets": 1})
    panel = build_panel(market, cfg.features)
    panel = panel[panel.index.get_level_values("date") >= "2023-01-01"]
    fc = backtest(lambda: build_forecaster("ewma94", cfg.models, [1, 7]), panel,
                  dt.date(2024, 1, 1), 120, [1, 7], 300).forecasts
    # ETH has no forecast at the update interval: nothing to publish, in either engine
    fc = fc[(fc["asset"] != "ETH") | (fc["horizon_days"] == 7)].reset_index(drop=True)
    items = [(fc, cfg), (fc, cfg.with_overrides({"policy.confidence": 0.99}))]
    local = replay_many(panel, items, cfg)
    with make_engine("dask", n_workers=2, say=lambda _: None) as dask:
        tasks = []
        mapped = dask.map_combined
        dask.map_combined = lambda fn, items, *a, **kw: (  # type: ignore[method-assign]
            tasks.extend(items) or mapped(fn, items, *a, **kw))
        remote = replay_many(panel, items, cfg, dask)
        tasks_one = list(tasks)
        tasks.clear()
        # chunks of up to 50 assets: the 3 assets in a full round over the 2 workers
        halves = replay_many(panel, items, cfg.with_overrides({"backtest.chunk_assets": 50}),
                             dask)
    assert [sorted({a for f in frames.values() for a in f["asset"]}) for frames, _ in tasks
            ] == [["BTC", "ETH"], ["SOL"]]
    tasks = tasks_one
    # one task per asset (chunk_assets 1), replaying both candidates there: the forecast frame
    # they share travels once per task, holding only that asset's rows
    shipped = [f for frames, _ in tasks for f in frames.values()]
    assert [sorted(set(part["asset"])) for part in shipped] == [["BTC"], ["ETH"], ["SOL"]]
    assert [len(plan) for _, plan in tasks] == [2, 2, 2]
    pd.testing.assert_frame_equal(pd.concat(shipped), fc)
    assert len(local[0]) > 600 and set(local[0]["asset"]) == {"BTC", "SOL"}
    assert not local[0]["mmf"].equals(local[1]["mmf"])
    for a, b, c in zip(local, remote, halves, strict=True):
        pd.testing.assert_frame_equal(a, b)
        pd.testing.assert_frame_equal(a, c)


@pytest.mark.parametrize(("items", "most", "workers", "size", "chunks"), [
    (1000, 50, 16, 32, 32),      # 20 chunks of 50 would leave a second round of 4 on 16
    (1000, 50, 2, 50, 20),       # 20 chunks fill 10 rounds of 2: unchanged
    (10_000, 50, 16, 49, 205),   # 200 chunks need 13 rounds anyway: 13 rounds of ≤ 49
    (12, 50, 2, 6, 2),           # one chunk of 12 would keep one of the 2 workers idle
    (5, 50, 16, 1, 5),           # fewer items than workers: one a task
    (3, 1, 2, 1, 3),             # a size of 1 stays 1
])
def test_balanced_chunks_fill_every_round_of_workers(items, most, workers, size, chunks):
    from math import ceil

    from pipelines.engine import balanced_chunk

    got = balanced_chunk(items, most, workers)
    assert got == size and ceil(items / got) == chunks and got <= most
    # never more rounds of tasks than chunks of `most` need
    assert ceil(chunks / workers) == ceil(ceil(items / most) / workers)


def test_balanced_chunk_of_nothing_is_the_most():
    from pipelines.engine import balanced_chunk

    assert balanced_chunk(0, 50, 16) == 50


def test_the_comparison_in_asset_chunks_on_dask_equals_the_one_pass_table():
    """DM, MCS, MZ and VaR per asset, cut into one-asset tasks on 2 Dask workers: the same
    table, row for row, as one pass in process."""
    from configs.schema import Config
    from features.build import build_panel
    from features.loaders import load_market
    from models.backtest import backtest
    from models.registry import build_forecaster
    from pipelines.evaluation.comparison import comparison
    from pipelines.evaluation.evaluate import loss_table, scored
    from tests.conftest import MARKET

    market = load_market(MARKET, ["BTC", "SOL", "TRX"], dt.date(2025, 6, 30))
    cfg = Config()
    panel = build_panel(market, cfg.features)
    panel = panel[panel.index.get_level_values("date") >= "2023-01-01"]
    forecasts = {m: backtest(lambda m=m: build_forecaster(m, cfg.models, [1, 7]), panel,
                             dt.date(2024, 1, 1), 120, [1, 7], 300).forecasts
                 for m in ("ewma94", "har_rv", "garch11_t")}
    scores = scored(forecasts, panel)
    table = loss_table(scores)
    whole = comparison(scores, table, forecasts, panel)
    assert len(whole) == 3 * 3 * 2 and whole["dm_stat"].notna().sum() == 2 * 3 * 2
    assert whole["in_mcs"].notna().all() and whole["kupiec_p"].notna().sum() == 3 * 3
    in_order = comparison(scores, table, forecasts, panel, mapper=map, chunk_assets=2)
    pd.testing.assert_frame_equal(in_order, whole)
    with make_engine("dask", n_workers=2, say=lambda _: None) as dask:
        remote = comparison(scores, table, forecasts, panel, mapper=dask.mapper, chunk_assets=1)
    pd.testing.assert_frame_equal(remote, whole)


def test_items_that_carry_frames_are_recognised_for_scattering():
    from pipelines.engine import _holds_frame

    frame = pd.DataFrame({"a": [1.0]})
    assert _holds_frame(frame) and _holds_frame(("name", frame))
    assert _holds_frame((frame, {"m": frame}, frame)) and _holds_frame([np.zeros(3)])
    assert not _holds_frame(("BTC", dt.date(2024, 1, 1))) and not _holds_frame(7)
    assert not _holds_frame(("x", {"k": 1}))


NO_MLFLOW = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "mlflow":
            raise ImportError("mlflow is not installed on this worker")
sys.meta_path.insert(0, Refuse())
import {modules}
print("imported")
"""


def test_what_a_retrain_sends_to_workers_imports_without_mlflow():
    """A cluster's compute nodes need the models and the data, not the tracking stack: the
    walk-forwards, the evaluation, the policy replays and the retrain benchmark import with
    MLflow absent (only :mod:`pipelines.steps`, which logs, needs it)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    modules = ("pipelines.walk_forwards, pipelines.engine, pipelines.evaluation.comparison, "
               "pipelines.policy_eval.pipeline, benchmarks.retrain_bench")
    ok = subprocess.run([sys.executable, "-c", NO_MLFLOW.format(modules=modules)], cwd=root,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == "imported", ok.stderr[-2000:]
    refused = subprocess.run([sys.executable, "-c", NO_MLFLOW.format(modules="pipelines.steps")],
                             cwd=root, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "mlflow is not installed" in refused.stderr


def test_the_registry_knows_each_models_fan_out_without_building_it():
    """:func:`models.registry.fits_per_asset` is every registered model's own ``per_asset``
    (and its alias its key): the walk-forwards plan with it instead of building a probe."""
    from configs.schema import ModelsConfig
    from models.registry import REGISTRY, build_forecaster, fits_per_asset

    seen = set()
    for alias in REGISTRY:
        model = build_forecaster(alias, ModelsConfig(), [1, 7])
        assert fits_per_asset(alias) is bool(getattr(model, "per_asset", False)), alias
        assert str(model.alias) == alias
        seen.add(fits_per_asset(alias))
    assert seen == {True, False}
    with pytest.raises(KeyError, match="unknown forecaster"):
        fits_per_asset("nope")


NOT_STARTED = """
import sys
from configs.schema import Config
from pipelines.walk_forwards import start_walk_forwards
from tests.simulate import simulate_panel
cfg = Config().with_overrides({{"models.enabled": {models}, "backtest.oos_start": "2021-06-01",
                               "backtest.refit_every": 90, "backtest.chunk_assets": 1}})
handed = []
pending = start_walk_forwards(cfg, simulate_panel(("AAA", "BBB"), n_days=600),
                              lambda fn, tasks: handed.append(list(tasks)) or [])
print(list(pending), [len(t) for t in handed], "torch" in sys.modules,
      "lightning" in sys.modules)
"""


def test_handing_out_the_walk_forwards_builds_no_model_and_imports_no_torch():
    """The process that hands a retrain's fits to a cluster plans every model's tasks (the
    neural ones included) without importing torch or Lightning: those load where the fits
    run (they cost ~7 s of the driver's CPU when it built a probe of each model)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    models = ["harx_mlp", "mlp_har", "ewma94"]
    out = subprocess.run([sys.executable, "-c", NOT_STARTED.format(models=models)], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # pooled first; one refit (2021-06-01; the panel ends 2021-08-22): one task per pooled
    # model, one per asset for EWMA
    assert out.stdout.strip() == "['harx_mlp', 'mlp_har', 'ewma94'] [1, 1, 2] False False", \
        out.stdout


def test_a_shared_eligibility_answers_each_cutoff_once_and_as_eligible_assets(monkeypatch):
    import models.backtest as mb
    from tests.simulate import simulate_panel

    panel = simulate_panel(("AAA", "BBB", "CCC"), n_days=500)
    late = panel.index.get_level_values("asset") == "CCC"
    panel = panel[~late | (panel.index.get_level_values("date") >= "2020-10-01")]
    calls: list[pd.Timestamp] = []
    real = mb.eligible_assets
    monkeypatch.setattr(mb, "eligible_assets",
                        lambda f, c, m: calls.append(c) or real(f, c, m))
    shared = mb.Eligibility(panel)
    plans = [mb.plan(panel, dt.date(2020, 9, 1), 60, 200, per_asset, 1, shared)
             for per_asset in (True, False, True)]
    # five refits (2020-09-01 … 2021-04-29, the panel ends 2021-05-14), whatever the models
    assert len(calls) == 5 and len(set(calls)) == 5
    assert [len(p) for p in plans] == [11, 5, 11]  # CCC has 200 returns by the last only
    assert plans[1][4].assets == ("AAA", "BBB", "CCC") and plans[1][3].assets == ("AAA", "BBB")
    assert plans[0] == plans[2] == mb.plan(panel, dt.date(2020, 9, 1), 60, 200, True, 1)
    with pytest.raises(ValueError, match="another feature frame"):
        mb.plan(panel.copy(), dt.date(2020, 9, 1), 60, 200, True, 1, shared)


def test_combined_results_stay_on_the_workers_for_the_next_map_while_shared():
    """:meth:`Engine.map_combined` gives what combining in process gives; within a sharing
    block a later map over items holding a combined frame sends the workers' copy (nothing
    scattered from here), outside one (or for a frame it did not combine) the frame is
    scattered as before, and every result is the same."""
    def chunk(rows: pd.DataFrame, scale: float) -> list[pd.DataFrame]:
        return [rows.assign(v=rows["v"] * scale), rows.assign(v=rows["v"] + scale)]

    def joined(parts: list[pd.DataFrame]) -> pd.DataFrame:
        return pd.concat(parts, ignore_index=True)

    def total(item: tuple[str, pd.DataFrame]) -> tuple[str, float, int]:
        return item[0], float(item[1]["v"].sum()), len(item[1])

    frame = pd.DataFrame({"a": np.repeat(["x", "y", "z"], 4), "v": np.arange(12.0)})
    items = [frame.iloc[:5], frame.iloc[5:9], frame.iloc[9:]]
    local = make_engine("local", 1).map_combined(chunk, items, joined, 2, scale=3.0)
    assert local[0]["v"].tolist() == (frame["v"] * 3).tolist()
    assert local[1]["v"].tolist() == (frame["v"] + 3).tolist()
    with make_engine("dask", n_workers=2, say=lambda _: None) as dask:
        scattered: list[int] = []
        scatter = dask.client.scatter
        dask.client.scatter = lambda data, **kw: (  # type: ignore[method-assign]
            scattered.append(len(data) if isinstance(data, list) else 1)
            or scatter(data, **kw))
        with dask.sharing():
            got = dask.map_combined(chunk, items, joined, 2, scale=3.0)
            for a, b in zip(local, got, strict=True):
                pd.testing.assert_frame_equal(a, b)
            scattered.clear()
            judged = dask.map(total, [("times", got[0]), ("plus", got[1])])
            assert scattered == []  # both paths were already on the workers
            mixed = dask.map(total, [("times", got[0]), ("copy", got[1].copy())])
            assert scattered == [1]  # only the frame it did not combine
        scattered.clear()
        again = dask.map(total, [("times", got[0]), ("plus", got[1])])
        assert scattered == [2]  # the block ended: nothing is kept
    want = [total(("times", local[0])), total(("plus", local[1]))]
    assert judged == again == want and mixed[0] == want[0]
    assert mixed[1] == ("copy", *want[1][1:])

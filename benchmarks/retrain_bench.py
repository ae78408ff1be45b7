"""Retrain at scale: the walk-forward of every enabled forecaster and the policy replays on N
synthetic daily-and-hourly assets, on the local engine and on a Dask ``LocalCluster`` of 1
and 2 workers, with per-task times and a projection to larger universes and clusters.

The universe comes from :mod:`benchmarks.synthetic_universe` (2022-07-01 → 2025-06-30). The
features are built once (the whole panel: the learnt models read every column). Then, for
each engine:

* **walk-forward** of every model (``--models``, default ``models.enabled``) at once: each
  model's tasks (asset × refit for per-asset models, refit for pooled ones; quarterly refits
  from ``--oos-start``) handed to :class:`pipelines.engine.Engine` before any is read, pooled
  models first, as ``volmargin retrain`` runs them
  (:func:`pipelines.walk_forwards.start_walk_forwards`);
  one wall time for the whole, and per model its tasks' own run times (``task_s``, measured
  inside each task: the per-task times the projection reads). ``--one-at-a-time`` walks the
  models forward one after the other instead (a wall time per model; the code before);
* **evaluation** (scores, loss table, comparison: the selection's input), in process;
* **policy replays** (``--replays``): :func:`pipelines.policy_eval.pipeline.evaluate_policies`
  — every candidate (model × confidence grid), the comparators, the frozen candidate's knob
  variants — fanned out by the same engine. The synthetic universe starts in 2022, so the
  selection period is 2024-07-01 → 2024-12-31 and the evaluation period 2025-01-01 →
  2025-06-30 here (benchmark settings, not a protocol: only the time is reported).

Left out: MLflow logging, figures and files of the real steps (``pipelines.steps``).

Each stage on Dask is metered three ways: its wall time; the CPU seconds of this process, the
driver, which gathers the results and does the stage's serial work (``driver_s``, from
``time.process_time``); and the workers' compute seconds of every task it ran (``busy_s``, and
the longest task, ``longest_s``, from ``distributed``'s own task stream). The projection to
``A'`` assets on ``W'`` workers (``s = A'/A``) reads those, stage by stage:

    T = driver_s·s + max(longest_s·s, busy_s·s / W')

the serial part, then the parallel work spread over the workers unless one task is longer (a
pooled model's refit grows with the assets; an asset chunk does not, so ``longest_s·s`` is an
upper bound there). Serial and parallel parts are added, not overlapped: an upper bound too.
Where no task stream was read (the local engine) a stage falls back to its wall time divided
over the tasks that can run at once. The load average is printed beside every figure.

    python -m benchmarks.retrain_bench --assets 24 --workers 0 1 2
    python -m benchmarks.retrain_bench --assets 1000 --models ewma94 har_rv garch11_t \\
        --workers 1 2 --replays --data DIR --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.machine import describe
from benchmarks.synthetic_universe import write_universe
from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.backtest import backtest, plan
from models.registry import build_forecaster
from pipelines.engine import Engine, make_engine
from pipelines.evaluation.comparison import comparison
from pipelines.evaluation.evaluate import loss_table, scored
from pipelines.policy_eval.pipeline import evaluate_policies
from pipelines.walk_forwards import start_walk_forwards

LAST = dt.date(2025, 6, 30)


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def bench_config(root: Path, oos_start: str) -> Config:
    return Config().with_overrides({
        "paths.data_dir": str(root), "backtest.oos_start": oos_start,
        "evaluation.selection_start": oos_start, "evaluation.selection_end": "2024-12-31",
        "evaluation.evaluation_start": "2025-01-01",
        "evaluation.evaluation_end": LAST.isoformat()})


@contextlib.contextmanager
def metered(engine: Engine) -> Iterator[dict[str, float]]:
    """The driver's CPU seconds within the block and, on Dask, the workers' compute seconds of
    the tasks that ran in it (``distributed.get_task_stream``): filled in when it ends."""
    got: dict[str, float] = {}
    cpu = time.process_time()
    if engine.kind == "dask":
        from distributed import get_task_stream

        stream: contextlib.AbstractContextManager[Any] = get_task_stream(client=engine.client)
    else:
        stream = contextlib.nullcontext()
    with stream as ts:
        yield got
    got["driver_s"] = round(time.process_time() - cpu, 2)
    if ts is not None:
        spans = [sum(s["stop"] - s["start"] for s in t.get("startstops", ())
                     if s.get("action") == "compute") for t in ts.data]
        got |= {"busy_s": round(sum(spans), 1), "longest_s": round(max(spans, default=0.0), 2),
                "computed": len(spans)}


def walk_forward(alias: str, cfg: Config, panel: pd.DataFrame, engine: Engine
                 ) -> tuple[dict[str, object], pd.DataFrame]:
    """One model's walk-forward on ``engine``: wall time, task count, forecasts."""
    bt = cfg.backtest
    probe = build_forecaster(alias, cfg.models, bt.horizons)
    per_asset = bool(getattr(probe, "per_asset", False))
    tasks = plan(panel, bt.oos_start, bt.refit_every, bt.min_train_days, per_asset,
                 bt.chunk_assets)
    load = load_average()
    start = time.perf_counter()
    with metered(engine) as meter:
        out = backtest(lambda: build_forecaster(alias, cfg.models, bt.horizons), panel,
                       bt.oos_start, bt.refit_every, bt.horizons, bt.min_train_days,
                       mapper=engine.mapper, plausibility=bt.plausibility,
                       chunk_assets=bt.chunk_assets)
    wall = time.perf_counter() - start
    return ({"stage": f"walk-forward {alias}", "wall_s": round(wall, 2), "tasks": len(tasks),
             "fanout": "asset" if per_asset else "refit", "rows": len(out.forecasts),
             "failed": len(out.failures), **meter,
             "load_average_before": load, "load_average_after": load_average()},
            out.forecasts)


def walk_forwards_at_once(cfg: Config, panel: pd.DataFrame, engine: Engine
                          ) -> tuple[list[dict[str, object]], dict[str, pd.DataFrame]]:
    """Every model of ``cfg.models.enabled`` started at once on ``engine``, read in order:
    one row with the wall time of the whole, one per model with its task count and its
    tasks' mean own run time (``task_s``)."""
    load = load_average()
    start = time.perf_counter()
    with metered(engine) as meter, engine.sharing():
        pending = start_walk_forwards(cfg, panel, engine.mapper)
        done = {alias: p.result() for alias, p in pending.items()}
    wall = time.perf_counter() - start
    rows: list[dict[str, object]] = [
        {"stage": f"walk-forward {alias}", "wall_s": float("nan"),
         "tasks": len(pending[alias].tasks),
         "task_s": round(wf.task_seconds / max(len(pending[alias].tasks), 1), 3),
         "fanout": "asset" if any(t.separable for t in pending[alias].tasks) else "refit",
         "rows": len(wf.forecasts), "failed": len(wf.failures)}
        for alias, wf in done.items()]
    rows.append({"stage": "walk-forwards, every model at once", "wall_s": round(wall, 2),
                 "tasks": sum(len(p.tasks) for p in pending.values()), "fanout": "overlap",
                 **meter, "load_average_before": load, "load_average_after": load_average()})
    return rows, {alias: wf.forecasts for alias, wf in done.items()}


def replays(cfg: Config, panel: pd.DataFrame, forecasts: dict[str, pd.DataFrame],
            engine: Engine) -> list[dict[str, object]]:
    """The comparison the selection reads, then every policy replay (timed apart)."""
    load = load_average()
    start = time.perf_counter()
    with metered(engine) as scoring:
        scores = scored(forecasts, panel)
        table = loss_table(scores)
    scored_at = time.perf_counter()
    n_assets = scores["asset"].nunique()
    size = engine.chunk_size(n_assets, cfg.backtest.chunk_assets)
    chunks = -(-n_assets // size)
    with metered(engine) as comparing:
        compared = comparison(scores, table, forecasts, panel, mapper=engine.mapper,
                              chunk_assets=size)
    mid = time.perf_counter()
    with metered(engine) as replaying:
        ev = evaluate_policies(panel, forecasts, compared, cfg, None, engine)
    end = time.perf_counter()
    load_after = load_average()
    return [{"stage": "evaluation: scores and loss table", "wall_s": round(scored_at - start, 2),
             "tasks": 1, "fanout": "none", **scoring, "load_average_before": load,
             "load_average_after": load_after},
            {"stage": "evaluation: DM, MCS, MZ, VaR per asset", "tasks": chunks,
             "wall_s": round(mid - scored_at, 2), "fanout": "asset", **comparing,
             "load_average_before": load, "load_average_after": load_after},
            # the replays are cut into asset chunks, each replaying every candidate
            # (pipelines.policy_eval.compare.replay_many), spread over every worker or process;
            # the verdicts are one task per candidate; the static tables and the frontier are
            # computed here
            {"stage": "policy replays", "wall_s": round(end - mid, 2), "tasks": len(ev.paths),
             "fanout": "asset", **replaying,
             "frozen": ev.choice.policy, "load_average_before": load,
             "load_average_after": load_after}]


def lanes(fanout: str, tasks: int, workers: int) -> int:
    """Tasks that run at once: per-asset tasks (and the replays' asset chunks) on every
    worker; refits (pooled models) on at most one worker each; in-process stages on one
    (the overlapped walk-forwards' row is a wall time only: its work is the models' rows)."""
    if fanout in ("none", "overlap"):
        return 1
    return max(1, workers if fanout == "asset" else min(workers, tasks))


def project(best: pd.DataFrame, assets: int, target_assets: int, target_workers: int) -> float:
    """Seconds for ``target_assets`` on ``target_workers`` from one engine's metered stages
    (the module's formula): the driver's serial seconds and the workers' compute seconds both
    grow linearly in assets; the work spreads over the workers unless one task is longer.
    A stage read without a task stream falls back to its per-task time over :func:`lanes`."""
    scale = target_assets / assets
    busy = best["busy_s"] if "busy_s" in best else pd.Series(np.nan, index=best.index)
    # the models' own rows of an overlapped walk-forward whose task stream was read: their
    # work is in that row's
    overlapped = bool(busy[best["fanout"] == "overlap"].notna().any())
    total = 0.0
    for r, work in zip(best.itertuples(), busy, strict=True):
        if np.isfinite(work):
            total += r.driver_s * scale + max(r.longest_s * scale,
                                              work * scale / target_workers)
        elif r.fanout != "overlap" and not (overlapped and r.stage.startswith("walk-forward ")):
            total += r.task_s * r.tasks * scale / lanes(r.fanout, r.tasks, target_workers)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=24)
    parser.add_argument("--data", type=Path, default=None,
                        help="synthetic universe of --assets assets (written there if absent)")
    parser.add_argument("--oos-start", default="2024-07-01")
    parser.add_argument("--models", nargs="*", default=None, help="default: models.enabled")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2],
                        help="0 = the local engine in process; n > 0 = a LocalCluster of n")
    parser.add_argument("--replays", action="store_true", help="also the policy replays")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="walk the models forward one after the other (a wall per model)")
    parser.add_argument("--target-assets", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--target-workers", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    root = args.data or Path(tempfile.mkdtemp(prefix="volmargin-retrain-bench-")) / "universe"
    made = {"load_average": load_average()}
    if not (root / "crypto" / "daily").is_dir():
        t0 = time.perf_counter()
        write_universe(root, args.assets, "2022-07-01", LAST.isoformat())
        made["write_s"] = round(time.perf_counter() - t0, 1)
    found = len(list((root / "crypto" / "daily").glob("S*.csv*")))
    if found != args.assets:
        raise SystemExit(f"{root} holds {found} synthetic assets, not {args.assets}")
    cfg = bench_config(root, args.oos_start)
    stored = root.with_name(root.name + ".panel.parquet")   # a rerun skips load + features
    t0 = time.perf_counter()
    if stored.is_file():
        panel = pd.read_parquet(stored)
        made |= {"panel_read_s": round(time.perf_counter() - t0, 1)}
    else:
        market = load_market(root, None, LAST)
        t1 = time.perf_counter()
        panel = build_panel(market, cfg.features)
        made |= {"load_s": round(t1 - t0, 1), "features_s": round(time.perf_counter() - t1, 1)}
        del market
        panel.to_parquet(stored)
    made |= {"panel_rows": len(panel), "load_average_after": load_average()}
    print(json.dumps({"universe": str(root), **made}), flush=True)
    models = args.models or list(cfg.models.enabled)
    n_jobs = make_engine("local", cfg.backtest.n_jobs).n_jobs
    rows: list[dict[str, object]] = []
    for n_workers in args.workers:
        kind = "local" if n_workers == 0 else "dask"
        # local: the walk-forward in process, the replays in backtest.n_jobs processes
        started = time.perf_counter()
        with make_engine(kind, n_jobs=cfg.backtest.n_jobs, n_workers=n_workers or None,
                         say=lambda s: print(s, flush=True)) as engine:
            made[f"engine_start_s_{n_workers}"] = round(time.perf_counter() - started, 1)
            forecasts = {}
            if args.one_at_a_time:
                for alias in models:
                    row, forecasts[alias] = walk_forward(alias, cfg, panel, engine)
                    rows.append({"engine": kind, "workers": n_workers, **row})
                    print(json.dumps(rows[-1]), flush=True)
            else:
                walked, forecasts = walk_forwards_at_once(
                    cfg.with_overrides({"models.enabled": models}), panel, engine)
                for row in walked:
                    rows.append({"engine": kind, "workers": n_workers, **row})
                    print(json.dumps(rows[-1]), flush=True)
            if args.replays:
                for row in replays(cfg, panel, {a: f for a, f in forecasts.items() if len(f)},
                                   engine):
                    rows.append({"engine": kind, "workers": n_workers, **row})
                    print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    # the local engine runs the walk-forward in process and the replays in n_jobs processes
    ran = [lanes(r.fanout, r.tasks, r.workers or (n_jobs if r.stage == "policy replays" else 1))
           for r in table.itertuples()]
    from_wall = table["wall_s"] * pd.Series(ran, index=table.index) / table["tasks"]
    # measured inside the tasks where known (the walk-forwards run at once), else from walls
    table["task_s"] = table.get("task_s", from_wall).fillna(from_wall)
    print(f"\n{args.assets} assets, 2022-07-01 → {LAST}, out of sample from {args.oos_start}; "
          f"load + features {made.get('load_s', '-')} + {made.get('features_s', '-')} s; "
          + describe())
    print(table.to_markdown(index=False, floatfmt=".3f"))
    total = table.groupby("workers")["wall_s"].sum()
    print("\nwall seconds by workers:", total.round(1).to_dict())
    best = table[table["workers"] == max(args.workers)]
    projections = {n: round(project(best, args.assets, n, args.target_workers) / 60, 1)
                   for n in args.target_assets}
    own = project(best, args.assets, args.assets, max(max(args.workers), 1))
    print(f"the formula at this run's size and workers: {own / 60:.1f} min "
          f"(measured {best['wall_s'].sum() / 60:.1f} min)")
    for n, minutes in projections.items():
        print(f"projection: {n} assets on {args.target_workers} workers ≈ {minutes} min "
              f"(from the {max(args.workers)}-worker run's stages: serial driver seconds, "
              "the workers' compute seconds and the longest task)")
    if args.json:
        args.json.write_text(json.dumps({"data": made, "rows": table.to_dict(orient="records"),
                                         "projection_min": projections,
                                         "formula_at_run_min": round(own / 60, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

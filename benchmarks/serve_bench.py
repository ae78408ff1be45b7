"""How long a daily ``volmargin serve`` takes, and how much memory and disk it uses: the embedded
12 assets (``--assets 12``) or a synthetic universe of N daily-and-hourly assets
(:func:`benchmarks.synthetic_universe.write_universe`).

A policy is registered quickly (``--forecaster``, default ``har_rv``; not timed, but kept
cheap at 1,000-10,000 assets): the data through the day before the first served day, read
through a validated-candle cache kept beside the data directory (a rerun on the same universe
skips parsing); only the columns a serve of the model reads, built for all assets at once when
:func:`features.window.serve_columns` names them all (otherwise the whole panel); a short
walk-forward (one refit) for the out-of-sample FHS history; a per-asset model fitted
:data:`FIT_CHUNK` assets at a time; bundle, register, @champion — the building blocks of
``pipelines.steps.step_register`` without the model comparison and policy backtest. The data
directory (a copy of the embedded data, or the synthetic universe) is then cut after
:data:`DAYS` [1] (:func:`benchmarks.synthetic_universe.hold_back`), as a production directory
stands the evening before its feed appends a day.
Then, in a fresh working directory (outputs, MLflow store, any cache start empty):

1. ``first``: the first served day, cold (nothing cached yet);
2. ``next day``: the next day, the files unchanged since (warm);
3. ``append``: one day of rows appended to every data file, then that day served
   (``--appends N``: N such days one after the other, ``append``, ``append 2``, ..., each its
   own sample); the feed writes append receipts (:mod:`features.append_receipts`) as
   volmargin's ingest does, unless ``--no-receipts`` (a feed that writes none);
4. ``cli append``: one more day appended, then ``volmargin serve --as-of D`` from a fresh
   interpreter (imports and MLflow setup included), wall time and peak memory.

Before each case the dirty pages are written back (``os.sync``, not timed, its seconds
recorded as ``sync_before_s``): served days are a day apart, so no serve should pay for the
write-back of the one before (at 10,000 assets it found little left to write: 0.0-0.4 s).
Cases 1-3 each run ``serving.serve.serve`` in an interpreter started before the clock (its
imports not timed), timed per step (lock + tracking setup, resolve model, load data, features,
load model, apply policy, publish) with the process's peak resident memory (``VmHWM``) before
and after. The disk under ``outputs/`` (by top-level folder) and ``mlruns/`` is measured after
each day, and the load average is recorded beside every figure (the machine may be shared).

Usage::

    .venv/bin/python -m benchmarks.serve_bench --assets 12
    .venv/bin/python -m benchmarks.serve_bench --assets 1000 [--data DIR] [--json out.json]
    .venv/bin/python -m benchmarks.serve_bench --assets 1000 --data DIR --appends 3
    .venv/bin/python -m benchmarks.serve_bench --assets 10000 --gzip
    .venv/bin/python -m benchmarks.serve_bench --assets 12 --forecaster ewma94 --tail fhs_garch
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

from benchmarks.machine import describe
from benchmarks.synthetic_universe import append_through, disk_bytes, hold_back, write_universe
from configs.schema import Config
from features.build import build_panel
from features.candle_cache import RACY_NS
from features.loaders import load_market
from features.schema import feature_view
from features.window import TrailingWindow, serve_columns, serve_panel
from models.backtest import backtest
from models.base import Forecaster
from models.registry import build_forecaster
from serving.apply import BUNDLE_FORMAT, bundle_forecasts
from serving.ops import registry
from serving.ops.tracking import setup

REPO = Path(__file__).resolve().parents[1]
MARKET = REPO / "data" / "market"
LAST = dt.date(2025, 6, 30)


def serve_days(appends: int = 1) -> list[dt.date]:
    """The served days, ending at :data:`LAST`: first, next day, ``appends`` appended days
    (in process), then one more appended day served by the CLI."""
    return [LAST - dt.timedelta(days=k) for k in range(appends + 2, -1, -1)]


def fit_cutoff(appends: int = 1) -> dt.date:
    """The registered model's fit cutoff: the day before the first served day."""
    return serve_days(appends)[0] - dt.timedelta(days=1)


DAYS = serve_days()   # first, next day, append, cli
FIT_CHUNK = 100   # assets per fit of a per-asset model at registration


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def bench_config(work: Path, data_dir: Path, oos_start: str, forecaster: str,
                 stress_lookback: int | None) -> Config:
    """Default config, outputs under ``work``, short backtest: registration is not what is
    timed here, serving is."""
    overrides: dict[str, object] = {
        "paths.data_dir": str(data_dir), "paths.outputs_dir": str(work / "outputs"),
        "paths.mlruns_dir": str(work / "mlruns"), "models.enabled": [forecaster],
        "backtest.oos_start": oos_start, "backtest.refit_every": 365,
        "backtest.min_train_days": 365, "policy.fhs_min_obs": 60,
    }
    if stress_lookback is not None:
        overrides["policy.stress_lookback_days"] = stress_lookback
    return Config().with_overrides(overrides)


def fitted_state(alias: str, cfg: Config, features: pd.DataFrame) -> dict[str, object]:
    """The state of ``alias`` fitted on ``features``; a per-asset model (whose fit of an asset
    reads only that asset's rows, as its walk-forward relies on) is fitted on
    :data:`FIT_CHUNK` assets at a time and the per-asset parameters merged: the same state
    without scanning the whole panel once per asset."""
    def make() -> Forecaster:
        return build_forecaster(alias, cfg.models, cfg.backtest.horizons)

    if not getattr(make(), "per_asset", False):
        return make().fit(features).state()
    names = list(features.index.get_level_values("asset").unique())
    states = [make().fit(features.loc[names[i:i + FIT_CHUNK]]).state()
              for i in range(0, len(names), FIT_CHUNK)]
    params = [st.get("params") for st in states]
    if not all(isinstance(p, dict) and set(p) <= set(names) for p in params):
        return make().fit(features).state()        # parameters not keyed by asset
    return {**states[0], "params": {a: v for p in params for a, v in p.items()}}


def tail_columns(tail: str, cfg: Config, forecaster: dict[str, object]
                 ) -> frozenset[str] | None:
    """The columns a serve of a ``tail``-driven bundle on ``forecaster`` (a state) reads, as
    :func:`features.window.serve_columns` says from an unfitted probe of the tail model."""
    from models.tail.registry import build_tail_forecaster

    probe = build_tail_forecaster(tail, cfg.tail, cfg.features.update_interval_days,
                                  cfg.models)
    section = getattr(cfg.tail, tail)
    state: dict[str, object] = {"kind": getattr(probe, "kind", ""),
                                "config": section.model_dump(mode="json")}
    variance = getattr(section, "variance_model", None)
    if variance is not None:
        state["variance_state"] = build_forecaster(variance, cfg.models, [1]).state()
    return serve_columns({"forecaster": forecaster, "config": cfg.resolved(),
                          "tail": {"state": state}})


def tail_entry(tail: str, cfg: Config, features: pd.DataFrame, cutoff: dt.date
               ) -> dict[str, object]:
    """A tail-driven bundle's ``tail`` entry (:mod:`serving.tail_source`): the tail model
    ``tail`` fitted on ``features`` (every asset with ``tail.min_train_days``), at
    ``policy.confidence``, without stored forecasts (every served day is after the cutoff)."""
    from models.tail.base import TAIL_COLUMNS
    from serving.tail_source import refitted_entry

    return refitted_entry(tail, cfg, features, pd.Timestamp(cutoff),
                          pd.DataFrame(columns=TAIL_COLUMNS))


def register_quickly(cfg: Config, forecaster: str, cache: Path,
                     cutoff: dt.date | None = None, tail: str | None = None
                     ) -> dict[str, object]:
    """Register a ``forecaster`` policy fitted through ``cutoff`` (default
    :func:`fit_cutoff`) as @champion (data read through the validated-candle cache
    ``cache``); with ``tail``, a tail-driven policy whose MMF tail is that tail model's ES
    (``forecaster`` then its σ model, as ``ewma94`` is in the pipeline)."""
    cutoff = cutoff or fit_cutoff()
    setup(cfg)
    bt = cfg.backtest
    marks = [("load", time.perf_counter())]
    market = load_market(cfg.paths.data_dir, cfg.data.assets, cutoff, cache=cache)
    marks.append(("features", time.perf_counter()))
    probe = build_forecaster(forecaster, cfg.models, bt.horizons)
    # the columns a serve of this forecaster reads are those its fit and walk-forward read
    # (regressors, rv for targets and plausibility): built for every asset at once when the
    # fast builder covers them, the whole per-asset panel otherwise
    try:
        state = probe.state()
    except RuntimeError:  # a learnt forecaster has no state before its fit (gbm_sklearn,
        state = None      # the networks): its serve builds the whole per-asset panel anyway
    columns = (None if state is None
               else serve_columns({"forecaster": state, "config": cfg.resolved()})
               if tail is None else tail_columns(tail, cfg, state))
    if columns is not None:
        panel, _ = serve_panel(market, cfg.features, cutoff, TrailingWindow(None, None, {}),
                               columns)
    else:
        panel = build_panel(market, cfg.features)
    marks.append(("walk-forward", time.perf_counter()))
    # failed (model, asset) pairs dropped, as the pipeline does: a synthetic asset may have an
    # implausible forecast, and registration is not what is measured here
    forecasts = backtest(lambda: build_forecaster(forecaster, cfg.models, bt.horizons),
                         panel, bt.oos_start, bt.refit_every, bt.horizons, bt.min_train_days,
                         plausibility=bt.plausibility, chunk_assets=bt.chunk_assets).forecasts
    marks.append(("fit + register", time.perf_counter()))
    bundle = {"format": BUNDLE_FORMAT, "forecaster": fitted_state(forecaster, cfg,
                                                                  feature_view(panel)),
              "fit_cutoff": cutoff.isoformat(), "config": cfg.resolved(),
              "forecasts": bundle_forecasts(forecasts, cfg.features.update_interval_days)}
    if tail is not None:
        bundle["tail"] = tail_entry(tail, cfg, feature_view(panel), cutoff)
    with mlflow.start_run(run_name="register-bench"):
        info = registry.log_policy_model(bundle)
    name = cfg.registry.model_name
    version = registry.register(info.model_uri, name, {
        "forecaster": forecaster, **({"tail_model": tail} if tail else {})})
    registry.set_alias(name, registry.CHAMPION, version, "serve benchmark")
    marks.append(("end", time.perf_counter()))
    return {"model_version": version, "panel_columns": len(panel.columns),
            "fast_columns": columns is not None, "load_average": load_average(),
            **{f"{a}_s": round(t1 - t0, 1) for (a, t0), (_, t1) in itertools.pairwise(marks)}}


def _vmhwm_mib() -> float:
    """This process's peak resident memory since its ``exec`` (MiB): ``VmHWM``, not
    ``ru_maxrss``, which keeps the high-water mark of the parent copy it was forked from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return float("nan")


def serve_in_process(cfg: Config, as_of: dt.date) -> dict[str, object]:
    """One serve in this (fresh) process: seconds per step, total, peak memory."""
    import serving.serve as serve_module

    marks: list[tuple[str, float]] = []
    before, load_before = _vmhwm_mib(), load_average()
    start = time.perf_counter()
    result = serve_module.serve(cfg, as_of, today=LAST + dt.timedelta(days=1),
                                progress=lambda step, d, t: marks.append(
                                    (step, time.perf_counter())))
    end = time.perf_counter()
    steps = {"lock + tracking setup": round(marks[0][1] - start, 3) if marks else None}
    steps |= {name: round(nxt - at, 3)
              for (name, at), (_, nxt) in zip(marks, [*marks[1:], ("end", end)], strict=True)}
    return {"as_of": as_of.isoformat(), "total_s": round(end - start, 3),
            "assets": len(result.parameters), "fallbacks": len(result.fallback_assets),
            "stale": len(result.stale_assets), "updates": len(result.updates),
            "vmhwm_before_mib": before, "vmhwm_mib": _vmhwm_mib(),
            "load_average_before": load_before, "load_average_after": load_average(), **steps}


def _in_child(work: Path, args: argparse.Namespace, data_dir: Path, oos_start: str,
              what: list[str]) -> dict[str, object]:
    """Run this script with ``what`` in a fresh interpreter; its last stdout line (JSON)."""
    extra = ["--stress-lookback", str(args.stress_lookback)] if args.stress_lookback else []
    extra += ["--appends", str(args.appends)]
    extra += ["--tail", args.tail] if args.tail else []
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_bench", *what,
         "--work", str(work), "--forecaster", args.forecaster, "--data", str(data_dir),
         "--oos-start", oos_start, *extra], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(what)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed_child(work: Path, args: argparse.Namespace, data_dir: Path, oos_start: str,
                as_of: dt.date) -> dict[str, object]:
    """:func:`serve_in_process` in a fresh interpreter (its imports are not timed)."""
    return _in_child(work, args, data_dir, oos_start, ["--child", as_of.isoformat()])


def timed_cli(work: Path, cfg: Config, as_of: dt.date) -> dict[str, object]:
    """``volmargin serve`` in a fresh interpreter: wall seconds and peak memory (MiB)."""
    env = {**os.environ, "VOLMARGIN__PATHS__DATA_DIR": str(cfg.paths.data_dir),
           "VOLMARGIN__PATHS__OUTPUTS_DIR": str(cfg.paths.outputs_dir),
           "VOLMARGIN__PATHS__MLRUNS_DIR": str(cfg.paths.mlruns_dir),
           "VOLMARGIN__POLICY__STRESS_LOOKBACK_DAYS": str(cfg.policy.stress_lookback_days)}
    # /usr/bin/time reports the peak of the process it starts (a child's ru_maxrss would
    # include this driver's memory, copied at fork)
    timer = ["/usr/bin/time", "-f", "%M"] if Path("/usr/bin/time").is_file() else []
    load_before = load_average()
    start = time.perf_counter()
    done = subprocess.run([*timer, sys.executable, "-m", "pipelines.cli", "serve", "--as-of",
                           as_of.isoformat(), "--quiet", "--config",
                           str(REPO / "configs" / "default.yaml")], cwd=work, env=env,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"volmargin serve --as-of {as_of} failed: {done.stderr[-2000:]}")
    peak = done.stderr.strip().splitlines()[-1] if timer else "nan"
    return {"as_of": as_of.isoformat(), "wall_s": round(wall, 3),
            "maxrss_mib": round(float(peak) / 1024.0, 1), "load_average_before": load_before,
            "load_average_after": load_average()}


def disk(outputs: Path, mlruns: Path, after: str) -> dict[str, object]:
    """MiB under ``outputs/`` (total and by folder) and ``mlruns/``, and of the candle cache's
    entries its index references (``cache_live_mib``: the rest are superseded versions kept
    for their grace period, deleted by a later load)."""
    parts = {p.name: round(disk_bytes(p) / 2**20, 3) if p.is_dir() else 0.0
             for p in sorted(outputs.iterdir())} if outputs.is_dir() else {}
    total = disk_bytes(outputs) if outputs.is_dir() else 0
    cache = outputs / "cache" / "candles"
    try:
        index = json.loads((cache / "index.json").read_bytes())
        live = {f["entry"] for f in index["files"].values()}
        live_bytes = sum(p.stat().st_size for p in (cache / "entries").glob("*/*.npy")
                         if p.name in live)
    except (OSError, ValueError, KeyError, TypeError):
        live_bytes = 0
    cached = disk_bytes(outputs / "cache") if (outputs / "cache").is_dir() else 0
    return {"after": after, "outputs_mib": round(total / 2**20, 3), "outputs_by_folder": parts,
            "cache_live_mib": round(live_bytes / 2**20, 3),
            # published files plus the live cache: what stays once each grace period is over
            "outputs_steady_mib": round((total - cached + live_bytes) / 2**20, 3),
            "mlruns_mib": round(disk_bytes(mlruns) / 2**20, 3) if mlruns.is_dir() else 0.0}


def bench_universe(name: str, work: Path, data_dir: Path, oos_start: str,
                   args: argparse.Namespace) -> dict[str, object]:
    cfg = bench_config(work, data_dir, oos_start, args.forecaster, args.stress_lookback)
    out: dict[str, object] = {"universe": name, "forecaster": args.forecaster,
                              "tail": args.tail,
                              "stress_lookback_days": cfg.policy.stress_lookback_days}
    # registration reads the data through its own cache beside the data directory (a rerun
    # on the same universe skips parsing); the serves' cache is under outputs/, empty
    # in its own interpreter: what it loaded (14 GiB at 10,000 assets) is given back to the
    # system before the serves run, instead of staying in this driver's heap beside them
    out["register"] = _in_child(work, args, data_dir, oos_start, ["--register"])
    print(json.dumps(out["register"]), flush=True)
    days = serve_days(args.appends)
    held = hold_back(data_dir, days[1])
    try:
        if not any(days[-1].isoformat().encode() in rows for rows in held.values()):
            raise RuntimeError(f"{data_dir} does not reach {days[-1]}: write the data again")
        return out | _serve_days(work, data_dir, oos_start, args, cfg, held)
    finally:  # a reused data directory ends as it began
        append_through(held, days[-1])


def _serve_days(work: Path, data_dir: Path, oos_start: str, args: argparse.Namespace,
                cfg: Config, held: dict[Path, bytes]) -> dict[str, object]:
    out: dict[str, object] = {}
    outputs, mlruns = work / "outputs", work / "mlruns"
    sizes = [disk(outputs, mlruns, "register")]
    serves = {}
    days = serve_days(args.appends)
    cases = ["first", "next day", "append", *(f"append {k}" for k in range(2, args.appends + 1))]
    receipts = None if args.no_receipts else data_dir
    for case, day in zip(cases, days[:-1], strict=True):
        if case.startswith("append"):
            feed(held, day, receipts)
        synced = settle()
        serves[case] = timed_child(work, args, data_dir, oos_start, day) | synced
        sizes.append(disk(outputs, mlruns, f"serve {day}"))
        print(json.dumps({case: serves[case]}), flush=True)
    feed(held, days[-1], receipts)
    synced = settle()
    serves["cli append"] = timed_cli(work, cfg, days[-1]) | synced
    print(json.dumps({"cli append": serves["cli append"]}), flush=True)
    sizes.append(disk(outputs, mlruns, f"cli serve {days[-1]}"))
    out["serves"], out["disk"] = serves, sizes
    # growth after the first serve, superseded cache entries left out: they are deleted by
    # the first load more than GC_GRACE_S after them (the next day's, in a daily schedule)
    grown = sizes[-1]["outputs_steady_mib"] - sizes[1]["outputs_steady_mib"]
    per_day = grown / (len(sizes) - 2)
    out["outputs_mib_per_day"] = round(per_day, 3)
    out["outputs_mib_per_year_extrapolated"] = round(365 * per_day, 1)
    return out


def settle() -> dict[str, float]:
    """Write the dirty pages back before a serve (not timed): served days are a day apart,
    and the first serve leaves up to 15.6 GiB of cache entries (10,000 assets) that the
    kernel would otherwise write back during the next one. Returns how long it took."""
    start = time.perf_counter()
    os.sync()
    return {"sync_before_s": round(time.perf_counter() - start, 2)}


def feed(held: dict[Path, bytes], day: dt.date, receipts: Path | None) -> None:
    """The daily feed: append ``day``'s rows (with append receipts unless ``receipts`` is
    None), then wait out the cache's racy window (:data:`features.candle_cache.RACY_NS`: a
    file changed less than 2 s before a load is hashed whatever its receipts say) as a
    scheduled serve, minutes after its ingest, does."""
    append_through(held, day, receipts)
    time.sleep(RACY_NS / 1e9)


def universe(args: argparse.Namespace, work: Path) -> tuple[str, Path, str, dict[str, object]]:
    """(name, data directory, walk-forward start, how it was made) of the benchmarked data."""
    if args.assets == 12:
        data = work / "market"
        shutil.copytree(MARKET, data)        # hold_back cuts files: never the embedded ones
        return "embedded 12 assets", data, "2024-07-01", {}
    data = args.data or work / "market"
    made: dict[str, object] = {"load_average": load_average()}
    if args.data is None or not (data / "crypto" / "daily").is_dir():
        start = time.perf_counter()
        write_universe(data, args.assets, "2022-07-01", end=LAST.isoformat(),
                       compress=args.gzip)
        made["write_s"] = round(time.perf_counter() - start, 1)
    found = len(list((data / "crypto" / "daily").glob("S*.csv*")))
    if found != args.assets:
        raise SystemExit(f"{data} holds {found} synthetic assets, not {args.assets}")
    crypto = disk_bytes(data / "crypto")
    made |= {"crypto_mib": round(crypto / 2**20, 1),
             "mib_per_asset": round(crypto / args.assets / 2**20, 3)}
    return f"synthetic {args.assets} assets", data, "2025-01-01", made


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=12, help="12 = the embedded data")
    parser.add_argument("--forecaster", default="har_rv")
    parser.add_argument("--stress-lookback", type=int, default=None)
    parser.add_argument("--work", type=Path, default=None, help="outputs and mlruns here")
    parser.add_argument("--data", type=Path, default=None,
                        help="synthetic universe to use (written there if absent); it is cut "
                             "and appended to again, so it ends as it began")
    parser.add_argument("--gzip", action="store_true", help="write the universe as .csv.gz")
    parser.add_argument("--appends", type=int, default=1,
                        help="appended days served in process (each its own sample)")
    parser.add_argument("--no-receipts", action="store_true",
                        help="the feed writes no append receipts: the cache proves each grown "
                             "file by reading and hashing it whole")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--oos-start", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tail", default=None,
                        help="a tail-driven policy: this tail model's ES drives MMF "
                             "(e.g. fhs_ewma; --forecaster is then its σ model, ewma94)")
    parser.add_argument("--register", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.register:  # the registration, in a fresh interpreter (see bench_universe)
        cfg = bench_config(args.work, args.data, args.oos_start, args.forecaster,
                           args.stress_lookback)
        cache = args.data.with_name(args.data.name + ".register-cache")
        print(json.dumps(register_quickly(cfg, args.forecaster, cache,
                                          fit_cutoff(args.appends), args.tail)))
        return
    if args.child:  # one in-process serve, in a fresh interpreter (see timed_child)
        cfg = bench_config(args.work, args.data, args.oos_start, args.forecaster,
                           args.stress_lookback)
        print(json.dumps(serve_in_process(cfg, dt.date.fromisoformat(args.child))))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="volmargin-serve-bench-"))
    print(f"machine: {describe()}; load average {load_average()}; work dir {work}", flush=True)
    name, data, oos_start, made = universe(args, work)
    print(json.dumps({"data": str(data), **made}), flush=True)
    result = {"machine": describe(), "data": made, "receipts": not args.no_receipts,
              **bench_universe(name, work, data, oos_start, args)}
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""How long ``volmargin serve`` takes and how much memory and disk it uses: the embedded 12
assets and synthetic universes of N assets (daily and hourly candles,
:func:`benchmarks.synthetic_universe.write_universe`).

For each universe a policy is registered quickly (``--forecaster``, default ``har_rv``):
features, a short walk-forward (one refit) for the out-of-sample FHS history, a fit on the data
through the day before the first served day, bundle, register, @champion, with the same
building blocks as ``pipelines.steps.step_register`` but without the model comparison and
policy backtest (registration is not what is timed). Then consecutive days are served:

* in process (``serving.serve.serve``), each in its own interpreter started before the clock
  (imports not timed), step by step (resolve model, load data, features, load model, apply
  policy, publish), with that process's peak resident memory (``ru_maxrss``);
* as the timer runs it: ``volmargin serve --as-of D`` in a fresh interpreter (imports
  included), wall time and peak memory, for the last day;

and the disk left under ``outputs/`` (and ``mlruns/``) after each day is measured.

Features are built over the trailing window that the served model's config needs
(:mod:`features.window`); ``--stress-lookback`` overrides ``policy.stress_lookback_days``
(default 3650 days, which is longer than any universe here: the window is then the whole
history) to show what a shorter window saves. ``garch11_t`` reads its whole return history,
so with it nothing is ever cut.

Usage::

    .venv/bin/python -m benchmarks.serve_bench --assets 12          # embedded data, ~1 min
    .venv/bin/python -m benchmarks.serve_bench --assets 1000 --serves 2  # ~45 min on 2 cores
    .venv/bin/python -m benchmarks.serve_bench --assets 1000 --stress-lookback 365
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow

from benchmarks.synthetic_universe import write_universe
from configs.schema import Config
from features.loaders import load_market
from features.schema import feature_view
from features.store import load_or_build
from models.backtest import backtest
from models.registry import build_forecaster
from serving.apply import BUNDLE_FORMAT, bundle_forecasts
from serving.ops import registry
from serving.ops.tracking import setup

REPO = Path(__file__).resolve().parents[1]
MARKET = REPO / "data" / "market"
LAST = dt.date(2025, 6, 30)
DAYS = [LAST - dt.timedelta(days=k) for k in (3, 2, 1, 0)]  # 3 in process, the last by CLI
FIT_CUTOFF = DAYS[0] - dt.timedelta(days=1)


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


def register_quickly(cfg: Config, forecaster: str) -> str:
    """Register a ``forecaster`` policy fitted through :data:`FIT_CUTOFF` as @champion."""
    setup(cfg)
    bt = cfg.backtest
    market = load_market(cfg.paths.data_dir, cfg.data.assets, FIT_CUTOFF)
    panel, _, _ = load_or_build(market, cfg.features, Path(cfg.paths.outputs_dir) / "features",
                                persist=False)
    # failed (model, asset) pairs dropped, as the pipeline does: a synthetic asset may have an
    # implausible forecast, and registration is not what is measured here
    forecasts = backtest(lambda: build_forecaster(forecaster, cfg.models, bt.horizons),
                         panel, bt.oos_start, bt.refit_every, bt.horizons, bt.min_train_days,
                         plausibility=bt.plausibility).forecasts
    features = feature_view(panel)
    model = build_forecaster(forecaster, cfg.models, bt.horizons).fit(features)
    bundle = {"format": BUNDLE_FORMAT, "forecaster": model.state(),
              "fit_cutoff": FIT_CUTOFF.isoformat(), "config": cfg.resolved(),
              "forecasts": bundle_forecasts(forecasts, cfg.features.update_interval_days)}
    with mlflow.start_run(run_name="register-bench"):
        info = registry.log_policy_model(bundle)
    name = cfg.registry.model_name
    version = registry.register(info.model_uri, name, {"forecaster": forecaster})
    registry.set_alias(name, registry.CHAMPION, version, "serve benchmark")
    return version


def _maxrss_mib() -> float:
    """This process's peak resident memory since its ``exec`` (MiB).

    ``VmHWM`` (Linux), not ``ru_maxrss``: the latter keeps the high-water mark of the parent
    copy the process was forked from, i.e. the benchmark driver's memory.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def serve_in_process(cfg: Config, as_of: dt.date, full: bool = False) -> dict[str, object]:
    """One serve in this (fresh) process: seconds per step, total, peak RSS, trimmed window.

    ``full``: build every column over the whole history, as before :mod:`features.window`
    (the comparison run; in memory too, so it is the build time that differs).
    """
    import serving.serve as serve_module
    from features.window import TrailingWindow

    windows: list[object] = []
    real_window = serve_module.bundle_window

    def spy(*args: object) -> object:
        windows.append(TrailingWindow(None, None, {}) if full
                       else real_window(*args))  # type: ignore[arg-type]
        return windows[-1]

    serve_module.bundle_window = spy  # type: ignore[assignment]
    marks: list[tuple[str, float]] = []
    before = _maxrss_mib()
    start = time.perf_counter()
    # force: the comparison runs re-serve a published day (a revision when content differs)
    result = serve_module.serve(cfg, as_of, today=LAST + dt.timedelta(days=1), force=True,
                                progress=lambda step, d, t: marks.append(
                                    (step, time.perf_counter())))
    end = time.perf_counter()
    steps = {"lock + tracking setup": round(marks[0][1] - start, 3) if marks else None}
    steps |= {name: round(nxt - at, 3)
              for (name, at), (_, nxt) in zip(marks, [*marks[1:], ("end", end)], strict=True)}
    window = windows[0] if windows else None
    return {"as_of": as_of.isoformat(), "full_rebuild": full, "total_s": round(end - start, 3),
            "assets": len(result.parameters), "fallbacks": len(result.fallback_assets),
            "updates": len(result.updates), "window_days": getattr(window, "days", None),
            "window_binding": getattr(window, "binding", None),
            "tail_days": getattr(window, "tail_days", None),
            "maxrss_before_mib": before, "maxrss_mib": _maxrss_mib(), **steps}


def _child_args(args: argparse.Namespace, data_dir: Path, oos_start: str) -> list[str]:
    extra = ["--stress-lookback", str(args.stress_lookback)] if args.stress_lookback else []
    return ["--forecaster", args.forecaster, "--data-dir", str(data_dir), "--oos-start",
            oos_start, *extra]


def timed_child(work: Path, args: argparse.Namespace, data_dir: Path, oos_start: str,
                as_of: dt.date, full: bool = False) -> dict[str, object]:
    """:func:`serve_in_process` in a fresh interpreter (its imports are not timed)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_bench", "--child", as_of.isoformat(),
         "--work", str(work), *_child_args(args, data_dir, oos_start),
         *(["--full-rebuild"] if full else [])],
        cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed_cli(work: Path, cfg: Config, as_of: dt.date) -> dict[str, float]:
    """``volmargin serve`` in a fresh interpreter: wall seconds and peak RSS (MiB)."""
    env = {**os.environ, "VOLMARGIN__PATHS__DATA_DIR": str(cfg.paths.data_dir),
           "VOLMARGIN__PATHS__OUTPUTS_DIR": str(cfg.paths.outputs_dir),
           "VOLMARGIN__PATHS__MLRUNS_DIR": str(cfg.paths.mlruns_dir),
           "VOLMARGIN__POLICY__STRESS_LOOKBACK_DAYS": str(cfg.policy.stress_lookback_days)}
    # /usr/bin/time reports the peak of the process it starts; ru_maxrss of our own child
    # would include this driver's memory, copied at fork (see _maxrss_mib)
    timer = ["/usr/bin/time", "-f", "%M"] if Path("/usr/bin/time").is_file() else []
    start = time.perf_counter()
    done = subprocess.run([*timer, sys.executable, "-m", "pipelines.cli", "serve", "--as-of",
                           as_of.isoformat(), "--quiet", "--config",
                           str(REPO / "configs" / "default.yaml")], cwd=work, env=env,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"volmargin serve --as-of {as_of} failed: {done.stderr[-2000:]}")
    peak = done.stderr.strip().splitlines()[-1] if timer else "nan"
    return {"wall_s": round(wall, 3), "maxrss_mib": round(float(peak) / 1024.0, 1)}


def disk_mib(path: Path) -> float:
    """Bytes of regular files under ``path``, in MiB."""
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
    return round(total / 2**20, 3)


def bench_universe(name: str, work: Path, data_dir: Path, oos_start: str,
                   args: argparse.Namespace) -> dict[str, object]:
    cfg = bench_config(work, data_dir, oos_start, args.forecaster, args.stress_lookback)
    start = time.perf_counter()
    version = register_quickly(cfg, args.forecaster)
    out: dict[str, object] = {"universe": name, "forecaster": args.forecaster,
                              "stress_lookback_days": cfg.policy.stress_lookback_days,
                              "register_s": round(time.perf_counter() - start, 1),
                              "model_version": version}
    outputs, mlruns = work / "outputs", work / "mlruns"
    disk = [{"after": "register", "outputs_mib": disk_mib(outputs),
             "mlruns_mib": disk_mib(mlruns)}]
    serves = []
    for day in DAYS[-1 - args.serves:-1]:
        serves.append(timed_child(work, args, data_dir, oos_start, day))
        disk.append({"after": f"serve {day}", "outputs_mib": disk_mib(outputs),
                     "mlruns_mib": disk_mib(mlruns)})
        print(json.dumps(serves[-1]), flush=True)
    out["serves"] = serves
    out["cli"] = timed_cli(work, cfg, DAYS[-1])
    disk.append({"after": f"cli serve {DAYS[-1]}", "outputs_mib": disk_mib(outputs),
                 "mlruns_mib": disk_mib(mlruns)})
    out["disk"] = disk
    # the same last day rebuilt over the whole history (a revision with the same content)
    out["full_rebuild"] = timed_child(work, args, data_dir, oos_start, DAYS[-1], full=True)
    print(json.dumps(out["full_rebuild"]), flush=True)
    per_day = (disk[-1]["outputs_mib"] - disk[1]["outputs_mib"]) / (len(disk) - 2)
    out["outputs_mib_per_day"] = round(per_day, 3)
    out["outputs_mib_per_year_extrapolated"] = round(365 * per_day, 1)
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=12, help="12 = the embedded data")
    parser.add_argument("--forecaster", default="har_rv")
    parser.add_argument("--stress-lookback", type=int, default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep outputs here")
    parser.add_argument("--serves", type=int, default=3, choices=[1, 2, 3],
                        help="in-process serves before the CLI one")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--full-rebuild", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--oos-start", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one in-process serve, in a fresh interpreter (see timed_child)
        cfg = bench_config(args.work, args.data_dir, args.oos_start, args.forecaster,
                           args.stress_lookback)
        print(json.dumps(serve_in_process(cfg, dt.date.fromisoformat(args.child),
                                          args.full_rebuild)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="volmargin-serve-bench-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}; load average {os.getloadavg()}; work dir {work}",
          flush=True)
    if args.assets == 12:
        result = bench_universe("embedded 12 assets", work, MARKET, "2024-07-01", args)
    else:
        start = time.perf_counter()
        data = work / "market"
        daily = data / "crypto" / "daily"
        if not (daily.is_dir() and len(list(daily.glob("S*.csv.gz"))) == args.assets):
            write_universe(data, args.assets, "2022-07-01", end=LAST.isoformat())
        print(f"synthetic data: {args.assets} assets (daily + hourly) written or found in "
              f"{time.perf_counter() - start:.1f} s, {disk_mib(data):.0f} MiB", flush=True)
        result = bench_universe(f"synthetic {args.assets} assets", work, data, "2025-01-01",
                                args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

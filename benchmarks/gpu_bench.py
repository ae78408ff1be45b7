"""The Lightning networks on a GPU against a CPU (``python -m benchmarks.gpu_bench``).

Each network is fitted as the walk-forward fits it — ``accelerator: auto``, so on a GPU in its
``gpu_precision`` (float32 unless ``--gpu-precision`` says otherwise) and in float32 on one CPU
thread where CUDA sees none — on the embedded data up to the end of the
selection period (2023-06-30), then forecasts every evaluation-period cutoff (2023-07-01 →
2025-06-30) from that one fit:

* ``tail_nn`` (the 5-seed FZ0 ensemble): pooled FZ0 at 99 %, long and short;
* ``harx_mlp`` and ``mlp_har``: mean QLIKE at 1 and 7 days;
* ``harx_mlp`` and ``mlp_har`` on the panel tiled ``--tile`` times (each asset copied under new
  names, 888,000 rows at 48 up to 2023-06-30: a 1,000-asset refit in size): fit time only.

The fit and forecast times are wall seconds; the first fit of a process pays CUDA's start, so
a small fit runs first, untimed. Run it once as it is (``--gpu-precision`` for another precision
than the configured float32) and once with ``CUDA_VISIBLE_DEVICES=`` (the CPU baseline on the
same machine), each writing ``--json``; ``--compare CPU GPU`` prints
the table of both with the forecasts' differences (each run writes its forecasts beside its
JSON). ``--dask`` also fits ``mlp_har`` inside a one-worker Dask ``LocalCluster`` and reports
the accelerator Lightning's ``auto`` picks there and whether the forecasts equal the in-process
fit's.

    python -m benchmarks.gpu_bench --save-panel panel.parquet          # build the panel once
    CUDA_VISIBLE_DEVICES= python -m benchmarks.gpu_bench --panel panel.parquet --json cpu.json
    python -m benchmarks.gpu_bench --panel panel.parquet --json gpu.json --dask
    python -m benchmarks.gpu_bench --compare cpu.json gpu.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import Config

SELECTION_END = pd.Timestamp("2023-06-30")
EVALUATION = (pd.Timestamp("2023-07-01"), pd.Timestamp("2025-06-30"))
VARIANCE_NETS = ("harx_mlp", "mlp_har")


def environment(cfg: Config) -> dict[str, Any]:
    import lightning
    import torch

    from benchmarks.machine import describe

    cuda = torch.cuda.is_available()
    return {"machine": describe(), "torch": torch.__version__,
            "lightning": lightning.__version__, "pandas": pd.__version__,
            "numpy": np.__version__, "cuda": cuda,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "precision": cfg.models.mlp_har.gpu_precision if cuda else "32-true",
            "cpus": os.cpu_count()}


def tiled(panel: pd.DataFrame, copies: int) -> pd.DataFrame:
    """``panel`` with every asset copied ``copies`` times under new names (``BTC~07``)."""
    assets = panel.index.get_level_values("asset").astype(str)
    dates = panel.index.get_level_values("date")
    blocks = []
    for k in range(copies):
        block = panel.copy()
        block.index = pd.MultiIndex.from_arrays([assets + f"~{k:02d}", dates],
                                                names=["asset", "date"])
        blocks.append(block)
    return pd.concat(blocks).sort_index()


def digest(frame: pd.DataFrame, columns: list[str]) -> str:
    values = np.ascontiguousarray(frame[columns].to_numpy(dtype=np.float64))
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]


def variance_case(alias: str, panel: pd.DataFrame, cfg: Config, score: bool
                  ) -> tuple[dict[str, Any], pd.DataFrame | None]:
    from features.schema import feature_view
    from models.registry import build_forecaster
    from pipelines.evaluation.evaluate import scored

    horizons = cfg.backtest.horizons
    features = feature_view(panel)
    upto = features[features.index.get_level_values("date") <= SELECTION_END]
    model = build_forecaster(alias, cfg.models, horizons)
    start = time.perf_counter()
    model.fit(upto)
    row: dict[str, Any] = {"fit_s": round(time.perf_counter() - start, 2), "rows": len(upto)}
    if not score:
        return row, None
    dates = panel.index.get_level_values("date")
    cutoffs = pd.DatetimeIndex(sorted(set(dates[(dates >= EVALUATION[0])
                                                & (dates <= EVALUATION[1])])))
    start = time.perf_counter()
    fc = model.forecast(features, horizons, cutoffs)
    row["forecast_s"] = round(time.perf_counter() - start, 2)
    s = scored({alias: fc}, panel)
    for h, g in s.groupby("horizon_days"):
        row[f"qlike_h{h}"] = round(float(g["qlike"].mean()), 5)
    fc = fc.sort_values(["asset", "cutoff", "horizon_days"]).reset_index(drop=True)
    row["forecasts"], row["digest"] = len(fc), digest(fc, ["variance"])
    return row, fc


def tail_case(panel: pd.DataFrame, cfg: Config) -> tuple[dict[str, Any], pd.DataFrame]:
    from features.schema import feature_view
    from models.tail.registry import build_tail_forecaster
    from pipelines.evaluation import tail_compare as tc

    features = feature_view(panel)
    upto = features[features.index.get_level_values("date") <= SELECTION_END]
    model = build_tail_forecaster("tail_nn", cfg.tail, cfg.features.update_interval_days,
                                  cfg.models)
    start = time.perf_counter()
    model.fit(upto)
    seconds = time.perf_counter() - start
    rows, epochs = model.fit_stats["train_rows"], model.fit_stats["epochs"]
    row: dict[str, Any] = {"fit_s": round(seconds, 2), "train_rows": rows,
                           "epochs_all_nets": epochs,
                           "rows_epochs_per_s": round(rows * epochs / seconds),
                           "weight_decay": model.chosen["weight_decay"],
                           "recency_half_life": model.chosen["recency_half_life"]}
    dates = features.index.get_level_values("date")
    cutoffs = pd.DatetimeIndex(sorted(set(dates[(dates >= EVALUATION[0])
                                                & (dates <= EVALUATION[1])])))
    start = time.perf_counter()
    fc = model.forecast_tail(features, cutoffs=cutoffs)
    row["forecast_s"] = round(time.perf_counter() - start, 2)
    fc = fc.assign(model="tail_nn")
    table = tc.fz0_table(tc.period(tc.score(fc, panel, cfg.tail.tail_nn.loss_variant),
                                   *EVALUATION))
    for r in table[np.isclose(table["level"], 0.99)].itertuples():
        row[f"fz0_99_{r.side}"] = round(float(r.fz0), 5)
    fc = fc.sort_values(["asset", "cutoff", "side", "level"]).reset_index(drop=True)
    row["forecasts"], row["digest"] = len(fc), digest(fc, ["var", "es"])
    return row, fc


def _worker_fit(panel: pd.DataFrame, cfg: Config) -> dict[str, Any]:
    """Inside a Dask worker: the accelerator Lightning picks there, and ``mlp_har``'s fit."""
    import lightning.pytorch as pl
    import torch

    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    row, _ = variance_case("mlp_har", panel, cfg, score=True)
    return {"accelerator": type(trainer.accelerator).__name__,
            "cuda": torch.cuda.is_available(), "pid": os.getpid(), **row}


def dask_case(panel: pd.DataFrame, cfg: Config, local_digest: str) -> dict[str, Any]:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        row = client.submit(_worker_fit, panel, cfg, pure=False).result()
    row["same_forecasts_as_in_process"] = row["digest"] == local_digest
    row["driver_pid"] = os.getpid()
    return row


def with_precision(cfg: Config, precision: str | None) -> Config:
    """``cfg`` with every network's ``gpu_precision`` set (None: as configured)."""
    if precision is None:
        return cfg
    return cfg.with_overrides({f"{section}.gpu_precision": precision for section in
                               ("models.mlp_har", "models.harx_mlp", "tail.tail_nn")})


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = with_precision(Config(), args.gpu_precision)
    panel = pd.read_parquet(args.panel)
    out: dict[str, Any] = {"environment": environment(cfg), "panel_rows": len(panel)}
    print(json.dumps(out["environment"]), flush=True)
    forecasts: dict[str, pd.DataFrame] = {}
    small = panel[panel.index.get_level_values("asset") == "BTC"]
    start = time.perf_counter()  # CUDA's start and the first Lightning fit, untimed below
    try:
        variance_case("mlp_har", small[small.index.get_level_values("date") <= "2019-12-31"],
                      cfg, score=False)
        out["warm_up_s"] = round(time.perf_counter() - start, 2)
    except Exception as exc:  # recorded; the cases below say the rest
        out["warm_up_error"] = f"{type(exc).__name__}: {exc}"
    cases: list[tuple[str, Any]] = [("tail_nn", lambda: tail_case(panel, cfg))]
    cases += [(alias, lambda a=alias: variance_case(a, panel, cfg, score=True))
              for alias in VARIANCE_NETS]
    if args.tile > 1:
        big = tiled(panel, args.tile)
        cases += [(f"{alias}_x{args.tile}", lambda a=alias: variance_case(a, big, cfg, False))
                  for alias in VARIANCE_NETS]
    if args.dask:
        cases.append(("dask_worker", lambda: (dask_case(panel, cfg, out.get("mlp_har", {})
                                                        .get("digest", "")), None)))
    for name, case in cases:  # one failing case is recorded, the others still run
        try:
            row, fc = case()
        except Exception as exc:  # a benchmark reports what broke
            row, fc = {"error": f"{type(exc).__name__}: {exc}"}, None
        if fc is not None:
            forecasts[name] = fc
        out[name] = row
        print(json.dumps({name: row}), flush=True)
    if args.json:
        for name, fc in forecasts.items():
            fc.to_parquet(args.json.with_name(f"{args.json.stem}.{name}.parquet"))
    return out


def compare(cpu_path: Path, gpu_path: Path) -> str:
    """A Markdown table of both runs and the largest relative forecast differences."""
    cpu, gpu = (json.loads(p.read_text()) for p in (cpu_path, gpu_path))
    lines = [f"CPU run: {cpu['environment']['device']}, {cpu['environment']['precision']}; "
             f"GPU run: {gpu['environment']['device']}, {gpu['environment']['precision']} "
             f"(torch {gpu['environment']['torch']}, lightning "
             f"{gpu['environment']['lightning']})", "",
             "| case | CPU fit s | GPU fit s | speed-up | CPU score | GPU score |",
             "|---|---:|---:|---:|---|---|"]
    for case in [k for k in gpu if isinstance(gpu[k], dict) and k != "environment"]:
        c, g = cpu.get(case, {}), gpu[case]
        if "fit_s" not in c or "fit_s" not in g:
            lines.append(f"| {case} | {c.get('fit_s', c.get('error'))} | "
                         f"{g.get('fit_s', g.get('error'))} | | | |")
            continue
        scores = [k for k in c if k.startswith(("qlike", "fz0"))]
        cs = ", ".join(f"{k} {c[k]}" for k in scores)
        gs = ", ".join(f"{k} {g.get(k)}" for k in scores)
        speed = c["fit_s"] / g["fit_s"] if g.get("fit_s") else float("nan")
        lines.append(f"| {case} | {c['fit_s']} | {g.get('fit_s')} | {speed:.2f}x | {cs} | {gs} |")
    lines.append("")
    for name, columns in (("tail_nn", ["var", "es"]), ("harx_mlp", ["variance"]),
                          ("mlp_har", ["variance"])):
        paths = [p.with_name(f"{p.stem}.{name}.parquet") for p in (cpu_path, gpu_path)]
        if not all(p.is_file() for p in paths):
            lines.append(f"- {name}: no forecasts from one of the runs")
            continue
        a, b = (pd.read_parquet(p) for p in paths)
        keys = [k for k in ("asset", "cutoff", "horizon_days", "side", "level") if k in a]
        both = a.merge(b, on=keys, suffixes=("_cpu", "_gpu"))
        rel = np.max([np.abs(both[f"{c}_gpu"] / both[f"{c}_cpu"] - 1.0).max() for c in columns])
        med = np.median(np.concatenate([np.abs(both[f"{c}_gpu"] / both[f"{c}_cpu"] - 1.0)
                                        for c in columns]))
        lines.append(f"- {name}: {len(both)} forecasts in both, relative difference "
                     f"median {med:.2e}, largest {rel:.2e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel", type=Path, help="a stored feature panel (parquet)")
    parser.add_argument("--save-panel", type=Path,
                        help="build the panel from the embedded data and store it here")
    parser.add_argument("--tile", type=int, default=48)
    parser.add_argument("--dask", action="store_true")
    parser.add_argument("--gpu-precision", choices=["32-true", "bf16-mixed"], default=None,
                        help="every network's precision on a GPU (default: as configured)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("CPU", "GPU"))
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(*args.compare))
        return 0
    if args.save_panel:
        from benchmarks.run_all import DATA
        from features.build import build_panel
        from features.loaders import load_market

        build_panel(load_market(DATA), Config().features).to_parquet(args.save_panel)
        return 0
    if args.panel is None:
        parser.error("--panel is required (build one with --save-panel)")
    out = run(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

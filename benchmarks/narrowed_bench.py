"""The narrowed-comparison check (:func:`pipelines.evaluation.evaluate.narrowed_support`),
timed on synthetic forecasts: what the retrain's driver pays for it after the scores, in
serial time, at ``--assets`` assets × ``--models`` models × ``--days`` cutoffs × 2 horizons
(every model forecasting every pair on every day, so nothing is named: the cost of the check
itself). Best of ``--repeat``.

    python -m benchmarks.narrowed_bench --assets 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from benchmarks.machine import describe
from pipelines.evaluation.evaluate import narrowed_support


def forecasts(n: int, days: int, models: int) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """``models`` identical forecast frames and the loss table's ``n`` they would give."""
    names = [f"S{i:05d}" for i in range(n)]
    frame = pd.DataFrame({
        "asset": pd.array(np.repeat(names, days * 2), dtype="str"),
        "cutoff": np.tile(np.repeat(pd.date_range("2021-01-01", periods=days).to_numpy(), 2),
                          n),
        "horizon_days": np.tile([1, 7], n * days), "variance": 1.0})
    by_model = {f"m{k}": frame for k in range(models)}
    table = pd.DataFrame({"model": np.repeat(list(by_model), n * 2),
                          "asset": np.tile(np.repeat(names, 2), models),
                          "horizon_days": np.tile([1, 7], n * models), "n": days})
    return by_model, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--days", type=int, default=1400)
    parser.add_argument("--models", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    by_model, table = forecasts(args.assets, args.days, args.models)
    took = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        named = narrowed_support(by_model, table)
        took.append(time.perf_counter() - t)
    print(describe())
    print(f"{args.assets} assets x {args.models} models x {args.days} days x 2 horizons "
          f"({len(named)} named): best {min(took):.2f} s of {args.repeat}")


if __name__ == "__main__":
    main()

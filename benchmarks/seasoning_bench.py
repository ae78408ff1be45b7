"""The young-asset stress reference (:func:`serving.seasoning.reference`), timed on a synthetic
panel: what a policy replay over a universe of staggered listings pays before it starts, and
what the batch job pays for its as-of (:func:`serving.apply.reference_today`).

``--assets`` assets with exponential covered losses on every day from ``--start`` to
``--end``; every second asset is listed on a day drawn at random in the first ``--spread``
days (the others on the first day), so that some asset is young on most of those days and the
seasoned ones' stress ES is computed on each. Three confidence levels, as a forecaster's grid
is replayed. Seeded; best of ``--repeat``.

    python -m benchmarks.seasoning_bench --assets 1000
    python -m benchmarks.seasoning_bench --assets 1000 --spread 0     # listed at once
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from benchmarks.machine import describe
from configs.schema import Config
from serving.apply import reference_today
from serving.seasoning import reference


def panel(n: int, start: str, end: str, spread: int, seed: int = 0) -> pd.DataFrame:
    """The synthetic panel (module docstring), indexed by (asset, date)."""
    dates = pd.date_range(start, end)
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        first = int(rng.integers(0, spread)) if i % 2 and spread > 0 else 0
        d = dates[first:]
        frames.append(pd.DataFrame(
            {"worst_loss_long": rng.exponential(0.02, len(d)), "worst_loss_is_proxy": False,
             "close": 1.0},
            index=pd.MultiIndex.from_product([[f"S{i:05d}"], d], names=["asset", "date"])))
    return pd.concat(frames).sort_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--start", default="2022-07-01")
    parser.add_argument("--end", default="2025-06-30")
    parser.add_argument("--spread", type=int, default=700)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cfg = Config()
    frame = panel(args.assets, args.start, args.end, args.spread)
    cfgs = [cfg.policy.model_copy(update={"confidence": q}) for q in (0.975, 0.99, 0.995)]
    replay, served = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        ref = reference(frame, cfgs)[cfg.policy.loss]
        replay.append(time.perf_counter() - t)
        t = time.perf_counter()
        reference_today(frame, cfg, pd.Timestamp(args.end))
        served.append(time.perf_counter() - t)
    young = {k[1]: len(v[0]) for k, v in ref.tables.items()}
    print(describe())
    print(f"{args.assets} assets, {frame.index.get_level_values('date').nunique()} days, "
          f"listings spread over {args.spread} days; days with a young asset: {young}")
    print(f"replay reference (3 levels): best {min(replay):.2f} s of {args.repeat}")
    print(f"served reference (as-of):    best {min(served) * 1000:.0f} ms of {args.repeat}")


if __name__ == "__main__":
    main()

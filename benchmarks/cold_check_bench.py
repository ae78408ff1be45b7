"""The load right after a deployment's first serve, with its cache entries out of the page cache.

At 10,000 assets the candle cache (15.6 GiB) does not stay in memory beside the universe, so
the serve after the first reads its entries back from disk. This measures, on a synthetic
universe (:mod:`benchmarks.synthetic_universe`, ``--data``), :func:`features.loaders.load_market`
through the validated-candle cache at the universe's last day, after a first load one day
earlier (as ``serve_bench``'s first serve, whose files already hold the next day):

- ``partial, cold``: the page cache dropped first; the hourly/daily check compares the new day
  of every pair (``pair_partial``) from entries read back from disk;
- ``memo, cold``: the same day loaded again, page cache dropped: every pair's verdict replayed
  (``pair_memo``), the floor of what a load touches;
- ``partial, warm``: as the first case with the entries still in the page cache.

Dropping the page cache needs root (``/proc/sys/vm/drop_caches``); without it the cold cases
are skipped. Each repeat starts from a copy of the cache the first load left.

    python -m benchmarks.cold_check_bench --data DIR [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe
from benchmarks.synthetic_universe import LAST
from features.candle_cache import CandleCache
from features.loaders import load_market

DAY = dt.date.fromisoformat(LAST)


def drop_page_cache() -> bool:
    """Write dirty pages back and drop the page cache; False when not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed_load(data: Path, cache_dir: Path, day: dt.date) -> dict[str, object]:
    cache = CandleCache(cache_dir)
    start = time.perf_counter()
    load_market(data, None, day, cache=cache)
    return {"seconds": round(time.perf_counter() - start, 2),
            "stats": {k: v for k, v in cache.stats.items() if v}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="volmargin-cold-check-") as tmp:
        first, work = Path(tmp) / "first", Path(tmp) / "work"
        made = timed_load(args.data, first, DAY - dt.timedelta(days=1))
        print(json.dumps({"case": "first load (day before)", **made}), flush=True)
        rows = []
        for k in range(args.repeat):
            cases = []
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(first, work)
            if drop_page_cache():
                cases.append(("partial, cold", timed_load(args.data, work, DAY)))
                drop_page_cache()
                cases.append(("memo, cold", timed_load(args.data, work, DAY)))
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(first, work)  # the copy's pages are in the page cache
            cases.append(("partial, warm", timed_load(args.data, work, DAY)))
            for name, result in cases:
                rows.append({"repeat": k + 1, "case": name, **result})
                print(json.dumps(rows[-1]), flush=True)
    print(describe())
    for name in ("partial, cold", "memo, cold", "partial, warm"):
        got = [r["seconds"] for r in rows if r["case"] == name]
        if got:
            print(f"{name}: {min(got)}-{max(got)} s over {len(got)} loads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

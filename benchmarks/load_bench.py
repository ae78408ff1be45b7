"""Loading a synthetic universe with and without the validated-candle cache.

Cases, on the universe written by :mod:`benchmarks.synthetic_universe` (``--data``):

- ``uncached``: :func:`serving.market.load_as_of` as the serve called it before the cache;
- ``cold``: first load with an empty cache (parse, validate, write the cache);
- ``warm``: the files unchanged since the last load (``--repeat`` times, best kept);
- ``append``: every file grew by the last day's rows (1 daily row, 24 hourly candles),
  loaded the next day: appended to a ``.csv`` as a feed does, or for ``.csv.gz`` (``--gzip``
  universes) the file rewritten whole as ``volmargin ingest`` does (``--gz-member``: a gzip
  member appended instead, :func:`benchmarks.synthetic_universe.append_through`).

The universe is first copied without its last day (:func:`benchmarks.synthetic_universe.
hold_back`), the day then appended; ``append`` is checked equal to the uncached load of the
full universe.

    python -m benchmarks.load_bench --data /tmp/universe [--repeat 3] [--skip-uncached]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import resource
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.synthetic_universe import LAST, append_through, hold_back
from features.candle_cache import CandleCache
from serving.market import PointInTime, load_as_of

DAY = dt.date.fromisoformat(LAST)


def _timed(load, repeat: int = 1, keep: bool = False  # type: ignore[no-untyped-def]
           ) -> tuple[float, PointInTime | None]:
    """Best wall time of ``repeat`` loads; the last result only if ``keep`` (memory)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = load()
        best = min(best, time.perf_counter() - start)
        if not keep:
            result = None
    return best, result


def _frames_equal(a: PointInTime, b: PointInTime) -> bool:
    return all(list(getattr(a.market, k)) == list(getattr(b.market, k))
               and all(f.equals(getattr(b.market, k)[n]) for n, f in getattr(a.market, k).items())
               for k in ("daily", "hourly", "dvol", "macro"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-uncached", action="store_true")
    parser.add_argument("--verify", action="store_true", help="data.cache.verify: hash all")
    parser.add_argument("--gz-member", action="store_true",
                        help=".csv.gz: append a gzip member instead of rewriting the file")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="load_bench_"))
    try:
        data, cache_dir = work / "data", work / "cache"
        shutil.copytree(args.data, data)
        held = hold_back(data, DAY - dt.timedelta(days=1))
        n_assets = len(list((data / "crypto" / "daily").iterdir()))
        n_files = sum(1 for p in data.rglob("*.csv*") if p.is_file())

        def load(today: dt.date, root: Path = data, cached: bool = True):  # type: ignore[no-untyped-def]
            cache = CandleCache(cache_dir, verify=args.verify) if cached else None
            return load_as_of(root, None, None, today=today, cache=cache)

        rows = []
        if not args.skip_uncached:
            rows.append(("uncached", *_timed(lambda: load(DAY, cached=False))))
        rows.append(("cold", *_timed(lambda: load(DAY))))
        rows.append(("warm", *_timed(lambda: load(DAY), args.repeat)))
        if args.gz_member:
            append_through(held, dt.date.max)
        for path, text in held.items():  # .csv appended to; .csv.gz rewritten as ingest does
            if not text:
                continue
            if path.name.endswith(".gz"):
                path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + text,
                                               compresslevel=1))
            else:
                with open(path, "ab") as fh:
                    fh.write(text)
        nxt = DAY + dt.timedelta(days=1)
        rows.append(("append", *_timed(lambda: load(nxt), keep=True)))
        appended = rows[-1][2]
        rows[-1] = (*rows[-1][:2], None)
        rows.append(("warm after append", *_timed(lambda: load(nxt), args.repeat)))
        same = _frames_equal(appended, load(nxt, args.data, cached=False))  # type: ignore[arg-type]
        del appended
        size = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{n_assets} assets, {n_files} files; cache {size / 1e6:,.0f} MB; peak RSS "
          f"{peak:.2f} GiB; append equal to the uncached load of the full files: {same}")
    for name, seconds, _ in rows:
        print(f"{name:>18}: {seconds:7.2f} s")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())

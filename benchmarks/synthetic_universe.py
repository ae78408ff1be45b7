"""A synthetic universe of N assets, daily and hourly, block-bootstrapped from the real candles.

Used by the scale benchmarks (serve, retrain). Asset *i* draws 20-day blocks of whole UTC days
from one real asset with hourly data (round robin over the sources, MATIC excluded: delisted),
so intraday shape, weekly seasonality, volatility clustering and crash days come along with the
block. Its log moves are scaled by a factor drawn from U[0.6, 1.6] (so volatilities spread like
a real cross-section), and its dollar volume by a lognormal factor. Asset *i*'s draws come from
its own generator, seeded by ``(seed, i)``: the first 1,000 assets of a 10,000-asset universe
are the 1,000-asset universe, and the files do not depend on chunking or thread count.

Hourly candles are rebuilt from each source hour's own moves (open gap, close-to-close return,
upper and lower wicks relative to the body), rounded to :data:`SIGNIFICANT` significant digits
(as a venue's tick does; rounding is monotone, so high >= open, close >= low survive it), and
the **daily candles are aggregated from the rounded hours** (first open, max high, min low,
last close, summed volume), so the two files agree exactly, as the loaders' hourly-vs-daily
check expects of real data. Days whose source day has missing hours keep them missing (gaps
stay gaps). DVOL (BTC's) and the macro files are copied from the embedded data.

Speed: the bootstrap runs on dense (asset, day, hour) arrays, a chunk of assets at a time, and
the files are formatted by Arrow's C++ CSV writer in a thread pool (it releases the GIL);
pandas' ``to_csv`` spent ~80 % of the old per-asset loop formatting floats.

File format: plain ``.csv`` by default — the fastest to write and to read (no inflate), and
what a production feed appends a day of rows to (the serve benchmark's daily-append case does
the same); ``compress=True`` writes ``.csv.gz`` at level 1 (about 2.5x smaller, slower to
write and read) where disk is short. Both are byte-identical for one seed (gzip header
``mtime`` 0, no file name).

    python -m benchmarks.synthetic_universe --assets 1000 --out DIR [--start 2022-07-01] [--gzip]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gzip
import io
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from features import append_receipts

REPO = Path(__file__).resolve().parents[1]
MARKET = REPO / "data" / "market"
LAST = "2025-06-30"
BLOCK_DAYS = 20
SIGNIFICANT = 8          # digits kept on prices and volumes (a tick far below a 1-hour move)
CHUNK = 8                # assets bootstrapped together: (8, days, 24, 5) float64, 8 MB/3 y;
                         # larger arrays miss the allocator's reuse and pay page faults
MOVES = ("gap", "body", "wick_up", "wick_down", "dollar_volume")
COLUMNS = ("open", "high", "low", "close", "volume")
ISO = "%Y-%m-%dT%H:%M:%SZ"
_POWERS = 10.0 ** np.arange(309)      # exact doubles up to 1e22, close enough beyond
HEADER = ("timestamp," + ",".join(COLUMNS) + "\n").encode()


@dataclass(frozen=True)
class Sources:
    """The real hourly moves, all sources stacked on one day axis.

    ``moves[d, h, k]`` is move ``MOVES[k]`` of hour ``h`` of stacked day ``d``; NaN where the
    source has no (complete) candle. Source ``s`` owns days ``offset[s] : offset[s] + days[s]``
    (only days with at least one candle, so every synthetic day has one).
    """

    names: tuple[str, ...]
    moves: np.ndarray        # (D, 24, 5)
    offset: np.ndarray       # (S,)
    days: np.ndarray         # (S,)


def _source_moves(path: Path) -> np.ndarray:
    """(days, 24, 5) hourly log moves of one real asset (see :class:`Sources`)."""
    f = pacsv.read_csv(path)    # Arrow parses the ISO stamps natively (pandas: 10x slower)
    seconds = f["timestamp"].cast(pa.timestamp("s", "UTC")).cast(pa.int64()).to_numpy()
    hours = seconds // 3600
    o, h, lo, c = (f[k].to_numpy().astype(float) for k in ("open", "high", "low", "close"))
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.column_stack([np.log(o[1:] / c[:-1]), np.log(c / o)[1:],
                                  np.log(h / top)[1:], np.log(lo / bottom)[1:],
                                  (c * f["volume"].to_numpy().astype(float))[1:]])
    ok = np.isfinite(values).all(axis=1)      # the first row has no previous close
    day_codes = np.unique(hours[1:][ok] // 24, return_inverse=True)[1]
    hour = hours[1:][ok] % 24
    out = np.full((day_codes.max() + 1, 24, len(MOVES)), np.nan)
    out[day_codes, hour] = values[ok]
    return out


@functools.lru_cache(maxsize=2)
def load_sources(market: Path = MARKET) -> Sources:
    """Every hourly file of ``market`` except MATIC, in name order (read once a process)."""
    names, blocks = [], []
    for path in sorted((market / "crypto" / "hourly").glob("*.csv*")):
        name = path.name.split(".")[0]
        if name != "MATIC":
            names.append(name)
            blocks.append(_source_moves(path))
    days = np.array([len(b) for b in blocks])
    return Sources(tuple(names), np.concatenate(blocks), np.cumsum(days) - days, days)


def round_significant(x: np.ndarray, digits: int = SIGNIFICANT) -> np.ndarray:
    """``x`` rounded to ``digits`` significant digits: round(x·10^p) / 10^p with
    p = digits − 1 − ⌊log10|x|⌋ (zeros and NaN kept). Dividing an integer by an exact power
    of ten is correctly rounded, so the shortest repr is at most ``digits`` digits long."""
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log10(np.abs(x)))
    p = digits - 1 - np.nan_to_num(exponent, nan=0.0, posinf=0.0, neginf=0.0).astype(np.int64)
    scale = _POWERS[np.clip(np.abs(p), 0, len(_POWERS) - 1)]   # a lookup: ** is slow
    out = np.where(p >= 0, np.round(x * scale) / scale, np.round(x / scale) * scale)
    return out


def bootstrap(src: Sources, assets: np.ndarray, n_days: int, seed: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Hourly candles of ``assets`` (indices) over ``n_days`` days.

    With s the asset's scale and (g, b, u, d) the source hour's gap, body, upper and lower
    wick (log), hour t of the synthetic path is

    .. math::
        C_t = 100 \\exp\\big(s \\textstyle\\sum_{k \\le t} (g_k + b_k)\\big),\\quad
        O_t = C_t e^{-s b_t},\\quad H_t = \\max(O_t, C_t) e^{s u_t},\\quad
        L_t = \\min(O_t, C_t) e^{s d_t},

    and its volume the source dollar volume times the asset's lognormal factor over C_t.

    Returns
    -------
    hourly : (A, n_days, 24, 5) OHLCV, rounded; NaN where the source hour is missing.
    daily : (A, n_days, 5) OHLCV aggregated from ``hourly``.
    """
    n_blocks = n_days // BLOCK_DAYS + 1
    picked = np.empty((len(assets), n_days), dtype=np.int64)
    draws = np.empty((len(assets), 2))
    for row, i in enumerate(assets):
        rng = np.random.default_rng([seed, int(i)])
        s = int(i) % len(src.names)
        starts = rng.integers(0, src.days[s] - BLOCK_DAYS, size=n_blocks)
        blocks = starts[:, None] + np.arange(BLOCK_DAYS)           # (n_blocks, 20)
        picked[row] = src.offset[s] + blocks.ravel()[:n_days]
        draws[row] = rng.uniform(0.6, 1.6), rng.lognormal(0.0, 1.0)
    scale = draws[:, 0, None, None]
    m = src.moves[picked]                                            # (A, D, 24, 5)
    missing = np.isnan(m[..., 0])                                    # (A, D, 24)
    body = np.nan_to_num(m[..., 1])
    step = scale * (np.nan_to_num(m[..., 0]) + body)                # a missing hour adds 0
    close = 100.0 * np.exp(np.cumsum(step.reshape(len(assets), -1), axis=1)
                           ).reshape(step.shape)
    open_ = close * np.exp(-scale * body)
    high = np.maximum(open_, close) * np.exp(scale * m[..., 2])
    low = np.minimum(open_, close) * np.exp(scale * m[..., 3])
    volume = m[..., 4] * draws[:, 1, None, None] / close
    hourly = round_significant(np.stack([open_, high, low, close, volume], axis=-1))
    hourly[missing] = np.nan
    first = np.argmax(~missing, axis=2)[..., None]                  # (A, D, 1); every day
    last = 23 - np.argmax(~missing[..., ::-1], axis=2)[..., None]   # has at least one hour
    daily = np.stack([np.take_along_axis(hourly[..., 0], first, 2)[..., 0],
                      np.nanmax(hourly[..., 1], axis=2), np.nanmin(hourly[..., 2], axis=2),
                      np.take_along_axis(hourly[..., 3], last, 2)[..., 0],
                      round_significant(np.nansum(hourly[..., 4], axis=2))], axis=-1)
    return hourly, daily


def _csv_bytes(stamps: pa.Array, values: np.ndarray) -> bytes:
    """``timestamp,open,high,low,close,volume`` rows: pre-formatted stamps, shortest floats."""
    table = pa.table({"timestamp": stamps,
                      **{c: pa.array(values[:, k]) for k, c in enumerate(COLUMNS)}})
    sink = io.BytesIO()
    sink.write(HEADER)                  # Arrow would quote the names
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False,
                                                    quoting_style="none"))
    return sink.getvalue()


def _write_bytes(data: bytes, path: Path, compress: bool) -> None:
    with open(path, "wb") as fh:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=1,
                               mtime=0) as gz:
                gz.write(data)
        else:
            fh.write(data)


def _write_chunk(src: Sources, assets: np.ndarray, days: pd.DatetimeIndex, dest: Path,
                 seed: int, hourly_files: bool, compress: bool, width: int,
                 hour_stamps: pa.Array, day_stamps: pa.Array) -> int:
    hourly, daily = bootstrap(src, assets, len(days), seed)
    suffix = ".csv.gz" if compress else ".csv"
    written = 0
    for row, i in enumerate(assets):
        name = f"S{int(i):0{width}d}{suffix}"
        data = _csv_bytes(day_stamps, daily[row])
        _write_bytes(data, dest / "crypto" / "daily" / name, compress)
        written += len(data)
        if hourly_files:
            flat = hourly[row].reshape(-1, len(COLUMNS))
            keep = np.flatnonzero(~np.isnan(flat[:, 0]))
            data = _csv_bytes(hour_stamps.take(pa.array(keep)), flat[keep])
            _write_bytes(data, dest / "crypto" / "hourly" / name, compress)
            written += len(data)
    return written


def write_universe(dest: Path, n_assets: int, start: str = "2022-07-01", end: str = LAST,
                   seed: int = 7, hourly: bool = True, market: Path = MARKET,
                   compress: bool = False, threads: int | None = None) -> Path:
    """Write ``n_assets`` synthetic assets (``S0000`` …) in the embedded layout under ``dest``.

    Parameters
    ----------
    dest : root of the data directory written (``crypto/daily``, ``crypto/hourly``, ``iv``,
        ``macro``).
    n_assets : assets; names are ``S`` + the index, zero-padded to at least 4 digits.
    start, end : first and last UTC day (inclusive).
    seed : asset ``i`` draws from ``numpy.random.default_rng([seed, i])``.
    hourly : also write the hourly files (the daily ones are their aggregate either way).
    compress : ``.csv.gz`` (level 1) instead of ``.csv``.
    threads : writer threads (default: the CPUs this process may use).
    """
    src = load_sources(market)
    days = pd.date_range(start, end, freq="D")
    hours = pd.date_range(days[0], periods=len(days) * 24, freq="h")
    hour_stamps, day_stamps = pa.array(hours.strftime(ISO)), pa.array(days.strftime(ISO))
    for sub in ("daily", "hourly") if hourly else ("daily",):
        (dest / "crypto" / sub).mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(n_assets - 1)))
    chunks = [np.arange(a, min(a + CHUNK, n_assets)) for a in range(0, n_assets, CHUNK)]
    workers = threads or len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda c: _write_chunk(src, c, days, dest, seed, hourly, compress,
                                             width, hour_stamps, day_stamps), chunks))
    (dest / "iv").mkdir(parents=True, exist_ok=True)
    shutil.copy(market / "iv" / "DVOL_BTC.csv.gz", dest / "iv")
    shutil.copytree(market / "macro", dest / "macro", dirs_exist_ok=True)
    return dest


def _data_files(root: Path) -> list[Path]:
    return sorted(p for sub in ("crypto/daily", "crypto/hourly", "iv", "macro")
                  for p in (root / sub).glob("*.csv*") if p.is_file())


def _split_after(lines: bytes, after: bytes) -> int:
    """Offset of the first line of ``lines`` (sorted rows, header first) dated after
    ``after`` (``YYYY-MM-DD``; rows start with an ISO stamp, so bytes compare as dates)."""
    offset = lines.index(b"\n") + 1                 # the header
    while offset < len(lines) and lines[offset:offset + 10] <= after:
        end = lines.find(b"\n", offset)
        offset = len(lines) if end < 0 else end + 1
    return offset


def hold_back(root: Path, after: dt.date) -> dict[Path, bytes]:
    """Cut every data file under ``root`` after day ``after``; return the rows cut, by file.

    The state of a production data directory the evening before a feed appends the next
    day. A ``.csv`` is truncated in place (only its tail is read: rows are sorted); a
    ``.csv.gz`` is rewritten (level 1). :func:`append_through` puts the rows back.
    """
    key = after.isoformat().encode()
    held: dict[Path, bytes] = {}
    for path in _data_files(root):
        if path.name.endswith(".gz"):
            data = gzip.decompress(path.read_bytes())
            cut = _split_after(data, key)
            if cut < len(data):
                _write_bytes(data[:cut], path, compress=True)
            held[path] = data[cut:]
            continue
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            back = 4096
            while True:                             # read back until a kept row is in view
                start = max(0, size - back)
                fh.seek(start)
                tail = fh.read()
                first = 0 if start == 0 else tail.index(b"\n") + 1
                lines = b"x\n" + tail[first:] if start else tail
                cut = _split_after(lines, key)
                if start == 0 or cut > 2:
                    break
                back *= 4
            offset = start + first + cut - (2 if start else 0)
            held[path] = tail[offset - start:]
            fh.truncate(offset)
    return held


def append_through(held: dict[Path, bytes], day: dt.date, receipts: Path | None = None) -> int:
    """Append the held rows dated up to ``day`` to their files (a new gzip member for
    ``.csv.gz``), as a daily feed does; they leave ``held``. Returns the files appended to.

    ``receipts``: the data directory, whose append receipts (:mod:`features.append_receipts`)
    then get one per file appended, as volmargin's ingest writes them (the journal compacted
    first); None: a feed that writes none, whose appends the candle cache proves by hash.
    """
    key = day.isoformat().encode()
    appended = 0
    written: list[append_receipts.Receipt] = []
    if receipts is not None:
        append_receipts.compact(receipts)
    for path, rows in held.items():
        cut = _split_after(b"\n" + rows, key) - 1
        if cut <= 0:
            continue
        # one writer either way (a gzip member for .csv.gz); its receipt kept only if asked
        receipt = append_receipts.append(receipts or path.parent, path, rows[:cut])
        if receipts is not None:
            written.append(receipt)
        held[path] = rows[cut:]
        appended += 1
    if receipts is not None:
        append_receipts.record(receipts, written)
    return appended


def disk_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--start", default="2022-07-01")
    parser.add_argument("--end", default=LAST)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--daily-only", action="store_true")
    parser.add_argument("--gzip", action="store_true", help=".csv.gz (level 1), not .csv")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    write_universe(args.out, args.assets, args.start, args.end, seed=args.seed,
                   hourly=not args.daily_only, compress=args.gzip, threads=args.threads)
    wall = time.perf_counter() - t0
    crypto = disk_bytes(args.out / "crypto")
    print(f"{args.assets} synthetic assets from {args.start} to {args.end} under {args.out}: "
          f"{wall:.1f} s, {crypto / 2**20:.0f} MiB of candles "
          f"({crypto / args.assets / 2**20:.2f} MiB an asset); load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reading only the tail a serve needs: the stamp search that never reads a mapped entry's
head, and the read-ahead hints (they change no value, and never fail a load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.candle_store import Store, frame_block, will_need
from features.fast_rows import HOUR_NS, least_row, search


def test_the_tail_search_is_numpys_search_on_stamps_with_gaps() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(1, 400))
        steps = rng.choice([1, 1, 1, 2, 5, 30], size=n)  # hours between candles: gaps
        stamps = (1_600_000_000 // 3600 + np.cumsum(steps)).astype(np.int64) * HOUR_NS
        probes = rng.integers(int(stamps[0]) - 50 * HOUR_NS, int(stamps[-1]) + 50 * HOUR_NS,
                              size=40)
        probes = np.concatenate([probes, stamps[rng.integers(0, n, size=10)]])
        for t in probes.tolist():
            want = int(np.searchsorted(stamps, t, side="left"))
            assert search(stamps, t, HOUR_NS) == want
            assert least_row(stamps, t, HOUR_NS) <= want  # a safe start for the search
    assert search(np.empty(0, np.int64), 5, HOUR_NS) == 0


def test_read_ahead_hints_change_nothing_and_never_fail(tmp_path: Path) -> None:
    store = Store(tmp_path)
    index = pd.date_range("2024-01-01", periods=5000, freq="h", name="timestamp", unit="ns")
    frame = pd.DataFrame({"close": np.linspace(1.0, 2.0, 5000)}, index=index)
    record = store.write_entry("e.npy", frame)
    record |= {"entry": "e.npy", "rows": len(frame), "columns": ["close"]}
    block = store.read_block("e.npy", record)
    assert block is not None
    mapped = store.frame(block, ["close"], "timestamp")
    store.prefetch(record, whole=False)
    store.prefetch(record, whole=True)
    store.prefetch({"entry": "missing.npy", "offset": 0, "rows": 1}, whole=False)  # silent
    store.prefetch({}, whole=True)
    close = mapped["close"].to_numpy()
    will_need([close[100:], close[::2], close[:0], np.arange(3.0)])
    pd.testing.assert_frame_equal(mapped, frame, check_freq=False)
    assert np.array_equal(frame_block(mapped), frame_block(frame))

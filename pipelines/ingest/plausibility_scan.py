"""How the plausibility thresholds ``k`` were chosen: the largest ratio ``move / s`` of every
stored row, per kind of file, over a selection period.

The ratios are those of :func:`.plausibility.screen` (same scale ``s``, floors, window and
rules), computed for every row at once; a row is held by the screen exactly when its ratio
exceeds ``k``. Usage::

    python -m pipelines.ingest.plausibility_scan data/market --before 2021-01-01

prints one line per kind with the largest ratio, its file, rule and day. The defaults of ``k``
are twice those maxima on the selection period, rounded up (:mod:`.plausibility`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from features.loaders import SUFFIXES, YIELD_SERIES, load_daily, load_dvol, load_hourly, load_macro
from pipelines.ingest.plausibility import SCALE_FLOOR, YIELD_SCALE_FLOOR, PlausibilitySettings

__all__ = ["ratios", "scan"]

# Folder under the data directory -> (kind, loader)
KINDS = {
    "crypto/daily": ("daily", load_daily),
    "crypto/hourly": ("hourly", load_hourly),
    "iv": ("dvol", load_dvol),
    "macro": ("macro", load_macro),
}


def ratios(frame: pd.DataFrame, kind: str, positive: bool,
           settings: PlausibilitySettings) -> pd.DataFrame:
    """Per row, the ratio of each jump rule (NaN where the screen has no scale yet): the OHLC
    rules where the file has OHLC columns, the value rule where it has a ``value`` column.

    .. math:: s_i = \\max\\big(\\operatorname{median}_{j \\in [i-w, i-1]} x_j,\\ \\text{floor}\\big)

    with :math:`x_j = \\ln(H_j / L_j)` (OHLC files) or :math:`x_j = |\\Delta \\ln V_j|`
    (:math:`|\\Delta V_j|` for yields); ratios are the moves of :mod:`.plausibility` over
    :math:`s_i`.
    """
    window, least = settings.window, settings.min_history
    out = pd.DataFrame(index=frame.index)
    if {"high", "low", "close"} <= set(frame.columns):
        spread = np.log(frame["high"] / frame["low"])
        scale = spread.shift(1).rolling(window, min_periods=least).median()
        scale = scale.clip(lower=SCALE_FLOOR[kind])
        previous = frame["close"].shift(1)
        out["close_jump"] = np.abs(np.log(frame["close"] / previous)) / scale
        out["high_jump"] = np.log(frame["high"] / previous) / scale
    if "value" in frame.columns:  # as a value-only file of the same series would be screened
        values = frame["value"]
        change = np.log(values).diff() if positive else values.diff()
        scale = change.abs().shift(1).rolling(window, min_periods=least).median()
        scale = scale.clip(lower=SCALE_FLOOR[kind] if positive else YIELD_SCALE_FLOOR)
        out["value_jump"] = change.abs() / scale
    return out


def scan(data_dir: Path, before: str | None = None,
         settings: PlausibilitySettings | None = None) -> pd.DataFrame:
    """Largest ratio per file and rule, over rows stamped before ``before`` (all if None).

    Returns
    -------
    DataFrame
        Columns ``kind, file, rule, ratio, timestamp``, largest ratio first.
    """
    settings = settings or PlausibilitySettings()
    rows = []
    for folder, (kind, loader) in KINDS.items():
        directory = Path(data_dir) / folder
        paths = sorted(p for p in directory.glob("*") if p.name.endswith(SUFFIXES)
                       and not p.name.startswith(".")) if directory.is_dir() else []
        for path in paths:
            name = path.name.split(".")[0]
            frame = loader(path)
            table = ratios(frame, kind, name not in YIELD_SERIES, settings)
            if before is not None:
                table = table.loc[table.index < pd.Timestamp(before)]
            for rule in table.columns:
                column = table[rule].dropna()
                if not column.empty:
                    rows.append({"kind": kind, "file": f"{folder}/{path.name}", "rule": rule,
                                 "ratio": float(column.max()), "timestamp": column.idxmax()})
    out = pd.DataFrame(rows, columns=["kind", "file", "rule", "ratio", "timestamp"])
    return out.sort_values("ratio", ascending=False).reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--before", default=None, help="selection period end (exclusive)")
    args = parser.parse_args(argv)
    table = scan(args.data_dir, args.before)
    top = table.loc[table.groupby("kind")["ratio"].idxmax()]
    top = pd.concat([top, table.loc[table.groupby(["kind", "rule"])["ratio"].idxmax()]])
    for row in top.drop_duplicates().itertuples(index=False):
        print(f"{row.kind:6s} {row.ratio:7.2f}  {row.file} {row.rule} "
              f"{row.timestamp:%Y-%m-%d %H:%M}")


if __name__ == "__main__":
    main()

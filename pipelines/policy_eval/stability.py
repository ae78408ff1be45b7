"""What a borrower lives with: does a parameter change alone ever liquidate an open position,
and how far do the thresholds of open positions swing?

Two measures over replayed policy paths (``policy, asset, date, mmf, lt, ltv``):

- **Liquidated by a parameter change alone.** A position opened at the published max LTV on
  day *t* is healthy while LT ≥ LTV_t. Counted: days *t'* in (t, t + window] with
  LT_{t'} < LTV_t for some *t* — with no price move at all the position would be liquidatable,
  so the parameters alone did it. The window is the notice period the policy promises
  (``policy.roles.protect_days``).
- **Procyclicality of the thresholds.** Per asset: MMF peak-to-trough (max / min), the largest
  increase of MMF and the largest fall of LT over any 30 days; averaged over assets. Compared
  with the same policy without its anti-procyclical tools.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def liquidated_by_parameters(path: pd.DataFrame, window: int, tol: float = 1e-9) -> pd.DataFrame:
    """Per asset: days on which LT fell below an LTV admitted in the previous ``window`` days.

    Returns ``asset, days, violations, worst_gap`` (worst LTV_t − LT_{t'} in fractions).
    """
    rows = []
    for asset, g in path.sort_values("date").groupby("asset"):
        g = g.set_index("date")
        ltv = g["ltv"].astype(float)
        # the largest LTV admitted on a day in [t' - window, t' - 1], on the calendar
        admitted = ltv.rolling(f"{int(window)}D", closed="left").max()
        gap = (admitted - g["lt"].astype(float)).dropna()
        bad = gap > tol
        rows.append({"asset": asset, "days": len(gap), "violations": int(bad.sum()),
                     "worst_gap": float(gap.max()) if len(gap) else np.nan})
    return pd.DataFrame(rows, columns=["asset", "days", "violations", "worst_gap"])


def threshold_swings(path: pd.DataFrame, days: int = 30) -> pd.DataFrame:
    """Per asset: MMF and LT peak-to-trough and their largest adverse ``days``-day moves."""
    rows = []
    for asset, g in path.sort_values("date").groupby("asset"):
        g = g.set_index("date")
        mmf, lt = g["mmf"].astype(float), g["lt"].astype(float)
        rise = (mmf - mmf.rolling(f"{days}D").min()).max()
        fall = (lt.rolling(f"{days}D").max() - lt).max()
        rows.append({"asset": asset, "mmf_peak_to_trough": float(mmf.max() / mmf.min()),
                     "lt_peak_to_trough": float(lt.max() / lt.min()),
                     f"mmf_max_rise_{days}d": float(rise), f"lt_max_fall_{days}d": float(fall)})
    return pd.DataFrame(rows)


def stability_table(paths: pd.DataFrame, policies: list[str], window: int,
                    start: pd.Timestamp | None = None) -> pd.DataFrame:
    """One row per policy: parameter-change liquidations (all assets) and mean swings."""
    out = []
    for name in policies:
        p = paths[paths["policy"] == name]
        if start is not None:
            p = p[p["date"] >= start]
        if p.empty:
            continue
        liq = liquidated_by_parameters(p, window)
        swings = threshold_swings(p).drop(columns="asset").mean()
        out.append({"policy": name, "asset_days": int(liq["days"].sum()),
                    "liquidated_by_parameters": int(liq["violations"].sum()),
                    **swings.round(4).to_dict()})
    return pd.DataFrame(out)

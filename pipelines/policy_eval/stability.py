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

import datetime as dt

import numpy as np
import pandas as pd

from pipelines.policy_eval.protocol import in_period


def liquidated_by_parameters(path: pd.DataFrame, window: int, tol: float = 1e-9,
                             period: tuple[dt.date, dt.date | None] | None = None, u: int = 1
                             ) -> pd.DataFrame:
    """Per asset: days on which LT fell below an LTV admitted in the previous ``window`` days.

    ``period``: only the days whose loss day (``date + u``) lies in it are counted (the
    split of every other period figure: :func:`~pipelines.policy_eval.protocol.in_period`),
    each against the LTVs admitted before it on the whole path, those of the days before the
    period too (cut first, a period's first ``window`` days saw no admitted LTV).

    Returns ``asset, days, violations, worst_gap`` (worst LTV_t − LT_{t'} in fractions).
    """
    rows = []
    for asset, g in path.sort_values("date").groupby("asset"):
        g = g.set_index("date")
        ltv = g["ltv"].astype(float)
        # the largest LTV admitted on a day in [t' - window, t' - 1], on the calendar
        admitted = ltv.rolling(f"{int(window)}D", closed="left").max()
        gap = admitted - g["lt"].astype(float)
        if period is not None:
            counted = in_period(gap.rename("gap").rename_axis("date").reset_index(),
                                period[0], period[1], u)
            gap = counted.set_index("date")["gap"]
        gap = gap.dropna()
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
                    period: tuple[dt.date, dt.date | None] | None = None, u: int = 1
                    ) -> pd.DataFrame:
    """One row per policy: parameter-change liquidations (all assets) and mean swings, on
    the days whose loss day lies in ``period`` (None: every day)."""
    out = []
    for name in policies:
        p = paths[paths["policy"] == name]
        inside = p if period is None else in_period(p, period[0], period[1], u)
        if inside.empty:
            continue
        liq = liquidated_by_parameters(p, window, period=period, u=u)
        swings = threshold_swings(inside).drop(columns="asset").mean()
        out.append({"policy": name, "asset_days": int(liq["days"].sum()),
                    "liquidated_by_parameters": int(liq["violations"].sum()),
                    **swings.round(4).to_dict()})
    return pd.DataFrame(out)

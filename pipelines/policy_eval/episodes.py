"""Stress episodes and joint breaches of a policy path.

A path row dated ``t`` holds the parameters published at the end of ``t`` and the loss of the
interval after it, so the **loss day** of a row is ``t + u`` (``u`` = update interval): an
episode day D is covered by the parameters published the day before. Episodes come from
``evaluation.episodes`` in the config (name → first and last loss day, inclusive); market-wide
stress days are also found by rule (:func:`detect_stress_days`), reported beside them so that a
crash the list misses (a later one, or one on another universe) is named, not unseen.

Pure: frames in, frames out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipelines.policy_eval.reductions import series_sum

Episodes = Mapping[str, tuple[dt.date, dt.date]]


def loss_day(path: pd.DataFrame, u: int = 1) -> pd.Series:
    """The UTC day on which each row's loss happens (``date + u`` days)."""
    days = path["date"].to_numpy(dtype="datetime64[ns]") + np.timedelta64(u, "D")
    return pd.Series(days, index=path.index)


def episode_of_days(days: np.ndarray, episodes: Episodes) -> np.ndarray:
    """Name of the episode each loss day (``datetime64``) falls in, else None."""
    day = np.asarray(days, dtype="datetime64[D]")
    out = np.full(day.size, None, dtype=object)
    for name, (start, end) in episodes.items():
        inside = (day >= np.datetime64(start, "D")) & (day <= np.datetime64(end, "D"))
        out[inside & (out == None)] = name  # noqa: E711 (elementwise on an object array)
    return out


def episode_of(path: pd.DataFrame, episodes: Episodes, u: int = 1) -> pd.Series:
    """Name of the episode each row's loss day (its date + ``u``) falls in, else None."""
    day = path["date"].to_numpy(dtype="datetime64[D]") + np.timedelta64(u, "D")
    return pd.Series(episode_of_days(day, episodes), index=path.index, dtype=object)


def stress_table(path: pd.DataFrame, episodes: Episodes, u: int = 1) -> pd.DataFrame:
    """Per episode and asset: worst realized loss, the MMF and LT in force over that worst
    interval (``mmf_at_worst``, ``lt_at_worst``: set the day before it, so the one margin the
    worst loss is read against; the first one found where two losses tie), breaches, bad debt
    (position at LT and position at max LTV)."""
    cols = ["episode", "asset", "worst_loss", "mmf_at_worst", "lt_at_worst", "breaches",
            "bad_debt_lt", "bad_debt_ltv"]
    name = episode_of(path, episodes, u)
    inside = name.notna()
    # sorted by (episode, asset, date) once and each group read as slices of its columns:
    # the figures of a frame per group, bit for bit (test), without its pandas calls
    ordered = path[inside].assign(_episode=name[inside]).sort_values(
        ["_episode", "asset", "date"], kind="stable")
    key = list(zip(ordered["_episode"], ordered["asset"], strict=True))
    loss = ordered["loss_frac"].to_numpy(float)
    col = {c: ordered[c].to_numpy(float) for c in ("mmf", "lt", "bad_debt_lt", "bad_debt_ltv")}
    breach = ordered["breach"].fillna(False).astype(bool).to_numpy()
    cut = [k for k in range(1, len(key)) if key[k] != key[k - 1]]
    rows = []
    for a, b in zip([0, *cut], [*cut, len(key)], strict=True):
        if np.isnan(loss[a:b]).all():
            continue
        worst = a + int(np.nanargmax(loss[a:b]))
        rows.append({"episode": key[a][0], "asset": key[a][1], "worst_loss": float(loss[worst]),
                     "mmf_at_worst": float(col["mmf"][worst]),
                     "lt_at_worst": float(col["lt"][worst]),
                     "breaches": int(breach[a:b].sum()),
                     "bad_debt_lt": series_sum(col["bad_debt_lt"][a:b]),
                     "bad_debt_ltv": series_sum(col["bad_debt_ltv"][a:b])})
    return pd.DataFrame(rows, columns=cols)


def stress_bad_debt(path: pd.DataFrame, episodes: Episodes, u: int = 1) -> pd.Series:
    """Bad debt of a position at LT summed over the episode days, per asset (0 if none)."""
    inside = episode_of(path, episodes, u).notna()
    per = path[inside].groupby("asset")["bad_debt_lt"].sum()
    return per.reindex(sorted(path["asset"].unique()), fill_value=0.0)


def joint_breaches(path: pd.DataFrame, episodes: Episodes, min_assets: int = 3,
                   u: int = 1) -> pd.DataFrame:
    """Loss days on which at least ``min_assets`` assets breach together.

    Breaches of different assets on one day are one market event, not independent draws:
    the per-asset tests cannot see that, so the days are listed with the episode (if any).
    """
    hit = path[path["breach"].fillna(False).astype(bool)].assign(loss_day=loss_day(path, u))
    cols = ["loss_day", "n_assets", "assets", "episode"]
    if hit.empty:
        return pd.DataFrame(columns=cols)
    per = hit.groupby("loss_day")["asset"].agg(lambda a: sorted(set(a)))
    per = per[per.map(len) >= min_assets]
    frame = pd.DataFrame({"loss_day": per.index, "n_assets": per.map(len).to_numpy(),
                          "assets": per.map(",".join).to_numpy()})
    names = episode_of_days(frame["loss_day"].to_numpy(), episodes)
    return frame.assign(episode=names).reset_index(drop=True)[cols]


def joint_breach_share(path: pd.DataFrame, min_assets: int = 3, u: int = 1) -> dict[str, float]:
    """How many breaches fall on joint breach days: (breaches, on joint days, number of days)."""
    b = path[path["breach"].fillna(False).astype(bool)]
    if b.empty:
        return {"breaches": 0, "on_joint_days": 0, "joint_days": 0}
    per_day = b.groupby(loss_day(b, u))["asset"].nunique()
    joint = per_day[per_day >= min_assets]
    return {"breaches": len(b), "on_joint_days": int(joint.sum()),
            "joint_days": int(np.size(joint))}


STRESS_DAY_COLUMNS = ["loss_day", "assets", "beyond", "share", "median_loss", "worst_asset",
                      "worst_loss", "beyond_assets"]


def detect_stress_days(losses: pd.DataFrame, quantile: float, window_days: int,
                       min_history: int, min_share: float, min_assets: int) -> pd.DataFrame:
    """Loss days on which a large share of the assets lost more than their own tail.

    ``losses``: covered loss fractions, one column per asset, indexed by loss day (sorted,
    unique). Asset *a*'s threshold on day *t* is the ``quantile`` (linear interpolation) of
    its losses on the days in ``[t - window_days, t)``, with at least ``min_history`` of
    them; a day is a stress day when, among the assets with both a threshold and a loss that
    day, at least ``min_share`` and at least ``min_assets`` lost more than their threshold.
    Point in time: a day's verdict reads no later day (the threshold ends the day before),
    so data appended later never changes an earlier day's.

    One row per stress day (:data:`STRESS_DAY_COLUMNS`): ``assets`` judged, ``beyond`` of
    them past their threshold (``beyond_assets``, comma-joined), their ``share``, the median
    and the worst loss that day over the assets judged, and the asset of the worst.
    """
    if not losses.index.is_monotonic_increasing or losses.index.has_duplicates:
        raise ValueError("detect_stress_days: losses must be indexed by sorted, unique days")
    threshold = losses.rolling(f"{int(window_days)}D", closed="left",
                               min_periods=int(min_history)).quantile(quantile)
    judged = threshold.notna() & losses.notna()
    beyond = judged & (losses > threshold)
    n, k = judged.sum(axis=1), beyond.sum(axis=1)
    share = k / n.where(n > 0)
    hit = (share >= min_share) & (k >= min_assets)
    rows = []
    for day in losses.index[hit.to_numpy()]:
        seen = losses.loc[day][judged.loc[day]]
        rows.append({"loss_day": day, "assets": int(n[day]), "beyond": int(k[day]),
                     "share": float(share[day]), "median_loss": float(seen.median()),
                     "worst_asset": str(seen.idxmax()), "worst_loss": float(seen.max()),
                     "beyond_assets": ",".join(sorted(map(str, beyond.columns[
                         beyond.loc[day].to_numpy()])))})
    out = pd.DataFrame(rows, columns=STRESS_DAY_COLUMNS)
    return out.astype({"loss_day": "datetime64[ns]"})  # also when no day qualifies


def stress_days_by_rule(losses: pd.DataFrame, rule: Any, min_assets: int) -> pd.DataFrame:
    """:func:`detect_stress_days` with the settings of ``rule`` (``evaluation.stress_days``:
    ``quantile``, ``window_days``, ``min_history``, ``min_share``), as the policy evaluation
    and the stress test both apply it."""
    return detect_stress_days(losses, rule.quantile, rule.window_days, rule.min_history,
                              rule.min_share, min_assets)


def on_days(path: pd.DataFrame, days: pd.Series, u: int = 1) -> pd.DataFrame:
    """A policy path's outcomes on each of ``days`` (loss days): assets judged, assets
    breached and bad debt of a position at LT summed over assets (0 where none)."""
    day = loss_day(path, u)
    inside = day.isin(pd.DatetimeIndex(days))
    known = path[inside].assign(_day=day[inside])
    known = known[known["loss_frac"].notna()]
    per = known.groupby("_day").agg(
        judged=("asset", "size"), breached=("breach", lambda b: int(b.fillna(False).sum())),
        bad_debt_lt=("bad_debt_lt", "sum"))
    out = per.reindex(pd.DatetimeIndex(days)).fillna(0.0)
    return out.astype({"judged": int, "breached": int}).reset_index(drop=True)

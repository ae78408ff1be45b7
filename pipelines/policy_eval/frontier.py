"""The capital-vs-bad-debt frontier: each family swept over its main knob.

A point is one family at one knob value (the ES confidence level for the forecaster policies
and for the static table; Aave v3 is one point) on one asset or pooled over assets:

* **capital** = mean(1 - LTV) over the period's days (pooled: mean over assets);
* **bad debt** = sum of (x - cushion)/LB for a position at LT, over all days and over the
  stress-episode days (pooled: sum over assets).

LB is held at ``evaluation.comparison_lb`` for every family, so the points differ by their
margins only and are comparable with Aave v3 (LB 1.05). A point is **on the frontier** when
no other point of its panel has capital and bad debt both lower or equal, one of them
strictly lower (a tie in capital goes to the point with less bad debt).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from configs.schema import Config
from pipelines.policy_eval.backtest import at_lb
from pipelines.policy_eval.episodes import episode_of
from pipelines.policy_eval.protocol import in_period, periods
from pipelines.policy_eval.reductions import series_mean, series_sum

POOLED = "pooled"


def _asset_points(path: pd.DataFrame, eps: Any, u: int) -> list[dict[str, Any]]:
    """Per asset (sorted): capital, bad debt (all days and stress days), breaches, days.

    The path is sorted by asset once (stably: each asset's rows keep their order) and each
    asset read as slices of its columns; the figures are those of the pandas reductions on a
    frame per asset, bit for bit (test), at a fraction of the cost (a thousand assets × every
    path × two periods)."""
    ordered = path.sort_values("asset", kind="stable")
    names = ordered["asset"].to_numpy(object)
    stress = episode_of(ordered, eps, u).notna().to_numpy()
    capital = ordered["capital"].to_numpy(float)
    bad = ordered["bad_debt_lt"].to_numpy(float)
    breach = ordered["breach"].fillna(False).astype(bool).to_numpy()
    known = ordered["loss_frac"].notna().to_numpy()
    cut = np.flatnonzero(names[1:] != names[:-1]) + 1
    out = []
    for a, b in zip(np.r_[0, cut], np.r_[cut, len(names)], strict=True):
        out.append({"asset": names[a], "capital": series_mean(capital[a:b]),
                    "bad_debt": series_sum(bad[a:b]),
                    "stress_bad_debt": series_sum(bad[a:b][stress[a:b]]),
                    "breaches": int(breach[a:b].sum()), "days": int(known[a:b].sum())})
    return out


def knob_family(forecaster: str, key: str) -> str:
    """The frontier family of a forecaster's candidate with the knob ``key`` (a dotted
    setting) varied alone: ``<forecaster>:<last part of key>``."""
    return f"{forecaster}:{key.split('.')[-1]}"


def path_points(path: pd.DataFrame, family: str, knob: float, cfg: Config
                ) -> list[dict[str, Any]]:
    """One path's per-asset points (the path already restricted to one period): its days
    with a realized loss, LB held at ``evaluation.comparison_lb``."""
    if path.empty:
        return []
    path = at_lb(path[path["loss_frac"].notna()], cfg.evaluation.comparison_lb)
    if path.empty:
        return []
    eps, u = cfg.evaluation.episodes, cfg.features.update_interval_days
    return [{"family": family, "knob": knob, **p} for p in _asset_points(path, eps, u)]


def frontier_points(paths: Mapping[str, pd.DataFrame], labels: Mapping[str, tuple[str, float]],
                    cfg: Config) -> pd.DataFrame:
    """Points of every path already restricted to one period.

    ``labels`` maps a path name to (family, knob value). Pooled points are made only for
    families present on every asset of the panel (Aave v3 covers two).
    """
    rows = []
    for name, path in paths.items():
        if name in labels:
            rows.extend(path_points(path, *labels[name], cfg))
    return points_frame(rows)


def points_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """:func:`path_points` of every path of one period as the frontier's points: per asset,
    pooled (:func:`with_pooled`), each flagged when no point of its panel beats it."""
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out = with_pooled(out)
    groups = out.groupby("asset").indices.values()  # each panel's rows (assets and pooled)
    capital = out["capital"].to_numpy()
    for measure in ("bad_debt", "stress_bad_debt"):
        flags = np.zeros(len(out), bool)
        value = out[measure].to_numpy()
        for at in groups:
            flags[at[~_dominated(capital[at], value[at])]] = True
        out[f"frontier_{measure}"] = flags
    return out


def with_pooled(points: pd.DataFrame) -> pd.DataFrame:
    """The per-asset points and, below them, each family × knob pooled over the assets: mean
    capital, summed bad debt, breaches and days; only families present on every asset."""
    n_assets = points["asset"].nunique()
    pooled = (points.groupby(["family", "knob"])
              .agg(capital=("capital", "mean"), bad_debt=("bad_debt", "sum"),
                   stress_bad_debt=("stress_bad_debt", "sum"), breaches=("breaches", "sum"),
                   days=("days", "sum"), n=("asset", "size")).reset_index())
    pooled = pooled[pooled["n"] == n_assets].drop(columns="n").assign(asset=POOLED)
    return pd.concat([points, pooled], ignore_index=True)


def _dominated(c: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether some other point has both less-or-equal capital and ``b``, one of them less."""
    return ((c[None, :] <= c[:, None]) & (b[None, :] <= b[:, None])
            & ((c[None, :] < c[:, None]) | (b[None, :] < b[:, None]))).any(axis=1)


def pareto(points: pd.DataFrame, measure: str = "bad_debt") -> pd.Index:
    """Index of the points that no other point beats on both capital and ``measure``
    (ties on both count as not beaten)."""
    return points.index[~_dominated(points["capital"].to_numpy(), points[measure].to_numpy())]


def frontier_figure(points: pd.DataFrame, measure: str = "bad_debt") -> Figure:
    """One panel per asset and one pooled: capital against bad debt, one line per family,
    frontier points circled, the static table and Aave v3 marked."""
    panels = [POOLED, *sorted(a for a in points["asset"].unique() if a != POOLED)]
    ncol = 4
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    families = sorted(points["family"].unique())
    colors = {f: plt.cm.tab10(i % 10) for i, f in enumerate(families)}
    for ax, asset in zip(axes.ravel(), panels, strict=False):
        g = points[points["asset"] == asset]
        for family, f in g.groupby("family"):
            f = f.sort_values("knob")
            style = {"static": "s", "aave_v3": "*"}.get(str(family), "o")
            ax.plot(f["capital"], f[measure], marker=style, ms=6 if style != "*" else 13,
                    lw=1.0, color=colors[family], label=str(family),
                    zorder=4 if style == "*" else 2)  # Aave's single point stays visible
        front = g[g[f"frontier_{measure}"]].sort_values("capital")
        ax.plot(front["capital"], front[measure], ls="--", color="0.3", lw=0.8)
        ax.scatter(front["capital"], front[measure], s=90, facecolors="none",
                   edgecolors="0.2", zorder=3)
        ax.set_title(asset, fontsize=10)
        ax.set_xlabel("capital: mean(1 - LTV)", fontsize=8)
        ax.set_ylabel("stress bad debt" if measure != "bad_debt" else "bad debt (sum)",
                      fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    handles = {}
    for ax in axes.ravel():
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", fontsize=8,
               ncol=min(len(handles), 6), frameon=False)
    fig.suptitle(f"capital vs {measure.replace('_', ' ')} (LB 1.05 for all; dashed: frontier)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    plt.close(fig)
    return fig


def frontier_markdown(points: pd.DataFrame) -> str:
    """The pooled points (and BTC/ETH with Aave v3) as a Markdown table."""
    keep = points[points["asset"].isin([POOLED, "BTC", "ETH"])].sort_values(
        ["asset", "family", "knob"])
    cols = ["asset", "family", "knob", "capital", "bad_debt", "stress_bad_debt", "breaches",
            "frontier_bad_debt", "frontier_stress_bad_debt"]
    return keep[cols].round(4).to_markdown(index=False)


def cheapest_as_safe(points: pd.DataFrame, ours: tuple[str, float], families: Sequence[str],
                     measures: Sequence[str] = ("bad_debt", "stress_bad_debt")
                     ) -> pd.DataFrame:
    """"Capital at equal-or-better bad debt", read on the sweeps: per period and measure, the
    frozen policy (``ours``: its family and knob) beside, for each comparator family, the
    cheapest level of that family's sweep with no more of ``measure`` (bad debt) than the
    policy. A comparator at one fixed level is often cheaper *and* less safe, which says
    nothing about who needs less capital for the same safety; this does.

    Each comparison is pooled (mean capital, summed bad debt) over the assets the policy and
    every level of the comparator have points on in that period (``pooled_assets``; the
    frontier's pooled points need every asset, so a forecaster that failed on one asset would
    otherwise drop the period), from the per-asset ``points``. ``capital_vs``: the policy's
    capital over the comparator's, minus one (negative: the policy needs less). Where no level
    is as safe (``as_safe`` False), the row is the comparator's safest level (least
    ``measure``, then least capital): how close it gets, and what it costs there.
    ``knob`` is the comparator's (a confidence level), ``policy_knob`` the policy's in its
    own family (the stress-floor weight for the frozen variance-driven policy).
    ``evaluation.comparator_levels`` widens the sweep. A period without the policy's points,
    or a comparator sharing no asset with it, has no row."""
    cols = ["period", "measure", "family", "knob", "capital", "bad_debt", "as_safe",
            "policy_knob", "policy_capital", "policy_bad_debt", "capital_vs", "pooled_assets"]
    per_asset = points[points["asset"] != POOLED]
    rows = []
    for period, part in per_asset.groupby("period", sort=False):
        mine = part[(part["family"] == ours[0])
                    & np.isclose(part["knob"].astype(float), float(ours[1]), equal_nan=True)]
        if mine.empty:
            continue
        for family in families:
            theirs = part[part["family"] == family]
            common = set(mine["asset"])
            for _, level in theirs.groupby("knob"):
                common &= set(level["asset"])
            if theirs.empty or not common:
                continue
            me = _pool(mine[mine["asset"].isin(common)])
            levels = (theirs[theirs["asset"].isin(common)].groupby("knob")
                      .apply(_pool, include_groups=False).reset_index())
            for measure in measures:
                safe = levels[levels[measure] <= me[measure] + 1e-9]  # equal within rounding
                pick = (safe.sort_values(["capital", measure], kind="stable") if len(safe)
                        else levels.sort_values([measure, "capital"], kind="stable")).iloc[0]
                rows.append({
                    "period": period, "measure": measure, "family": family,
                    "knob": pick["knob"], "capital": pick["capital"],
                    "bad_debt": pick[measure], "as_safe": bool(len(safe)),
                    "policy_knob": ours[1], "policy_capital": me["capital"],
                    "policy_bad_debt": me[measure],
                    "capital_vs": me["capital"] / pick["capital"] - 1.0,
                    "pooled_assets": len(common)})
    return pd.DataFrame(rows, columns=cols)


def _pool(frame: pd.DataFrame) -> pd.Series:
    """Per-asset points pooled as the frontier pools them: mean capital, summed bad debt."""
    return pd.Series({"capital": frame["capital"].mean(), "bad_debt": frame["bad_debt"].sum(),
                      "stress_bad_debt": frame["stress_bad_debt"].sum()})


def period_points(item: tuple[str, float, pd.DataFrame], cfg: Config
                  ) -> list[list[dict[str, Any]]]:
    """One path's frontier rows (``item``: family, knob, path) in each period
    (:func:`~pipelines.policy_eval.protocol.periods` order)."""
    family, knob, path = item
    u = cfg.features.update_interval_days
    return [path_points(in_period(path, start, end, u), family, knob, cfg)
            for start, end in periods(cfg).values()]


def points_by_period(items: Sequence[tuple[str, float, pd.DataFrame]], cfg: Config,
                     mapper: Callable[..., list[Any]] | None = None) -> pd.DataFrame:
    """The frontier points of every (family, knob, path) of ``items`` in each period, pooled
    per period (:func:`points_frame`), with a ``period`` column. ``mapper(fn, items)`` maps
    :func:`period_points` over the items (e.g. on Dask workers, where the paths are); in
    process by default."""
    points = partial(period_points, cfg=cfg)
    per_path = mapper(points, list(items)) if mapper is not None else [points(i) for i in items]
    frames = [points_frame([row for rows in per_path for row in rows[k]]).assign(period=period)
              for k, period in enumerate(periods(cfg))]
    return pd.concat(frames, ignore_index=True)

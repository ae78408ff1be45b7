"""The policy backtest's candidates and comparators, all through the same replay and outcome
code (:mod:`pipelines.policy_eval.backtest`):

* ``policy:<alias>@k=v``    the full policy on each forecaster's walk-forward forecasts, one
                            per point of ``evaluation.grid`` (FHS on each forecaster; on
                            ``ewma94`` it is the clearing-house EWMA-FHS policy)
* ``policy:<alias>:no_apc`` the frozen choice without anti-procyclicality (IMF terms, stress
  floor and parameter roles all off)
* ``static``                one MMF per asset and calendar year: the ES of the covered loss
                            realized *before* that year (expanding window), LB held at the
                            comparison LB
* ``aave_v3``               Aave v3's WETH / WBTC parameters on ETH / BTC over the whole period,
  ``aave_v3:from_launch``   and from the market's launch (2023-01-27) only

Every comparator is judged on the same realized losses, and every one pays its liquidations'
slippage the same way: out of its liquidation bonus, never in MMF
(:func:`pipelines.policy_eval.backtest.with_outcomes`). Where LB is held at the comparison LB
(1.05, Aave's), that bonus is what pays the liquidator for each of them; the static table's
slippage of the reference size is recorded beside its MMF (``slippage``), not added to it,
since a static MMF carrying it would hold a cushion the outcomes never ask of anyone.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, effective_n_jobs

from configs.schema import Config
from pipelines.engine import Engine, chunked
from pipelines.policy_eval.backtest import policy_path, policy_paths, static_path
from pipelines.policy_eval.episodes import loss_day
from serving.inputs import covered_loss_fraction
from serving.policy import liquidity_addon
from serving.seasoning import Reference
from serving.seasoning import reference as stress_reference

# Aave v3 Ethereum market, published risk parameters (LTV, LT, LB) of WETH and WBTC: one set,
# held over the whole period (Aave's governance changed them over the years; README, "Known
# limitations").
AAVE_V3 = {"ETH": (0.805, 0.83, 1.05), "BTC": (0.73, 0.78, 1.05)}
MIN_IN_SAMPLE = 60  # days of realized losses a static calibration needs
# what the evaluation reads of a replayed path (the per-day reasons and flags stay in the
# replay; dropping them makes the many period cuts and LB re-expressions cheap)
SLIM = ["asset", "date", "sigma_1d", "liquidity_addon", "mmf", "imf", "lt", "ltv", "lb",
        "loss_next", "short_loss_next", "loss_frac", "short_loss_frac", "breach",
        "breach_short", "bad_debt_short", "bad_debt_lt", "bad_debt_ltv", "capital"]


def slim(path: pd.DataFrame) -> pd.DataFrame:
    return path[[c for c in SLIM if c in path.columns]]


def no_apc(cfg: Config) -> Config:
    """The same policy without any anti-procyclical tool: no IMF buffer, stressed weight or
    long-run floor (EMIR Art. 28), no stress floor under MMF, and no parameter roles (LT and LB
    follow the target at once). What remains is the risk target itself, the yardstick for how
    much the tools steady MMF and LT."""
    return cfg.with_overrides({"policy.apc.buffer_enabled": False,
                               "policy.apc.stress_enabled": False,
                               "policy.apc.floor_enabled": False,
                               "policy.stress_floor_weight": 0.0,
                               "policy.roles.enabled": False})


def grid_points(cfg: Config) -> list[dict[str, Any]]:
    """Every combination of the ``evaluation.grid`` settings (dotted keys → value)."""
    keys = list(cfg.evaluation.grid)
    return [dict(zip(keys, values, strict=True))
            for values in itertools.product(*(cfg.evaluation.grid[k] for k in keys))]


def setting(cfg: Config, key: str) -> Any:
    """The value of a dotted setting (``policy.stress_floor_weight``) in ``cfg``."""
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def candidate_name(alias: str, settings: Mapping[str, Any], cfg: Config) -> str:
    """``policy:<alias>`` for the configured settings, else ``policy:<alias>@k=v,...`` (no
    brackets: the console reads them as markup)."""
    changed = {k: v for k, v in settings.items() if setting(cfg, k) != v}
    if not changed:
        return f"policy:{alias}"
    return f"policy:{alias}@" + ",".join(f"{k.split('.')[-1]}={v}" for k, v in changed.items())


def replay_candidates(
    panel: pd.DataFrame, forecasts: Mapping[str, pd.DataFrame], cfg: Config,
    done: Mapping[str, pd.DataFrame] | None = None, engine: Engine | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, Any]]]:
    """Replay every forecaster × grid point once over the whole period: (paths, settings).

    A replay is causal (the row of day t uses only what is known at t), so one full replay
    serves the selection period and, carried on, the evaluation period. ``done`` holds paths
    already replayed (by name). Replays run in ``backtest.n_jobs`` processes (joblib/loky),
    or on ``engine`` when it is a Dask one (:func:`replay_many`).
    """
    jobs, settings = [], {}
    for alias in forecasts:
        for point in grid_points(cfg):
            name = candidate_name(alias, point, cfg)
            settings[name] = {"forecaster": alias, **point}
            if not done or name not in done:
                jobs.append((name, alias, point))
    results = replay_many(panel, [(forecasts[a], cfg.with_overrides(pt)) for _, a, pt in jobs],
                          cfg, engine)
    paths = {n: dict(done or {})[n] for n in settings if done and n in done}
    paths.update({name: path for (name, _, _), path in zip(jobs, results, strict=True)})
    return {n: paths[n] for n in settings}, settings


def slim_replay(panel: pd.DataFrame, forecast: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    return slim(policy_path(panel, forecast, cfg))


Plan = list[tuple[int, Config]]  # (which distinct forecast frame, config) of each replay


def _replay_chunk(task: tuple[dict[int, pd.DataFrame], Plan], panel: pd.DataFrame,
                  references: dict[str, Reference] | None = None) -> list[pd.DataFrame]:
    """Every replay of the plan on one chunk of assets (:func:`policy_paths`: what does not
    depend on the forecast computed once per asset for all of them); ``references``: the
    whole universe's stress reference for young assets (the chunk's panel may hold only its
    own assets)."""
    frames, plan = task
    return [slim(p) for p in policy_paths(panel, [(frames[j], c) for j, c in plan],
                                          references)]


def replay_many(panel: pd.DataFrame, items: list[tuple[pd.DataFrame, Config]], cfg: Config,
                engine: Engine | None = None) -> list[pd.DataFrame]:
    """Replay each (forecast, config): the same paths on a Dask engine or local processes.

    An asset's replays are its own (the policy state is per asset), so the work is cut by
    asset, not by candidate: a task replays *every* item on one chunk of assets, which lets
    the candidates share what does not depend on the forecast (the asset's feature rows, its
    stress ES and loss memory: :class:`serving.inputs.LossTerms`), and a cluster with more
    workers than candidates is used whole. On Dask a chunk is at most
    ``backtest.chunk_assets`` assets, sized so that every round of tasks fills the workers
    (:func:`pipelines.engine.balanced_chunk`; the panel shipped once, each chunk's forecasts
    once); locally each of the
    ``backtest.n_jobs`` processes gets one chunk (at most ``chunk_assets`` assets) and only
    its chunk's rows of the panel: a chunk's candidates update all their assets in one call
    a day (:func:`pipelines.policy_eval.backtest.replay_together`), whose fixed cost the
    more rows share the better. The chunks' paths are put back in asset
    order: the rows the whole replay gives.
    """
    # each distinct forecast frame (a forecaster's, shared by its grid points and knob
    # variants) cut and shipped once per chunk, the items naming it by position
    position: dict[int, int] = {}
    distinct: list[pd.DataFrame] = []
    for fc, _ in items:
        if id(fc) not in position:
            position[id(fc)] = len(distinct)
            distinct.append(fc)
    plan: Plan = [(position[id(fc)], c) for fc, c in items]
    # young assets borrow the universe's worst stress window: built once, here, over the whole
    # panel (serving.seasoning), not per chunk
    references = stress_reference(panel, [c.policy for _, c in items])
    groups = [fc.groupby("asset", sort=True, observed=True).indices for fc in distinct]
    assets = sorted({str(a) for g in groups for a in g})
    dask = engine is not None and engine.kind == "dask"
    if dask:  # chunks of at most chunk_assets, in full rounds over the workers
        size = engine.chunk_size(len(assets), cfg.backtest.chunk_assets)  # type: ignore[union-attr]
    else:
        processes = effective_n_jobs(cfg.backtest.n_jobs)
        size = min(cfg.backtest.chunk_assets, max(1, -(-len(assets) // processes)))
    chunks = chunked(assets, size)
    tasks = [({j: _rows(fc, groups[j], chunk) for j, fc in enumerate(distinct)}, plan)
             for chunk in chunks]
    if dask:
        # each replay's path joined on a worker from its chunks; inside engine.sharing() it
        # stays there for the verdicts, which then do not ship it out of this process again
        if tasks:
            return engine.map_combined(  # type: ignore[union-attr]
                partial(_replay_chunk, panel=panel, references=references), tasks, _joined,
                len(items))
        results = []
    elif processes == 1 or len(tasks) <= 1:
        results = [_replay_chunk(t, panel, references) for t in tasks]
    else:
        results = Parallel(n_jobs=processes)(
            delayed(_replay_chunk)(t, _panel_rows(panel, chunk), references)
            for t, chunk in zip(tasks, chunks, strict=True))
    if not results:  # nothing to replay: each item's empty path
        return [slim(p) for p in policy_paths(panel, items, references)]
    return [_joined([r[k] for r in results]) for k in range(len(items))]


def _rows(frame: pd.DataFrame, groups: Mapping[Any, np.ndarray], chunk: Sequence[str]
          ) -> pd.DataFrame:
    """``frame``'s rows of the ``chunk`` assets (``groups``: each asset's row positions)."""
    at = [groups[a] for a in chunk if a in groups]
    return frame.iloc[np.sort(np.concatenate(at))] if at else frame.iloc[0:0]


def _panel_rows(panel: pd.DataFrame, chunk: Sequence[str]) -> pd.DataFrame:
    return panel[panel.index.get_level_values("asset").isin(list(chunk))]


def _joined(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """One replay's chunks as one path (a chunk whose assets had nothing to publish is left
    out; all empty: the first, empty but with the path's columns)."""
    kept = [p for p in parts if len(p)] or parts[:1]
    return pd.concat(kept, ignore_index=True)


def static_schedule(frame: pd.DataFrame, years: list[int], cfg: Config,
                    confidence: float | None = None) -> pd.DataFrame:
    """One asset's static MMF for each calendar year, from data realized before it.

    .. math:: \\mathrm{MMF}_Y = \\mathrm{ES}_q\\big(1 - e^{-L_s} : s < Y\\big)

    with :math:`L_s` the covered log loss of the interval ending on day :math:`s` (floored and
    capped as the policy's MMF). Beside it, ``slippage``
    :math:`c\\,\\hat\\sigma_{<Y}\\sqrt{Q / \\mathrm{ADV}_{<Y}}`: the slippage of the reference
    size from :func:`serving.policy.liquidity_addon` on the sample σ of daily returns and the
    ADV of the last ``adv_window`` days before the year, paid out of the liquidation bonus as
    the policy's is, not added to MMF (module docstring). Fewer than ``MIN_IN_SAMPLE``
    losses: NaN (no table for that year).
    """
    q = cfg.policy.confidence if confidence is None else confidence
    return static_schedules(frame, years, cfg, [q])[q]


def static_schedules(frame: pd.DataFrame, years: list[int], cfg: Config,
                     confidences: list[float]) -> dict[float, pd.DataFrame]:
    """:func:`static_schedule` at each confidence level: the losses, σ, ADV and slippage of
    each year computed once for all of them (only the ES differs)."""
    frac_all = covered_loss_fraction(frame, cfg.policy).dropna()
    dollar = np.exp(frame["log_dollar_volume"])
    rows: dict[float, list[dict[str, float]]] = {q: [] for q in confidences}
    for year in years:
        start = pd.Timestamp(year=year, month=1, day=1)
        frac = frac_all[frac_all.index < start].to_numpy()
        if len(frac) < MIN_IN_SAMPLE:
            for q in confidences:
                rows[q].append({"year": year, "mmf": np.nan, "slippage": np.nan,
                                "n_obs": len(frac)})
            continue
        sigma = float(frame.loc[frame.index < start, "ret_1d"].std())
        adv = float(dollar[dollar.index < start].tail(cfg.policy.liquidity.adv_window).mean())
        slip = liquidity_addon(sigma, adv, cfg.policy)
        for q in confidences:
            var = np.quantile(frac, q, method="higher")
            es = float(frac[frac >= var].mean())
            mmf = min(max(es, cfg.policy.mmf_floor), cfg.policy.mmf_cap)  # slippage: in LB
            rows[q].append({"year": year, "mmf": mmf, "slippage": slip, "n_obs": len(frac)})
    return {q: pd.DataFrame(r) for q, r in rows.items()}


def static_paths(template: pd.DataFrame, panel: pd.DataFrame, cfg: Config,
                 confidence: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The yearly recalibrated static table held on the template's days: (path, schedule)."""
    q = cfg.policy.confidence if confidence is None else float(confidence)
    return static_paths_at(template, panel, cfg, [q])[q]


def static_paths_at(template: pd.DataFrame, panel: pd.DataFrame, cfg: Config,
                    confidences: list[float], engine: Engine | None = None
                    ) -> dict[float, tuple[pd.DataFrame, pd.DataFrame]]:
    """:func:`static_paths` at each confidence level, every asset's losses, σ and ADV read
    once for all of them (:func:`static_schedules`; the evaluation tables the static table at
    each confidence of its grid: three passes over every asset's history before).

    On a Dask ``engine`` the assets' schedules are computed in asset chunks on the workers,
    each from the asset's own history and the days it is held (only the template's asset and
    date columns travel; the rows and margins come back as positions and arrays), so the
    tables are the same; the outcomes are computed here in one pass over every asset's rows.
    The schedules were 8 s of the driver's serial time at 1,000 assets."""
    lb = cfg.evaluation.comparison_lb
    levels = list(dict.fromkeys(float(q) for q in confidences))
    days = template[["asset", "date"]]
    if engine is not None and engine.kind == "dask" and days["asset"].nunique() > 1:
        where = days.groupby("asset", sort=True).indices
        chunks = chunked(sorted(where), engine.chunk_size(len(where), cfg.backtest.chunk_assets))
        at = [np.sort(np.concatenate([where[a] for a in c])) for c in chunks]
        parts = engine.map(partial(_static_chunk, panel=panel, cfg=cfg, levels=levels),
                           [days.iloc[pos] for pos in at])
    else:
        at = [np.arange(len(days))]
        parts = [_static_chunk(days, panel, cfg, levels)]
    out: dict[float, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for q in levels:
        schedule = pd.concat([t for part in parts for t in part[q][0]], ignore_index=True)
        held = [pos[p] for part, pos in zip(parts, at, strict=True) for p in part[q][1]]
        if not held:
            out[q] = (template.iloc[0:0], schedule)
            continue
        # the outcomes of every asset in one pass (row by row, so each row's the same as in
        # a pass per asset; a pass per asset was most of this function's time at 1,000 assets)
        rows = template.iloc[np.concatenate(held)].reset_index(drop=True)
        m = np.concatenate([mm for part in parts for mm in part[q][2]])
        imf = np.minimum(m * (1 + cfg.policy.apc.buffer), 0.99)
        out[q] = (static_path(rows, m, (1 - m) / lb, lb, imf,
                              rows["liquidity_addon"].fillna(0.0).to_numpy()), schedule)
    return out


StaticPart = dict[float, tuple[list[pd.DataFrame], list[np.ndarray], list[np.ndarray]]]


def _static_chunk(days: pd.DataFrame, panel: pd.DataFrame, cfg: Config,
                  levels: list[float]) -> StaticPart:
    """The static schedule of each asset of ``days`` (the template's ``asset, date`` rows)
    at each level, in asset order, with the positions in ``days`` of the rows it covers and
    their MMF: ``{level: (schedules, positions, margins)}``."""
    out: StaticPart = {q: ([], [], []) for q in levels}
    where = days.groupby("asset", sort=True).indices
    for asset in sorted(where):
        pos = where[asset]
        year_of = pd.to_datetime(days["date"].iloc[pos]).dt.year
        years = sorted(year_of.unique())
        per_level = static_schedules(panel.xs(asset, level="asset"), years, cfg, levels)
        for q, table in per_level.items():
            tables, held, margins = out[q]
            tables.append(table.assign(asset=asset))
            mmf = year_of.map(table.set_index("year")["mmf"]).to_numpy()
            ok = np.isfinite(mmf)
            if ok.any():
                held.append(pos[ok])
                margins.append(mmf[ok])
    return out


def aave_paths(template: pd.DataFrame, launch: pd.Timestamp | None = None) -> pd.DataFrame:
    """Aave v3's WETH / WBTC parameters on ETH / BTC; with ``launch``, only the rows whose
    loss day is on or after it (the market did not exist before)."""
    blocks = []
    for asset, (ltv, lt, lb) in AAVE_V3.items():
        g = template[template["asset"] == asset]
        if launch is not None:
            g = g[loss_day(g) >= launch]
        if len(g):
            blocks.append(static_path(g, 1 - lt * lb, lt, lb, 1 - ltv * lb,
                                      g["liquidity_addon"].fillna(0.0).to_numpy()))
    return pd.concat(blocks, ignore_index=True) if blocks else template.iloc[0:0]


def comparator_paths(panel: pd.DataFrame, template: pd.DataFrame, cfg: Config,
                     static: tuple[pd.DataFrame, pd.DataFrame] | None = None,
                     ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Static (recalibrated yearly) and Aave v3 (whole period, from launch) on the template's
    days and slippage: (paths by name, static schedule). ``static``: the static table's
    (path, schedule) at the policy's confidence when the caller built it already."""
    static, schedule = static_paths(template, panel, cfg) if static is None else static
    return {"static": static, "aave_v3": aave_paths(template),
            "aave_v3:from_launch": aave_paths(template, pd.Timestamp(cfg.evaluation.aave_launch))
            }, schedule

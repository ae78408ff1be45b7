"""The whole policy evaluation: replay candidates and comparators, choose on the selection
period (forecaster × grid point, then the knobs of the one chosen), freeze, report both
periods, sweep the frontier. Pure (no tracking, no files): the
pipeline step logs what :func:`evaluate_policies` returns."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import Config
from pipelines.engine import Engine
from pipelines.ops.lines import capped
from pipelines.policy_eval.compare import (
    candidate_name,
    comparator_paths,
    no_apc,
    replay_candidates,
    replay_many,
    setting,
    static_paths_at,
)
from pipelines.policy_eval.episodes import (
    episode_of,
    joint_breach_share,
    joint_breaches,
    on_days,
    stress_days_by_rule,
    stress_table,
)
from pipelines.policy_eval.frontier import cheapest_as_safe, knob_family, points_by_period
from pipelines.policy_eval.protocol import (
    EVALUATION,
    SELECTION,
    Verdicts,
    budgets,
    by_year,
    choose,
    headline,
    in_period,
    knob_reason,
    period_label,
    periods,
    rank_like_for_like,
)
from pipelines.selection.select import (
    Selection,
    period_comparison,
    reads_forecast_quality,
    select,
)
from serving.inputs import covered_loss_fraction

LOO_LIMIT = 50  # assets left out in turn at most (leave_one_asset_out)
EWMA = "ewma94"  # RiskMetrics EWMA(0.94) σ: the clearing-house EWMA-FHS comparator
COMPARATORS = ("static", "aave_v3", "aave_v3:from_launch")


@dataclass(frozen=True)
class PolicyEvaluation:
    choice: Selection
    settings: dict[str, dict[str, Any]]   # candidate name → forecaster and policy settings
    paths: dict[str, pd.DataFrame]        # daily paths by policy name (whole period)
    table: pd.DataFrame                   # acceptance per policy × period × asset
    headline: pd.DataFrame                # reported policies, evaluation beside selection
    frontier: pd.DataFrame                # capital vs bad debt points, ``period`` column
    stress: pd.DataFrame                  # per episode × asset × reported policy
    joint: pd.DataFrame                   # days on which several assets breached together
    joint_share: dict[str, int]
    static_schedule: pd.DataFrame         # the static table's MMF per asset and year
    by_year: pd.DataFrame                 # frozen policy and comparators per evaluation year
    # the comparators' cheapest levels as safe as the frozen policy (frontier.cheapest_as_safe)
    as_safe: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    # "<model> <asset> h=<h> failed from <day>": triples judged in the choice on the
    # forecasts made before their failure in a later period (:func:`known_before`)
    before_failure: list[str] = dataclasses.field(default_factory=list)
    # comparators (not candidates) the choice's rule ranks above the frozen policy on the
    # selection period (:func:`preferred_comparators`)
    preferred: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # the first step's choice with each asset left out in turn (:func:`leave_one_asset_out`)
    stability: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    # market-wide stress days found by rule, with the episode that lists each (if any) and
    # the reported policies' outcomes on it (:func:`stress_days_table`)
    stress_days: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)


def _knob(settings: dict[str, Any], cfg: Config) -> float:
    key = "policy.confidence" if "policy.confidence" in cfg.evaluation.grid else next(
        iter(cfg.evaluation.grid))
    value = settings.get(key, np.nan)
    return float(value) if isinstance(value, int | float) else np.nan


def with_acceptable(as_safe: pd.DataFrame, table: pd.DataFrame, policy: str,
                    names: Mapping[tuple[str, float], str]) -> pd.DataFrame:
    """The as-safe rows (:func:`~pipelines.policy_eval.frontier.cheapest_as_safe`) with the
    assets on which each comparator's level (``names``: (family, knob) → path name) and the
    frozen ``policy`` are acceptable in that period, and how many were judged (missing where
    the level's path was not judged)."""
    per = table.groupby(["policy", "period"]).agg(acceptable=("acceptable", "sum"),
                                                   assets=("asset", "size"))
    keyed = {(f, round(float(k), 9)): n for (f, k), n in names.items()}

    def count(name: str | None, period: str, column: str) -> float:
        return float(per.loc[(name, period), column]) if (name, period) in per.index else np.nan

    out = as_safe.copy()
    which = [keyed.get((f, round(float(k), 9))) for f, k in zip(out["family"], out["knob"],
                                                                strict=True)]
    out["acceptable"] = [count(n, p, "acceptable") for n, p in zip(which, out["period"],
                                                                  strict=True)]
    out["assets"] = [count(n, p, "assets") for n, p in zip(which, out["period"], strict=True)]
    out["policy_acceptable"] = [count(policy, p, "acceptable") for p in out["period"]]
    return out


def preferred_comparators(table: pd.DataFrame, policy: str, comparators: Collection[str],
                          universe: Collection[str] | None = None) -> list[dict[str, Any]]:
    """The ``comparators`` (policies judged beside the candidates, never candidates: the
    static table at each level, EWMA-FHS beyond the grid) that the choice's own rule (most
    assets acceptable, then least capital, like for like: :func:`rank_like_for_like`) ranks
    above the frozen ``policy`` on the selection period, best first. Not empty means the
    protocol, had they been candidates, would have frozen one of them: said in the record and
    the report, so a risk team reads it at every run (on another universe the answer may
    differ). Each as ``{"policy", "acceptable", "assets", "capital"}`` (its own LB). Only
    under ``selection.rule: policy``: the forecast rule chooses by QLIKE, not by this rank."""
    sel = table[(table["period"] == SELECTION)
                & table["policy"].isin([policy, *dict.fromkeys(comparators)])]
    if policy not in set(sel["policy"]):
        return []
    ranked = rank_like_for_like(sel, universe).reset_index(drop=True)
    above = ranked.iloc[:int(ranked.index[ranked["policy"] == policy][0])]
    return [{"policy": str(r.policy), "acceptable": int(r.acceptable),
             "assets": int(r.assets), "capital": round(float(r.capital), 6)}
            for r in above.itertuples()]


def leave_one_asset_out(comparison: pd.DataFrame, selection_table: pd.DataFrame,
                        settings: Mapping[str, Mapping[str, Any]], cfg: Config,
                        default_names: Mapping[str, str] | None = None,
                        screened_on: pd.DataFrame | None = None,
                        limit: int = LOO_LIMIT) -> pd.DataFrame:
    """How firm the first step's choice is: :func:`pipelines.selection.select.select` run
    again on the same selection-period rows with each asset left out in turn (its verdicts and
    its forecast scores), one row per asset: ``left_out``, ``choice`` (missing, the reason in
    ``note``, where the rows left cannot choose). A choice that moves
    when one asset goes was a near tie; read beside the choice's reason, never used to choose
    (a leave-one-out of the selection period only; the evaluation period is not read).

    Each run ranks every candidate again (91 ms at 1,000 assets × 27 candidates): above
    ``limit`` assets, ``limit`` of them, evenly spaced in name order, are left out in turn
    (one asset of a thousand seldom moves a choice; the record says how many runs there
    were)."""
    rows = []
    assets = sorted(set(selection_table["asset"]))
    if len(assets) > limit:
        assets = [assets[i] for i in np.linspace(0, len(assets) - 1, limit).astype(int)]
    for asset in assets:
        rest = _without(selection_table, asset)
        if rest is None or rest.empty:
            continue
        try:
            picked = select(_without(comparison, asset), rest, settings, cfg.selection,
                            default_names, _without(screened_on, asset))
        except Exception as exc:  # a reported check is never fatal: noted per asset
            rows.append({"left_out": asset, "choice": None,
                         "note": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append({"left_out": asset, "choice": picked.policy, "note": ""})
    return pd.DataFrame(rows, columns=["left_out", "choice", "note"]).assign(
        universe=len(set(selection_table["asset"])))


def _without(frame: pd.DataFrame | None, asset: str) -> pd.DataFrame | None:
    """``frame``'s rows of every asset but ``asset`` (None stays None)."""
    if frame is None or "asset" not in frame.columns:
        return frame
    return frame[frame["asset"] != asset]


def stability_record(stability: pd.DataFrame, first: str) -> dict[str, Any]:
    """``frozen.json``'s summary of :func:`leave_one_asset_out`: how many of the runs kept
    the first step's choice, and the others' choices with how often each won."""
    if stability.empty:
        return {}
    done = stability[stability["choice"].notna()]
    others = done.loc[done["choice"] != first, "choice"].value_counts()
    # runs: the leave-outs that chose; not_run: those that could not (every one: the
    # least firm case, not "no check"); assets: the universe they were drawn from
    return {"first_step": first, "kept": int((done["choice"] == first).sum()),
            "runs": len(done), "not_run": len(stability) - len(done),
            "assets": int(stability["universe"].iloc[0]),
            "others": {str(k): int(v) for k, v in others.items()}}


def preferred_lines(preferred: list[dict[str, Any]]) -> list[str]:
    """One plain line per comparator the rule prefers (:func:`preferred_comparators`), for
    the run's warnings."""
    return [f"on the selection period the choice's rule ranks the comparator {c['policy']} "
            f"({c['acceptable']}/{c['assets']} acceptable, capital {c['capital']:.4f}) above "
            "the frozen policy; comparators are not candidates, so it was not frozen "
            "(outputs/backtest/frozen.json, comparators_the_rule_prefers)" for c in preferred]


def stress_days_table(panel: pd.DataFrame, paths: Mapping[str, pd.DataFrame],
                      roles: Mapping[str, str], cfg: Config) -> pd.DataFrame:
    """The market-wide stress days of the selection and evaluation periods
    (:func:`~pipelines.policy_eval.episodes.detect_stress_days` on every asset's covered
    long loss, ``evaluation.stress_days``), each with its ``period``, the configured
    ``episode`` that contains it ("" if none: the stress budget does not judge it) and, per
    ``roles`` (column prefix → path name), the assets breached and the bad debt at LT summed
    over assets that day. Empty when ``stress_days.enabled`` is false."""
    e, u = cfg.evaluation, cfg.features.update_interval_days
    sd = e.stress_days
    if not sd.enabled or panel.empty:
        return pd.DataFrame()
    try:
        wide = covered_loss_fraction(panel, cfg.policy).unstack("asset").sort_index()
        days = stress_days_by_rule(wide, sd, e.co_breach_min_assets)
    except Exception as exc:  # a report, never fatal: said at the end of the run instead
        out = pd.DataFrame()
        out.attrs["error"] = f"{type(exc).__name__}: {exc}"
        return out
    # a row dated the day before its loss day, as a path's: cut and named as paths are
    dated = days.assign(date=days["loss_day"] - pd.Timedelta(days=u))
    dated = pd.concat([in_period(dated, start, end, u).assign(period=name)
                       for name, (start, end) in periods(cfg).items()], ignore_index=True)
    named = episode_of(dated, e.episodes, u)
    days = dated.drop(columns=["date", "period"])
    days.insert(1, "period", dated["period"].to_numpy())
    days.insert(2, "episode", named.fillna("").to_numpy())
    for role, name in roles.items():
        if name in paths:
            out = on_days(paths[name], days["loss_day"], u)
            seen = out["judged"].to_numpy() > 0  # no replayed row that day: not "0 breached"
            days[f"{role}_breached"] = np.where(seen, out["breached"].to_numpy(float), np.nan)
            days[f"{role}_bad_debt"] = np.where(seen, out["bad_debt_lt"].to_numpy(), np.nan)
    return days


def stress_day_lines(days: pd.DataFrame, cfg: Config, most: int = 10) -> list[str]:
    """One warning per evaluation-period stress day that no configured episode lists (the
    stress budget does not judge it until it is added to ``evaluation.episodes``), at most
    ``most`` of them and a line saying where the rest are; or why no day could be looked for
    (:func:`stress_days_table` failed)."""
    if "error" in days.attrs:
        return [f"market-wide stress days not looked for: {days.attrs['error']}"]
    if days.empty:
        return []
    q = cfg.evaluation.stress_days.quantile
    missed = days[(days["period"] == EVALUATION) & (days["episode"] == "")]

    def frozen(r: Any) -> str:
        if not hasattr(r, "frozen_breached"):
            return ""
        if not np.isfinite(r.frozen_breached):
            return " (the frozen policy has no replayed row that day)"
        return (f" (the frozen policy: {int(r.frozen_breached)} assets breached, bad debt at "
                f"LT {r.frozen_bad_debt:.4f})")

    lines = [f"loss day {r.loss_day:%Y-%m-%d}: {r.beyond} of {r.assets} assets lost more than "
             f"their own trailing {q:.1%} quantile of covered losses (worst {r.worst_asset} "
             f"{r.worst_loss:.1%}), a market-wide stress day by evaluation.stress_days, but no "
             "evaluation.episodes entry lists it, so the stress budget does not judge it"
             + frozen(r) + "; add it to evaluation.episodes to judge it"
             for r in missed.itertuples()]
    return capped(lines, most, "such days (outputs/backtest/policy_stress_days.csv)")


def _ewma_beyond(point: dict[str, Any], levels: list[float], paths: Mapping[str, Any],
                 cfg: Config) -> dict[str, tuple[Config, float]]:
    """EWMA-FHS at each ``evaluation.comparator_levels`` confidence not already replayed as a
    candidate, at the grid point chosen first otherwise: name → (config, level). Replayed
    for the frontier and the as-safe comparison only; never a candidate of the choice."""
    out = {}
    for q in levels:
        at = {**point, "policy.confidence": q}
        name = candidate_name(EWMA, at, cfg)
        if name not in paths:
            out[name] = (cfg.with_overrides(at), q)
    return out


def _knob_variants(choice: Selection, settings: dict[str, dict[str, Any]], cfg: Config
                   ) -> dict[str, tuple[dict[str, Any], tuple[str, float]]]:
    """The frozen candidate with each ``evaluation.frontier_knobs`` setting varied alone:
    name → (overrides, (family, knob value)); the frozen value itself is the frozen path."""
    point = {k: v for k, v in settings[choice.policy].items() if k != "forecaster"}
    out = {}
    for key, values in cfg.evaluation.frontier_knobs.items():
        family = knob_family(choice.model, key)
        current = setting(cfg.with_overrides(choice.overrides), key)
        for value in values:
            name = candidate_name(choice.model, {**point, key: value}, cfg)
            out[name] = ({key: value}, (family, float(value)))
        out.setdefault(choice.policy, ({}, (family, float(current))))
    return out


def chooses_knobs(cfg: Config) -> bool:
    """Whether the knobs are chosen beside the first choice (the policy rule only: the
    forecast rule picks by QLIKE and keeps the configured settings)."""
    return cfg.evaluation.choose_knobs and cfg.selection.rule == "policy"


def choose_knob(first: Selection, first_settings: dict[str, Any],
                knobs: dict[str, tuple[dict[str, Any], tuple[str, float]]],
                paths: dict[str, pd.DataFrame], verdicts: Verdicts,
                caps: dict[str, float] | None, universe: Collection[str] | None = None
                ) -> Selection:
    """The second step of the choice: the candidate frozen first (forecaster × grid point)
    and its knob variants (each ``evaluation.frontier_knobs`` setting varied alone), judged on
    the selection period by the same acceptance function and ranked by the same rule (most
    assets acceptable, then least capital); the best is frozen with its settings.

    Coordinate-wise, not a full grid: every knob value with every forecaster and confidence
    would multiply the replays by the knob values (4 × 27 on the default config), while the
    variants of the one frozen candidate are replayed anyway for the frontier. Each variant
    moves one knob, so at most one knob moves from its configured value. Nothing here reads
    a row past the selection period (the verdicts are the selection period's only).
    ``universe``: the assets the first step judged, over which the variants are counted.
    Without knobs (``evaluation.frontier_knobs: {}``) the first choice stands."""
    if not knobs:
        return first
    options = {n: {**first_settings, **overrides} for n, (overrides, _) in knobs.items()}
    best = choose(verdicts({n: paths[n] for n in options}, SELECTION, caps), options,
                  universe)
    moved = any(first.overrides.get(k) != v for k, v in best.overrides.items())
    return dataclasses.replace(first, policy=best.name, overrides=best.overrides,
                               reason=knob_reason(first.reason, best.reason, moved))


def _frontier(paths: dict[str, pd.DataFrame], settings: dict[str, dict[str, Any]],
              knobs: dict[str, tuple[str, float]], statics: dict[float, pd.DataFrame],
              cfg: Config, engine: Engine | None = None,
              levels: Mapping[str, tuple[str, float]] | None = None) -> pd.DataFrame:
    """Frontier points of both periods: candidates by forecaster and confidence, the frozen
    candidate's knob variants (keys suffixed, as the frozen path sits in two families), the
    static table per confidence, ``levels`` (EWMA-FHS beyond the grid: name → (family,
    level)), Aave v3. On a Dask engine each path's points are one task
    (the replayed paths are still on the workers: only the points come back)."""
    labels = {n: (s["forecaster"], _knob(s, cfg)) for n, s in settings.items()}
    labels.update({f"{n}|knob": lab for n, lab in knobs.items()})
    labels.update({f"static[{q}]": ("static", q) for q in statics})
    labels.update(levels or {})
    labels["aave_v3"] = ("aave_v3", np.nan)
    every = {**{n: paths[n] for n in settings}, **{f"{n}|knob": paths[n] for n in knobs},
             **{n: paths[n] for n in levels or {}},
             **{f"static[{q}]": p for q, p in statics.items()}, "aave_v3": paths["aave_v3"]}
    items = [(*labels[n], p) for n, p in every.items()]
    on_dask = engine is not None and engine.kind == "dask"
    return points_by_period(items, cfg, engine.map if on_dask else None)


def known_before(forecasts: Mapping[str, pd.DataFrame],
                 withheld: Mapping[str, pd.DataFrame] | None, end: object
                 ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """``forecasts`` and, per model, its withheld rows (the forecasts of a triple the
    walk-forward failed, made before the failure: :attr:`models.backtest.WalkForward.withheld`)
    of the triples whose first failure came *after* ``end``, the selection period's last day,
    up to that day (loss days <= ``end``). At the freeze nobody knew those triples would fail:
    without them a failure in the evaluation period would take the asset out of the choice
    (counted not acceptable), information from after the freeze. From ``end`` on they stay
    out, the whole evaluation period included (the triple is reported as the walk-forward left
    it: without the asset, not with the rows made before its failure); a triple that failed
    within the selection period stays out of the choice too. Also returns the
    triples brought back, one line each ("<model> <asset> h=<h> failed from <day>")."""
    out, lines = dict(forecasts), []
    cut = pd.Timestamp(end)
    for model, rows in (withheld or {}).items():
        # every target day of the row (cutoff + 1 .. cutoff + h) is a loss day <= ``end``
        last_target = pd.to_datetime(rows["cutoff"]) + pd.to_timedelta(
            rows["horizon_days"].astype(int), unit="D")
        late = rows[(pd.to_datetime(rows["failed_from"]) > cut)
                    & (last_target <= cut)].drop(columns="failed_from")
        if not len(late):
            continue
        mine = [out[model]] if model in out else []
        out[model] = pd.concat([*mine, late], ignore_index=True).sort_values(
            ["asset", "horizon_days", "cutoff"], kind="stable", ignore_index=True)
        since = rows.groupby(["asset", "horizon_days"])["failed_from"].min()
        lines += [f"{model} {a} h={h} failed from {pd.Timestamp(since[(a, h)]).date()}"
                  for a, h in late[["asset", "horizon_days"]].drop_duplicates().itertuples(
                      index=False)]
    return out, lines


def evaluate_policies(panel: pd.DataFrame, forecasts: dict[str, pd.DataFrame],
                      compared: pd.DataFrame, cfg: Config,
                      ewma: pd.DataFrame | None = None,
                      engine: Engine | None = None,
                      withheld: Mapping[str, pd.DataFrame] | None = None) -> PolicyEvaluation:
    """Replay → choose on the selection period → freeze → report both periods.
    ``withheld``: see :func:`known_before`."""
    if ewma is not None and EWMA not in forecasts:  # before known_before: its withheld rows
        forecasts = {**forecasts, EWMA: ewma}  # join the whole walk-forward, not replace it
    forecasts, lines = known_before(forecasts, withheld, cfg.evaluation.selection_end)
    # on Dask the panel goes to the workers once for the replays and the static tables
    with engine.sharing() if engine is not None else contextlib.nullcontext():
        ev = _evaluate(panel, forecasts, compared, cfg, engine)
    return dataclasses.replace(ev, before_failure=lines)


def comparator_template(paths: Mapping[str, pd.DataFrame],
                        settings: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The days (and slippage) the comparators are held on: EWMA-FHS's at the configured
    settings, else at any point of the grid (each point of one forecaster replays the same
    days), else the first candidate's."""
    ewma = [n for n, point in settings.items() if point.get("forecaster") == EWMA]
    configured = f"policy:{EWMA}"
    if configured in paths:
        return paths[configured]
    return paths[ewma[0]] if ewma else next(iter(paths.values()))


def _evaluate(panel: pd.DataFrame, forecasts: dict[str, pd.DataFrame], compared: pd.DataFrame,
              cfg: Config, engine: Engine | None) -> PolicyEvaluation:
    paths, settings = replay_candidates(panel, forecasts, cfg, engine=engine)
    defaults = {a: f"policy:{a}" for a in forecasts}  # the configured settings' names
    template = comparator_template(paths, settings)
    # the static table at the policy's confidence (a comparator) and at each confidence of
    # the grid (the frontier), every asset's history read once for all of them
    grid = [float(q) for q in cfg.evaluation.grid.get("policy.confidence",
                                                      [cfg.policy.confidence])]
    levels = [float(q) for q in cfg.evaluation.comparator_levels]  # the comparators' alone
    at_level = static_paths_at(template, panel, cfg,
                               [float(cfg.policy.confidence), *grid, *levels], engine)
    # the static comparator, and so the budgets outside BTC/ETH, at the *configured*
    # policy.confidence (0.975), whatever confidence the selection then freezes: a fixed
    # yardstick for every candidate (the frontier tables the static table at every level)
    comparators, schedule = comparator_paths(panel, template, cfg,
                                             at_level[float(cfg.policy.confidence)])
    sel_start, sel_end = periods(cfg)[SELECTION]
    verdicts = Verdicts(cfg, engine)  # judged once, the selection's reused by the report
    sel_table = verdicts({n: paths[n] for n in settings}, SELECTION,
                         budgets(comparators, cfg, sel_start, sel_end))
    screened_on = None
    if reads_forecast_quality(cfg.selection):  # a screen or rule=forecast: selection period only
        scored_models = {m: forecasts[m] for m in sorted(set(compared["model"])) if m in forecasts}
        screened_on = period_comparison(
            scored_models, panel, sel_start, sel_end,
            mapper=None if engine is None else engine.mapper,
            chunk_assets=cfg.backtest.chunk_assets)
    first = select(compared, sel_table, settings, cfg.selection, defaults, screened_on)
    stability = leave_one_asset_out(compared, sel_table, settings, cfg, defaults, screened_on)
    knobs = _knob_variants(first, settings, cfg)
    first_cfg = cfg.with_overrides(first.overrides) if first.overrides else cfg
    jobs = {n: first_cfg.with_overrides(o) for n, (o, _) in knobs.items() if n not in paths}
    # the point chosen first: the other forecasters' candidates reported beside the frozen one
    point = {k: v for k, v in settings[first.policy].items() if k != "forecaster"}
    # (EWMA-FHS's frontier points are labelled by confidence only when the grid sweeps it)
    beyond = (_ewma_beyond(point, levels, paths, cfg)
              if EWMA in forecasts and "policy.confidence" in cfg.evaluation.grid else {})
    done = replay_many(panel, [*[(forecasts[first.model], c) for c in jobs.values()],
                               *[(forecasts[EWMA], c) for c, _ in beyond.values()]],
                       cfg, engine)
    paths = {**paths, **comparators, **dict(zip([*jobs, *beyond], done, strict=True))}
    # the static table at every other level of its sweep, judged like the rest (the as-safe
    # comparison says how many assets a comparator's level is acceptable on)
    conf = float(cfg.policy.confidence)
    static_at = {q: "static" if q == conf else f"static@confidence={q}"
                 for q in [*grid, *levels]}
    paths.update({static_at[q]: at_level[q][0] for q in static_at if q != conf})
    caps = {k: budgets(comparators, cfg, *periods(cfg)[k]) for k in (SELECTION, EVALUATION)}
    choice = first
    if chooses_knobs(cfg):
        choice = choose_knob(first, settings[first.policy], knobs, paths, verdicts,
                             caps[SELECTION], universe=set(sel_table["asset"]))
    frozen_cfg = cfg.with_overrides(choice.overrides) if choice.overrides else cfg
    own = f"{choice.policy}:no_apc"
    paths[own] = replay_many(panel, [(forecasts[choice.model], no_apc(frozen_cfg))], cfg,
                             engine)[0]
    table = pd.concat([verdicts(paths, k, caps[k]) for k in (SELECTION, EVALUATION)],
                      ignore_index=True)
    peers = [candidate_name(a, point, cfg) for a in forecasts]
    reported = [choice.policy, own, *[p for p in peers if p != choice.policy], *COMPARATORS]
    ewma_fhs = candidate_name(EWMA, point, cfg)
    statics = {q: at_level[q][0] for q in static_at}
    knob_labels = {n: lab for n, (_, lab) in knobs.items()}
    frontier = _frontier(paths, settings, knob_labels, statics, cfg, engine,
                         {n: (EWMA, q) for n, (_, q) in beyond.items()})
    ours = knob_labels.get(choice.policy) or (choice.model, _knob(settings[choice.policy], cfg))
    eps, n_min = cfg.evaluation.episodes, cfg.evaluation.co_breach_min_assets
    stress = pd.concat([stress_table(paths[n], eps).assign(policy=n) for n in reported
                        if n in paths], ignore_index=True)
    # each level of the comparators' sweeps by (family, knob): EWMA-FHS at the point chosen
    # first and the static table, at every confidence of the grid and beyond it
    sweep = {**{(EWMA, q): candidate_name(EWMA, {**point, "policy.confidence": q}, cfg)
                for q in [*grid, *levels]},
             **{("static", q): n for q, n in static_at.items()}}
    as_safe = with_acceptable(cheapest_as_safe(frontier, ours, [EWMA, "static"]), table,
                              choice.policy, sweep)
    # the comparators that are not candidates, ranked by the rule that chose (policy rule)
    preferred = (preferred_comparators(table, choice.policy,
                                       ["static", *static_at.values(), *beyond],
                                       universe=set(sel_table["asset"]))
                 if cfg.selection.rule == "policy" else [])
    return PolicyEvaluation(
        choice=choice, settings=settings, paths=paths, table=table,
        headline=headline(table, reported), frontier=frontier, as_safe=as_safe,
        stress=stress, joint=joint_breaches(paths[choice.policy], eps, n_min),
        joint_share=joint_breach_share(paths[choice.policy], n_min), static_schedule=schedule,
        by_year=by_year(paths, [choice.policy, ewma_fhs, "static", "aave_v3"], ewma_fhs, cfg),
        preferred=preferred, stability=stability.assign(first_step=first.policy),
        stress_days=stress_days_table(panel, paths, {"frozen": choice.policy,
                                                     "ewma_fhs": ewma_fhs,
                                                     "static": "static"}, cfg))


# the sections the variance-driven choice reads, and the backtest keys that only say where
# and how fast it runs (the same forecasts either way: tests/test_engine.py)
CHOICE_SECTIONS = ("data", "features", "backtest", "models", "selection", "policy",
                   "evaluation")
EXECUTION_KEYS = ("engine", "scheduler", "n_jobs", "dask_workers", "chunk_assets")


def run_identity(cfg: Config, fingerprint: str | None) -> dict[str, str | None]:
    """What makes a run's frozen variance-driven policy comparable with a tail step's
    policies: the same feature panel (its fingerprint: data, as-of, feature settings) and the
    same settings of the choice (:data:`CHOICE_SECTIONS` of the resolved config, without the
    backtest's :data:`EXECUTION_KEYS`; where outputs go, the registry, serving, the stress
    test, ingest and the tail step do not enter it). Recorded in ``frozen.json``."""
    resolved = {k: v for k, v in cfg.resolved().items() if k in CHOICE_SECTIONS}
    resolved["backtest"] = {k: v for k, v in resolved["backtest"].items()
                            if k not in EXECUTION_KEYS}
    return {"feature_fingerprint": fingerprint,
            "choice_config_sha256": hashlib.sha256(
                json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()}


def frozen_record(ev: PolicyEvaluation, cfg: Config, fingerprint: str | None = None
                  ) -> dict[str, Any]:
    """What was frozen, when, on which rows, from which candidates (logged as JSON), and on
    which panel and settings (:func:`run_identity`: what a later tail step compares)."""
    e = cfg.evaluation
    return {"policy": ev.choice.policy, "forecaster": ev.choice.model,
            "settings": ev.choice.overrides, "reason": ev.choice.reason,
            "frozen_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            "selection_period": [str(e.selection_start), str(e.selection_end)],
            "evaluation_period": period_label(cfg, EVALUATION, ev.paths[ev.choice.policy]),
            "grid": e.grid, "candidates": sorted(ev.settings),
            "judged_before_a_later_failure": ev.before_failure,
            "comparators_the_rule_prefers": ev.preferred,
            "leave_one_asset_out": stability_record(
                ev.stability,
                str(ev.stability["first_step"].iloc[0]) if len(ev.stability) else ""),
            "knobs": e.frontier_knobs if chooses_knobs(cfg) else {},
            # what the report's open-position count reads: the notice window the roles
            # promise and the update interval that dates a loss day
            "protect_days": (cfg.with_overrides(ev.choice.overrides) if ev.choice.overrides
                             else cfg).policy.roles.protect_days,
            "update_interval_days": cfg.features.update_interval_days,
            **run_identity(cfg, fingerprint)}

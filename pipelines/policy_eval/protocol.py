"""The honest protocol: choose every setting on a selection period, report a later period.

1. Replay every candidate (forecaster × ``evaluation.grid`` point) and the comparators.
2. Judge each candidate with :func:`acceptance.accept_asset` on the **selection period** rows
   only (rows whose loss day lies in ``[selection_start, selection_end]``).
3. Choose by code: most assets acceptable, then the least capital (mean 1 - LTV over assets),
   then the name, every candidate counted over the same assets (an asset where a candidate's
   forecaster failed is not acceptable for it; :func:`rank_like_for_like`). Then the chosen
   candidate's knob variants (``evaluation.frontier_knobs``, each varied alone: the
   stress-floor weight by default) are judged beside it on the same rows and ranked by the
   same rule (:func:`pipelines.policy_eval.pipeline.choose_knob`); the best and its settings
   are **frozen**.
4. Report the frozen choice and the comparators on the **evaluation period**, with the
   selection period's figures beside them.

Nothing in steps 2-3 reads a row whose loss is realized after ``selection_end``
(``tests/test_protocol.py`` perturbs those rows and checks the choice does not move).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd

from configs.schema import Config
from pipelines.engine import Engine
from pipelines.evaluation.years import year_blocks
from pipelines.policy_eval.acceptance import relative_capital
from pipelines.policy_eval.backtest import at_lb
from pipelines.policy_eval.compare import AAVE_V3
from pipelines.policy_eval.episodes import loss_day, stress_bad_debt
from pipelines.policy_eval.report import summarize

SELECTION, EVALUATION = "selection", "evaluation"


@dataclass(frozen=True)
class Frozen:
    """The choice made on the selection period, with what it was chosen from."""

    name: str                    # candidate name, e.g. ``policy:garch11_t@confidence=0.99``
    forecaster: str
    overrides: dict[str, Any]    # policy settings to apply (dotted keys)
    reason: str
    table: pd.DataFrame          # one row per candidate: acceptable assets, capital, ...
    frozen_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(
        timespec="seconds"))


def periods(cfg: Config) -> dict[str, tuple[dt.date, dt.date | None]]:
    e = cfg.evaluation
    return {SELECTION: (e.selection_start, e.selection_end),
            EVALUATION: (e.evaluation_start, e.evaluation_end)}


def in_period(path: pd.DataFrame, start: dt.date, end: dt.date | None, u: int = 1
              ) -> pd.DataFrame:
    """Rows whose loss day (``date + u``) lies in ``[start, end]``.

    ``end`` None: to the last loss day realized in the path (the end of the data), so an open
    evaluation period judges the same rows as one that names that day; the last updates,
    whose interval has not ended yet, are not counted as days without a breach.
    """
    day = loss_day(path, u)
    keep = day >= pd.Timestamp(start)
    if end is not None:
        keep &= day <= pd.Timestamp(end)
    elif "loss_next" in path.columns:
        last = _last_realized(path, day)
        keep &= day <= (last if last is not None else pd.Timestamp.min)
    return path[keep]


def _last_realized(path: pd.DataFrame, day: pd.Series) -> pd.Timestamp | None:
    realized = day[path["loss_next"].notna().to_numpy()]
    return realized.max() if len(realized) else None


def realized_end(path: pd.DataFrame, u: int = 1) -> dt.date | None:
    """The last loss day realized in ``path`` (None: none yet): where an open period ends."""
    last = _last_realized(path, loss_day(path, u))
    return last.date() if last is not None else None


def period_label(cfg: Config, period: str, path: pd.DataFrame) -> list[str]:
    """``[start, end]`` of a period as ISO dates, an open end resolved on ``path``."""
    start, end = periods(cfg)[period]
    if end is None:
        end = realized_end(path, cfg.features.update_interval_days)
    return [str(start), str(end) if end is not None else "no realized loss"]


def budgets(comparators: Mapping[str, pd.DataFrame], cfg: Config, start: dt.date,
            end: dt.date | None) -> dict[str, float] | None:
    """Stress-episode bad debt each asset may have in a period: the recalibrated static
    table's, and for BTC/ETH from Aave v3's launch (``evaluation.aave_launch``) on Aave v3's
    real parameters' plus the static table's for the episodes before it (parameters set in
    2023 are hindsight for the crashes of 2021-2022; none where the table has no row then).
    None when ``evaluation.budget`` is ``none``
    (no budget test); an asset with no comparator row in the period is absent, and its
    budget test is not judged."""
    if cfg.evaluation.budget == "none":
        return None
    u, eps = cfg.features.update_interval_days, cfg.evaluation.episodes
    launch = cfg.evaluation.aave_launch
    out = stress_bad_debt(in_period(comparators["static"], start, end, u), eps, u).to_dict()
    if end is None or end >= launch:
        aave = stress_bad_debt(in_period(comparators["aave_v3"], max(start, launch), end, u),
                               eps, u)
        before = (stress_bad_debt(in_period(comparators["static"], start,
                                            launch - dt.timedelta(days=1), u), eps, u)
                  if start < launch else pd.Series(dtype=float))
        for a, v in aave.items():  # before the launch: the static table's, where it has rows
            if a in AAVE_V3:
                out[a] = float(v) + float(before.get(a, 0.0))
    return {a: float(v) for a, v in out.items()}


def judge_between(path: pd.DataFrame, cfg: Config, start: dt.date, end: dt.date | None,
                  caps: Mapping[str, float] | None) -> pd.DataFrame | None:
    """One path's per-asset acceptance on the rows whose loss day is in ``[start, end]``
    (None: no such row)."""
    u, ev = cfg.features.update_interval_days, cfg.evaluation
    rows = in_period(path, start, end, u)
    if rows.empty:
        return None
    table = summarize(rows, 1.0 - cfg.policy.coverage_level, ev.episodes, ev.test_size,
                      ev.dq_lags, caps, at_lb(rows, ev.comparison_lb))
    return table if len(table) else None


def _judge_one(item: tuple[str, pd.DataFrame], cfg: Config, period: str,
               caps: Mapping[str, float] | None) -> pd.DataFrame | None:
    """One policy's per-asset acceptance on one period (None: no row in the period)."""
    name, path = item
    table = judge_between(path, cfg, *periods(cfg)[period], caps)
    return None if table is None else table.assign(policy=name, period=period)


BY_YEAR_COLUMNS = ["block", "start", "end", "policy", "acceptable", "unproven", "assets",
                   "capital", "capital_vs_reference", "breaches", "bad_debt_lt_sum",
                   "stress_bad_debt"]


def by_year(paths: Mapping[str, pd.DataFrame], names: Sequence[str], reference: str,
            cfg: Config) -> pd.DataFrame:
    """``names`` judged on each twelve-month block of the evaluation period
    (:func:`pipelines.evaluation.years.year_blocks`, up to the last loss day realized in it),
    with that block's budgets (the comparators' stress bad debt in it), summarized as the
    choice's table (:func:`rank`: acceptable assets, capital, breaches, bad debt), rows in
    the order of ``names``; ``capital_vs_reference``: capital / ``reference``'s − 1 in the
    same block, over the assets both have (:func:`~pipelines.policy_eval.acceptance.
    relative_capital`). Read after the freeze, for the report: nothing is chosen on it. Needs the
    comparators (``static``, ``aave_v3``) in ``paths`` for the budgets."""
    u, ev = cfg.features.update_interval_days, cfg.evaluation
    present = [n for n in dict.fromkeys(names) if n in paths]
    if not present:
        return pd.DataFrame(columns=BY_YEAR_COLUMNS)
    last = realized_end(paths[present[0]], u)  # blocks end with the data, as the tail's do
    end = last if ev.evaluation_end is None or last is None else min(ev.evaluation_end, last)
    frames = []
    for label, lo, hi in year_blocks(ev.evaluation_start, end):
        caps = budgets(paths, cfg, lo, hi)
        judged = [t.assign(policy=n) for n in present
                  if (t := judge_between(paths[n], cfg, lo, hi, caps)) is not None]
        if not judged:
            continue
        table = pd.concat(judged, ignore_index=True)
        ranked = rank(table)
        vs = relative_capital(table.set_index(["policy", "asset"])["capital"], reference)
        ranked["capital_vs_reference"] = ranked["policy"].map(vs)
        order = {n: i for i, n in enumerate(present)}
        ranked = ranked.sort_values("policy", key=lambda c: c.map(order))
        frames.append(ranked.assign(block=label, start=lo, end=hi))
    if not frames:
        return pd.DataFrame(columns=BY_YEAR_COLUMNS)
    return pd.concat(frames, ignore_index=True)[BY_YEAR_COLUMNS]


class Verdicts:
    """The acceptance tables of one evaluation, each (policy, period, budgets) judged once.

    The selection judges the candidates on the selection period; the report judges them
    again beside the comparators on both periods. Calling the same ``Verdicts`` for both
    reuses the selection-period verdicts the choice was made on instead of computing them a
    second time; the table is the same either way. One instance per evaluation: within it a
    policy name stands for one path, so handing another path under a name already judged is
    an error, not a silent reuse. On a Dask ``engine`` each policy is one task.
    """

    def __init__(self, cfg: Config, engine: Engine | None = None) -> None:
        self.cfg, self.engine = cfg, engine
        self._paths: dict[str, pd.DataFrame] = {}
        self._done: dict[tuple[str, str, Any], pd.DataFrame | None] = {}

    def __call__(self, paths: Mapping[str, pd.DataFrame], period: str,
                 caps: Mapping[str, float] | None = None) -> pd.DataFrame:
        """Per policy and asset acceptance on one period's rows (``policy`` column first)."""
        for name, path in paths.items():
            if self._paths.setdefault(name, path) is not path:
                raise ValueError(f"policy {name!r} was judged on another path in this "
                                 "evaluation: one name, one path")
        cap_key = None if caps is None else tuple(sorted(caps.items()))
        todo = [(n, p) for n, p in paths.items() if (n, period, cap_key) not in self._done]
        judge_one = partial(_judge_one, cfg=self.cfg, period=period, caps=caps)
        engine = self.engine
        done = (engine.map(judge_one, todo) if engine is not None and engine.kind == "dask"
                else [judge_one(item) for item in todo])
        for (name, _), frame in zip(todo, done, strict=True):
            self._done[(name, period, cap_key)] = frame
        frames = [f for f in (self._done[(n, period, cap_key)] for n in paths) if f is not None]
        if not frames:
            return pd.DataFrame(columns=["policy", "period", "asset", "acceptable", "capital"])
        out = pd.concat(frames, ignore_index=True)
        return out[["policy", "period",
                    *[c for c in out.columns if c not in ("policy", "period")]]]


def judge(paths: Mapping[str, pd.DataFrame], cfg: Config, period: str,
          caps: Mapping[str, float] | None = None, engine: Engine | None = None
          ) -> pd.DataFrame:
    """Per policy and asset acceptance on one period's rows (``policy`` column first).

    The budgets (set by Aave v3 and the static table, both at LB 1.05) are compared with the
    policy's stress bad debt with its LB held at ``evaluation.comparison_lb``. A one-off
    judgement; an evaluation that judges the same paths again keeps a :class:`Verdicts`.
    """
    return Verdicts(cfg, engine)(paths, period, caps)


def rank(table: pd.DataFrame) -> pd.DataFrame:
    """One row per policy: assets acceptable and judged, capital, breaches, bad debt; best
    first (most acceptable assets, then least capital, then the name)."""
    if "unproven" not in table:  # rows judged before the rule (or built by hand): none
        table = table.assign(unproven=False)
    per = table.groupby("policy").agg(
        acceptable=("acceptable", "sum"), assets=("asset", "size"),
        capital=("capital", "mean"), breaches=("breaches", "sum"),
        bad_debt_lt_sum=("bad_debt_lt_sum", "sum"),
        stress_bad_debt=("stress_bad_debt_lt", "sum"),
        unproven=("unproven", "sum")).reset_index()
    per["acceptable"] = per["acceptable"].astype(int)
    per["unproven"] = per["unproven"].astype(int)
    return per.sort_values(["acceptable", "capital", "policy"],
                           ascending=[False, True, True]).reset_index(drop=True)


def assets_without(table: pd.DataFrame, policy: str) -> list[str]:
    """The assets ``table`` judged for some policy but not for ``policy`` (where its
    forecaster failed in the walk-forward, so the backtest has no path), sorted."""
    return sorted(set(table["asset"]) - set(table.loc[table["policy"] == policy, "asset"]))


def rank_like_for_like(table: pd.DataFrame, universe: Collection[str] | None = None
                       ) -> pd.DataFrame:
    """:func:`rank` of candidates that must be compared on the same assets.

    A candidate has no path on an asset where its forecaster failed (the backtest leaves the
    failed model-asset pair out); judged only where it has one, it would need fewer assets
    acceptable and average its capital over the easier ones, so a model could win by failing
    on the hardest asset. Here every candidate is counted over the union of the candidates'
    assets (``assets``; an asset without a path is not acceptable: its forecaster cannot
    serve it), and candidates tied on that count are ordered by their capital over the assets
    they all have (``capital_compared``); ``capital`` stays each one's own mean. ``universe``
    (default: the table's assets) names the assets judged in the step before, so that a
    second step among one forecaster's variants still counts the assets it cannot serve.
    """
    per = rank(table)
    held = table.groupby("policy")["asset"].agg(frozenset)
    per["assets"] = len(set(table["asset"]) | set(universe or ()))
    per["capital_compared"] = per["capital"]
    for _, tied in per.groupby("acceptable"):
        sets = [held[p] for p in tied["policy"]]
        common = frozenset.intersection(*sets)
        if len(tied) > 1 and any(s != common for s in sets):
            mean = (table[table["asset"].isin(common)].groupby("policy")["capital"].mean()
                    if common else pd.Series(dtype=float))
            per.loc[tied.index, "capital_compared"] = tied["policy"].map(mean).to_numpy()
    return per.sort_values(["acceptable", "capital_compared", "policy"],
                           ascending=[False, True, True], na_position="last"
                           ).reset_index(drop=True)


def _unproven_text(row: pd.Series) -> str:
    """The unproven assets of a ranked candidate (passing every test it could be judged on,
    on fewer days than a verdict needs or without a stress budget: counted as not
    acceptable), where there are any."""
    unproven = int(row.get("unproven", 0) or 0)
    return (f" ({unproven} unproven: too few days, or no stress budget, to judge)"
            if unproven else "")


def _capital_text(row: pd.Series) -> str:
    """A ranked candidate's capital, and the one it was compared on where that differs
    (a tie with a candidate that lacks some of its assets)."""
    text = f"capital {row['capital']:.4f}"
    compared = float(row["capital_compared"])
    if compared == compared and abs(compared - float(row["capital"])) >= 5e-5:
        text += f" ({compared:.4f} on the assets the tied candidates share)"
    return text


def choose(selection_table: pd.DataFrame, settings: Mapping[str, Mapping[str, Any]],
           universe: Collection[str] | None = None) -> Frozen:
    """Freeze the best candidate of the selection-period table (only candidate policies),
    compared like for like over ``universe`` and the table's assets
    (:func:`rank_like_for_like`)."""
    mine = selection_table[selection_table["policy"].isin(list(settings))]
    ranked = rank_like_for_like(mine, universe) if len(mine) else mine
    if ranked.empty:
        raise ValueError("no candidate has enough days with a realized loss in the selection "
                         "period to be judged: set evaluation.selection_start/selection_end "
                         "inside the out-of-sample period (backtest.oos_start)")
    best = ranked.iloc[0]
    chosen = dict(settings[best["policy"]])
    alias = str(chosen.pop("forecaster"))
    runner = ranked.iloc[1] if len(ranked) > 1 else None
    reason = (f"{best['policy']} frozen on the selection period: acceptable on "
              f"{best['acceptable']}/{best['assets']} assets{_unproven_text(best)}, "
              f"{_capital_text(best)}")
    if runner is not None:
        reason += (f"; next {runner['policy']} ({runner['acceptable']}/{runner['assets']}"
                   f"{_unproven_text(runner)}, {_capital_text(runner)})")
    return Frozen(str(best["policy"]), alias, chosen, reason, ranked)


def knob_reason(first: str, best: str, moved: bool) -> str:
    """The reason of a choice made in two steps (a candidate, then among it and its knob
    variants), as the frozen record and the run's log give it."""
    return (f"{first}; then, among it and its knob variants: {best}"
            + ("" if moved else " (the configured knobs kept)"))


def evaluate(paths: Mapping[str, pd.DataFrame], comparators: Mapping[str, pd.DataFrame],
             settings: Mapping[str, Mapping[str, Any]], cfg: Config
             ) -> tuple[Frozen, pd.DataFrame]:
    """Choose on the selection period, then judge everything on both periods.

    Returns the frozen choice and the long table (``period`` column: selection, evaluation)."""
    caps = {k: budgets(comparators, cfg, *periods(cfg)[k]) for k in (SELECTION, EVALUATION)}
    candidates = {n: paths[n] for n in settings}
    verdicts = Verdicts(cfg)
    frozen = choose(verdicts(candidates, SELECTION, caps[SELECTION]), settings)
    everything = {**paths, **comparators}
    tables = [verdicts(everything, k, caps[k]) for k in (SELECTION, EVALUATION)]
    return frozen, pd.concat(tables, ignore_index=True)


def headline(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Evaluation-period figures of ``names`` with the selection period's beside them."""
    rows = []
    for period, g in table[table["policy"].isin(names)].groupby("period"):
        rows.append(rank(g).assign(period=period))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if out.empty:
        return out
    wide = out.pivot_table(index="policy", columns="period",
                           values=["acceptable", "assets", "capital", "breaches",
                                   "bad_debt_lt_sum", "stress_bad_debt"])
    wide.columns = [f"{v}_{p[:3]}" for v, p in wide.columns]
    order = [n for n in names if n in wide.index]
    return wide.loc[order].reset_index()


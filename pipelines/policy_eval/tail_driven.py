r"""Tail-driven policies: MMF from a tail model's walk-forward VaR and ES of the covered loss.

A candidate ``tail:<model>@confidence=<q>`` replays the margin policy through
:func:`serving.decide.decide` (the function the batch job runs) with the tail model's
out-of-sample forecast of the covered loss at level ``q`` (long side, fractions of position
value) as the direct tail ``PolicyInputs.tail_var`` / ``tail_es``, and ``policy.confidence =
q`` (the level of the stress floor's ES, as for the variance-driven candidates). Inside
``decide`` the direct tail is standardized as :math:`z = -\ln(1 - \mathrm{tail}) / \sigma`,
so the tail term of MMF is the forecast ES itself,

.. math:: \mathrm{MMF}^*_{tail} = 1 - e^{-z_{ES}\,\sigma} = \mathrm{ES}_q,

and the anti-procyclical IMF terms rescale it by :math:`\sigma_{stress}/\sigma`: a
stressed σ's margin, for a tail that moves with σ. An **unconditional** tail
(:data:`UNCONDITIONAL`: historical simulation) does not, and rescaling it would double the
IMF in calm weeks and shrink it in crashes; it is already a through-the-cycle margin, so its
candidates keep only the IMF buffer (``policy.apc.buffer``, the static table's IMF rule) and
not the stressed-σ and long-run-σ terms (:func:`tail_policy_path`). Everything
else is the configured policy (stress floor, loss memory, parameter roles, LB pricing the
liquidation); σ, which LB, the APC terms and the jump fail-safe read, comes from the
``ewma94`` walk-forward for every tail candidate (:data:`SIGMA_MODEL`): the σ of the EWMA-FHS
comparator, so that a tail-driven policy differs from EWMA-FHS by its tail only.

**Same loss, out of sample.** :func:`models.tail.backtest.tail_walk_forward` forecasts, at
cutoff ``t``, the covered loss of ``(t, t+U]`` (``target_date = cutoff + U``) with
parameters fitted on rows dated ``<=`` the refit date ``<= t`` (training targets realized by
then); :class:`serving.inputs.AssetHistory` holds against each cutoff the loss of the same
interval. :func:`check_tail_forecasts` refuses a forecast frame that says otherwise (another
interval, the intrabar loss when the policy covers the close-to-close one, a fit after its
cutoff).

**Missing forecast.** Where the tail model has no forecast at a cutoff (an asset before its
first fit, fewer standardized losses than ``min_obs``), that day falls back to the policy's
own FHS tail on the same σ and is flagged (``tail_fallback``) and counted
(:func:`fallback_counts`), so every policy is judged on the same days.

**Protocol** (:func:`evaluate_tail_policies`): every candidate is judged by the one
acceptance function (:class:`pipelines.policy_eval.protocol.Verdicts`, budgets from the
comparators) on the selection period; the one with most assets acceptable, then least
capital, is frozen (:func:`pipelines.policy_eval.protocol.choose`), then, as for the
variance-driven policy (``evaluation.choose_knobs``), its knob variants are replayed and
judged beside it on the same period by the same rule (:func:`choose_tail_knob`); the
evaluation period is
reported beside the selection period together with EWMA-FHS at 99 %, the frozen
variance-driven policy and the yearly recalibrated static table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from configs.schema import Config
from models.base import asset_frame
from pipelines.policy_eval.acceptance import capital_by_policy
from pipelines.policy_eval.backtest import replay_all, with_outcomes
from pipelines.policy_eval.compare import candidate_name as variance_name
from pipelines.policy_eval.compare import comparator_paths, replay_many, setting, slim
from pipelines.policy_eval.frontier import cheapest_as_safe, points_by_period
from pipelines.policy_eval.protocol import (
    EVALUATION,
    SELECTION,
    Frozen,
    Verdicts,
    budgets,
    choose,
    headline,
    in_period,
    knob_reason,
    periods,
    rank_like_for_like,
)
from pipelines.policy_eval.stability import threshold_swings
from serving.inputs import asset_history
from serving.seasoning import reference as stress_reference

SIGMA_MODEL = "ewma94"      # σ of every tail-driven candidate (module docstring)
COMPARATOR_LEVEL = 0.99     # EWMA-FHS at 99 %: the clearing-house comparator
SIDE = "long"               # a lender's collateral is long the asset
UNCONDITIONAL = frozenset({"hs"})  # tail models whose tail does not scale with σ (docstring)
# ... and the settings their candidates are replayed and served with: no σ-rescaled APC terms
UNCONDITIONAL_OVERRIDES = {"policy.apc.stress_enabled": False, "policy.apc.floor_enabled": False}


def tail_overrides(model: str) -> dict[str, Any]:
    """The settings a candidate driven by ``model`` is replayed (and registered) with on top
    of its own: an :data:`UNCONDITIONAL` model's have no σ-rescaled APC terms."""
    return dict(UNCONDITIONAL_OVERRIDES) if model in UNCONDITIONAL else {}


def prefers_tail(across: Mapping[str, Any]) -> bool:
    """Whether :func:`across_kinds` ranks the tail-driven policy first (False when empty)."""
    return bool(across) and across["rule_prefers"] == across["tail_driven"]["policy"]
POLICY_LOSS = {"worst_window": "close"}  # policy.loss → the tail models' loss_variant


def candidate_name(model: str, level: float) -> str:
    return f"tail:{model}@confidence={level:g}"


def check_tail_forecasts(tails: pd.DataFrame, cfg: Config) -> None:
    """Refuse tail forecasts that do not forecast what the policy covers (module docstring).

    ``tails`` carries ``model`` + the tail frame columns + ``fitted_through``.
    """
    u = cfg.features.update_interval_days
    if cfg.policy.loss not in POLICY_LOSS:
        raise ValueError(f"policy.loss={cfg.policy.loss!r} has no tail forecast: the tail "
                         f"models forecast the worst-window loss ({sorted(POLICY_LOSS)})")
    for model in tails["model"].unique():
        section = getattr(cfg.tail, str(model), None)
        variant = getattr(section, "loss_variant", None)
        if variant != POLICY_LOSS[cfg.policy.loss]:
            raise ValueError(f"tail.{model}.loss_variant={variant!r}: the policy covers the "
                             f"{POLICY_LOSS[cfg.policy.loss]!r} loss ({cfg.policy.loss})")
    gap = (tails["target_date"] - tails["cutoff"]).dt.days
    if len(tails) and not (gap == u).all():
        bad = tails[gap != u].iloc[0]
        raise ValueError(f"tail forecast of {bad['model']} {bad['asset']} at {bad['cutoff']:%F} "
                         f"targets {bad['target_date']:%F}: the policy covers the next "
                         f"{u}-day interval")
    if "fitted_through" in tails and (tails["fitted_through"] > tails["cutoff"]).any():
        bad = tails[tails["fitted_through"] > tails["cutoff"]].iloc[0]
        raise ValueError(f"tail forecast of {bad['model']} {bad['asset']} at {bad['cutoff']:%F} "
                         f"was fitted through {bad['fitted_through']:%F}: not out of sample")


def tail_series(tails: pd.DataFrame, model: str, asset: str, level: float,
                dates: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """(VaR, ES) of the long covered loss at ``level`` on ``dates`` (NaN where none)."""
    rows = tails[(tails["model"] == model) & (tails["asset"] == asset)
                 & (tails["side"] == SIDE) & np.isclose(tails["level"], level)]
    rows = rows.set_index("cutoff").sort_index()
    if rows.index.has_duplicates:
        raise ValueError(f"tail forecasts of {model} {asset} at {level:g} repeat a cutoff")
    return (rows["var"].reindex(dates).to_numpy(float),
            rows["es"].reindex(dates).to_numpy(float))


def tail_policy_path(panel: pd.DataFrame, variance: pd.DataFrame, tails: pd.DataFrame,
                     model: str, level: float, cfg: Config) -> pd.DataFrame:
    """Daily published parameters and outcomes of one tail-driven candidate (slim columns
    and ``tail_fallback``); ``variance`` is the σ model's walk-forward forecast frame. An
    :data:`UNCONDITIONAL` model's candidate has no σ-rescaled APC terms (module docstring)."""
    if extra := tail_overrides(model):
        cfg = cfg.with_overrides(extra)
    named, pairs = [], []
    references = stress_reference(panel, [cfg.policy])  # the whole panel's young-asset floor
    for asset in sorted(variance["asset"].unique()):
        h = asset_history(asset_frame(panel, asset), variance[variance["asset"] == asset], cfg)
        if not len(h.dates):  # no forecast at the update interval: nothing to publish
            continue
        named.append((asset, h))
        pairs.append(tail_series(tails, model, asset, level, h.dates))
    path = with_outcomes(replay_all(named, cfg, pairs, None,  # every asset's updates at once
                                    references.get(cfg.policy.loss)))
    return slim(path).assign(tail_fallback=path["tail_fallback"].astype(bool))


def replay_tail_candidates(panel: pd.DataFrame, variance: pd.DataFrame, tails: pd.DataFrame,
                           cfg: Config) -> tuple[dict[str, pd.DataFrame],
                                                 dict[str, dict[str, Any]]]:
    """Every tail model × level of ``tails``: (paths, settings) by candidate name, replayed in
    ``backtest.n_jobs`` processes."""
    check_tail_forecasts(tails, cfg)
    jobs = [(str(m), float(q)) for m in tails["model"].unique()
            for q in sorted(tails.loc[tails["model"] == m, "level"].unique())]
    done = Parallel(n_jobs=cfg.backtest.n_jobs)(
        delayed(tail_policy_path)(panel, variance, tails, m, q,
                                  cfg.with_overrides({"policy.confidence": q}))
        for m, q in jobs)
    paths = {candidate_name(m, q): p for (m, q), p in zip(jobs, done, strict=True)}
    settings = {candidate_name(m, q): {"forecaster": m, "policy.confidence": q}
                for m, q in jobs}
    return paths, settings


def fallback_counts(paths: Mapping[str, pd.DataFrame], cfg: Config) -> pd.DataFrame:
    """Days on which a candidate fell back to the FHS tail, per period (of days judged)."""
    u, rows = cfg.features.update_interval_days, []
    for name, path in paths.items():
        row: dict[str, object] = {"policy": name}
        for period, (start, end) in periods(cfg).items():
            cut = in_period(path, start, end, u)
            row[f"fallback_days_{period[:3]}"] = int(cut["tail_fallback"].sum())
            row[f"days_{period[:3]}"] = len(cut)
        rows.append(row)
    return pd.DataFrame(rows)


def tail_knob_variants(frozen: Frozen, cfg: Config) -> dict[str, dict[str, Any]]:
    """The frozen tail candidate with each ``evaluation.frontier_knobs`` setting varied
    alone (the configured value is the frozen candidate itself): name → its settings."""
    level = float(frozen.overrides["policy.confidence"])
    out: dict[str, dict[str, Any]] = {}
    for key, values in cfg.evaluation.frontier_knobs.items():
        current = setting(cfg, key)
        for value in values:
            if value != current:
                name = (f"{candidate_name(frozen.forecaster, level)},"
                        f"{key.split('.')[-1]}={value}")
                out[name] = {"forecaster": frozen.forecaster, "policy.confidence": level,
                             key: value}
    return out


def choose_tail_knob(frozen: Frozen, panel: pd.DataFrame, variance: pd.DataFrame,
                     tails: pd.DataFrame, cfg: Config, paths: dict[str, pd.DataFrame],
                     settings: dict[str, dict[str, Any]],
                     judge: Callable[[dict[str, pd.DataFrame]], pd.DataFrame]) -> Frozen:
    """The second step of the tail-driven choice, as the variance-driven protocol's
    (:func:`pipelines.policy_eval.pipeline.choose_knob`): the frozen candidate's knob
    variants are replayed, judged beside it on the selection period by the same acceptance
    function (``judge``: paths → the selection period's verdicts) and ranked by the same
    rule; the best is frozen. ``paths`` and ``settings`` gain the variants (reported beside
    the candidates)."""
    variants = tail_knob_variants(frozen, cfg)
    if not variants:
        return frozen
    universe = set(judge(dict(paths))["asset"])  # the first step's assets (its verdicts)
    jobs = list(variants.items())
    done = Parallel(n_jobs=cfg.backtest.n_jobs)(
        delayed(tail_policy_path)(panel, variance, tails, frozen.forecaster,
                                  float(s["policy.confidence"]),
                                  cfg.with_overrides({k: v for k, v in s.items()
                                                      if k != "forecaster"}))
        for _, s in jobs)
    paths.update({n: p for (n, _), p in zip(jobs, done, strict=True)})
    settings.update(variants)
    options = {frozen.name: settings[frozen.name], **variants}
    best = choose(judge({n: paths[n] for n in options}), options, universe)
    return dataclasses.replace(frozen, name=best.name, overrides=best.overrides,
                               reason=knob_reason(frozen.reason, best.reason,
                                                  best.name != frozen.name))


@dataclass(frozen=True)
class TailPolicyEvaluation:
    frozen: Frozen                        # the tail-driven choice of the selection period
    paths: dict[str, pd.DataFrame]        # every replayed or given path, by policy name
    table: pd.DataFrame                   # acceptance per policy × period × asset
    headline: pd.DataFrame                # reported policies, evaluation beside selection
    fallback: pd.DataFrame                # FHS-fallback days per candidate and period
    ewma: str                             # name of the EWMA-FHS comparator
    # EWMA-FHS's cheapest level as safe as the frozen candidate (:func:`tail_as_safe`)
    as_safe: pd.DataFrame = field(default_factory=pd.DataFrame)
    # the frozen candidate against the variance-driven policy ``volmargin run`` froze, by the
    # choice's own rule on the selection period (:func:`across_kinds`; empty without it)
    across: dict[str, Any] = field(default_factory=dict)
    # the σ model's walk-forward forecasts every candidate read (:data:`SIGMA_MODEL`): what a
    # registered tail-driven policy bundles as its stored σ forecasts
    sigma: pd.DataFrame = field(default_factory=pd.DataFrame)
    # ... and what that walk-forward left out (models.backtest failure rows): a registered
    # tail-driven policy serves those assets the fail-safe
    sigma_failures: pd.DataFrame = field(default_factory=pd.DataFrame)
    # the tail models' walk-forward forecasts the candidates read: what a registered
    # tail-driven policy stores up to its fit cutoff (serving.tail_source)
    tails: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def preferred(self) -> bool:
        """Whether the choice's rule ranks the frozen tail-driven policy above the frozen
        variance-driven one on the selection period (:func:`across_kinds`)."""
        return prefers_tail(self.across)  # its tail-driven row is the frozen one


def tail_capital_table(ev: TailPolicyEvaluation, tails: pd.DataFrame, cfg: Config,
                       level: float = COMPARATOR_LEVEL) -> pd.DataFrame:
    """Where the capital of the tail-driven policies goes on the evaluation period, and how
    much their margin moves: every model's candidate at ``level``, the frozen candidate,
    EWMA-FHS and the reference paths. Columns: the capital parts
    (:func:`pipelines.policy_eval.acceptance.capital_by_policy`); ``tail_es``, the mean ES of
    the covered loss the candidate's model forecast (long side, its level) over the same
    asset-days, then over assets: the tail term before the stress floor, the loss memory and
    the parameter roles (NaN for a policy without a tail model); ``tail_es_daily_move``, the
    mean absolute day-to-day change of its log (per asset, then over assets: how much the
    forecast jitters; the roles tighten at once and loosen by announced steps, so jitter
    ratchets the margin in force up); ``mmf_peak_to_trough`` and
    ``mmf_max_rise_30d``, means over assets (:func:`stability.threshold_swings`); and
    ``vs_ewma_fhs``, capital relative to EWMA-FHS over the assets both have. A sharper tail
    (lower ``tail_es``) that moves more can still need more margin in force (``mmf``): the
    margin takes the largest of its terms and loosens only by announced steps."""
    start, end = periods(cfg)[EVALUATION]
    u = cfg.features.update_interval_days
    models = sorted(set(tails["model"])) if len(tails) else []
    tail_of = {ev.frozen.name: (ev.frozen.forecaster,
                                float(ev.frozen.overrides["policy.confidence"])),
               **{candidate_name(m, level): (m, level) for m in models}}  # name → (model, q)
    names = [n for n in dict.fromkeys([*tail_of, ev.ewma,
                                       *(n for n in ev.paths if n.startswith("policy:"))])
             if n in ev.paths]
    rows = pd.concat([in_period(ev.paths[n], start, end, u).assign(policy=n) for n in names],
                     ignore_index=True)
    table = capital_by_policy(rows, names, ev.ewma if ev.ewma in names else None)
    es = tails[tails["side"] == SIDE].rename(columns={"cutoff": "date"})
    extra = []
    for name in table.index:
        p = rows[(rows["policy"] == name) & np.isfinite(rows["loss_frac"].to_numpy(float))]
        swings = threshold_swings(p).mean(numeric_only=True)
        tail_es = tail_move = np.nan
        if name in tail_of:
            model, q = tail_of[name]
            mine = es[(es["model"] == model) & np.isclose(es["level"], q)]
            joined = (p[["asset", "date"]].merge(mine[["asset", "date", "es"]], how="inner")
                      .sort_values(["asset", "date"]))
            by_asset = joined.groupby("asset")["es"]
            tail_es = float(by_asset.mean().mean())
            tail_move = float(by_asset.apply(
                lambda e: np.abs(np.diff(np.log(e.to_numpy(float)))).mean()).mean())
        extra.append({"tail_es": tail_es, "tail_es_daily_move": tail_move,
                      "mmf_peak_to_trough": float(swings.get("mmf_peak_to_trough", np.nan)),
                      "mmf_max_rise_30d": float(swings.get("mmf_max_rise_30d", np.nan))})
    table = table.assign(**pd.DataFrame(extra, index=table.index))
    if "vs_reference" in table:  # last, as the reader expects it
        table["vs_ewma_fhs"] = table.pop("vs_reference")
    return table.reset_index()


def with_saving(table: pd.DataFrame, ewma: str) -> pd.DataFrame:
    """Add the capital saving against ``ewma`` per period, ``1 - capital/capital_ewma``, and
    whether bad debt (summed, and over the stress episodes) is no higher than its."""
    out = table.copy()
    if ewma not in set(out["policy"]):
        return out
    base = out.set_index("policy").loc[ewma]
    for p in ("eva", "sel"):
        if f"capital_{p}" not in out:
            continue
        out[f"capital_saving_{p}"] = 1.0 - out[f"capital_{p}"] / base[f"capital_{p}"]
        out[f"bad_debt_ok_{p}"] = (
            (out[f"bad_debt_lt_sum_{p}"] <= base[f"bad_debt_lt_sum_{p}"] + 1e-12)
            & (out[f"stress_bad_debt_{p}"] <= base[f"stress_bad_debt_{p}"] + 1e-12))
    return out


def evaluate_tail_policies(panel: pd.DataFrame, variance: pd.DataFrame, tails: pd.DataFrame,
                           cfg: Config, reference: Mapping[str, pd.DataFrame] | None = None,
                           variance_frozen: str | None = None) -> TailPolicyEvaluation:
    """Replay the tail-driven candidates, freeze one on the selection period, report both
    periods beside EWMA-FHS at 99 %, the ``reference`` paths (e.g. the frozen
    variance-driven policy, by name) and the static table (module docstring).
    ``variance_frozen``: the name, among ``reference``, of the policy ``volmargin run`` froze,
    ranked against the frozen candidate (:func:`across_kinds`) under ``selection.rule:
    policy``."""
    paths, settings = replay_tail_candidates(panel, variance, tails, cfg)
    ewma = variance_name(SIGMA_MODEL, {"policy.confidence": COMPARATOR_LEVEL}, cfg)
    # EWMA-FHS at 99 % (the comparator) and at every other level of its sweep (the grid and
    # evaluation.comparator_levels: the as-safe comparison), replayed together
    levels = sorted({COMPARATOR_LEVEL, *map(float, cfg.evaluation.grid.get(
        "policy.confidence", [])), *map(float, cfg.evaluation.comparator_levels)})
    sweep = dict(zip(levels, replay_many(
        panel, [(variance, cfg.with_overrides({"policy.confidence": q})) for q in levels],
        cfg), strict=True))
    ewma_path = sweep[COMPARATOR_LEVEL]
    comparators, _ = comparator_paths(panel, ewma_path, cfg)
    caps = {k: budgets(comparators, cfg, *periods(cfg)[k]) for k in (SELECTION, EVALUATION)}
    verdicts = Verdicts(cfg)  # the choice's verdicts reused by the report
    frozen = choose(verdicts(paths, SELECTION, caps[SELECTION]), settings)
    if cfg.evaluation.choose_knobs:
        frozen = choose_tail_knob(frozen, panel, variance, tails, cfg, paths, settings,
                                  lambda p: verdicts(p, SELECTION, caps[SELECTION]))
    everything = {**paths, ewma: ewma_path, **dict(reference or {}), **comparators}
    table = pd.concat([verdicts(everything, k, caps[k]) for k in (SELECTION, EVALUATION)],
                      ignore_index=True)
    reported = [frozen.name, *[n for n in paths if n != frozen.name], ewma,
                *[n for n in (reference or {}) if n != ewma], "static"]
    ranks = variance_frozen is not None and cfg.selection.rule == "policy"
    return TailPolicyEvaluation(
        frozen=frozen, paths=everything, table=table,
        headline=with_saving(headline(table, reported), ewma),
        fallback=fallback_counts(paths, cfg), ewma=ewma,
        as_safe=tail_as_safe(frozen, everything[frozen.name], sweep, cfg),
        # only where the variance-driven choice was made by the same rule (the forecast rule
        # chooses by QLIKE, which a tail-driven candidate has not)
        across=across_kinds(table, variance_frozen, frozen.name) if ranks else {},
        sigma=variance, tails=tails)


def across_kinds(table: pd.DataFrame, variance: str, tail: str) -> dict[str, Any]:
    """The two frozen policies, the ``variance``-driven one that ``volmargin run`` froze (the
    one it registers; served once the gate promotes it) and the ``tail``-driven one, ranked
    by the choice's rule (most assets acceptable, then least capital, like for like over the
    assets judged: :func:`~pipelines.policy_eval.protocol.rank_like_for_like`) on the
    selection period, as one choice spanning both kinds would rank them. ``{"rule_prefers",
    "variance_driven", "tail_driven"}``, each of the last two ``{"policy", "acceptable",
    "assets", "capital", "capital_compared"}`` (own LB; ``capital_compared``: over the assets
    both have a path on, what a tie on acceptable assets is broken by); empty where either was
    not judged on the selection period. Acted on by ``volmargin run`` with ``tail.in_run``
    (it registers the policy ranked first: :func:`pipelines.steps.step_register`); on its own,
    ``volmargin tail`` only reports it."""
    sel = table[table["period"] == SELECTION]
    sel = sel[sel["policy"].isin([variance, tail])]
    if set(sel["policy"]) != {variance, tail}:
        return {}
    ranked = rank_like_for_like(sel, set(table.loc[table["period"] == SELECTION, "asset"]))
    rows = {str(r.policy): {"policy": str(r.policy), "acceptable": int(r.acceptable),
                            "assets": int(r.assets), "capital": round(float(r.capital), 6),
                            "capital_compared": round(float(r.capital_compared), 6)}
            for r in ranked.itertuples()}
    return {"rule_prefers": str(ranked["policy"].iloc[0]), "variance_driven": rows[variance],
            "tail_driven": rows[tail]}


def ranked_text(row: Mapping[str, Any], counted: bool = True) -> str:
    """``12/12 acceptable, capital 0.2536`` of an :func:`across_kinds` row, with the capital
    the tie was broken by where it differs (a policy without a path on some asset)."""
    head = (f"{row['acceptable']}/{row['assets']} acceptable, " if counted
            else f"{row['acceptable']}/{row['assets']}, ")
    compared = row.get("capital_compared", row["capital"])
    same = not np.isfinite(compared) or abs(compared - row["capital"]) < 5e-7
    return head + (f"capital {row['capital']:.4f}" if same else
                   f"capital {row['capital']:.4f}, {compared:.4f} on the assets both have")


def across_lines(across: Mapping[str, Any], registers: bool = False) -> list[str]:
    """One warning where the rule ranks the tail-driven policy above the variance-driven
    one and this command does not register it (``registers``: the tail step runs inside
    ``volmargin run``, whose choice then spans both kinds and registers it)."""
    if registers or not prefers_tail(across):
        return []
    t, v = across["tail_driven"], across["variance_driven"]
    return [f"on the selection period the choice's rule ranks the tail-driven {t['policy']} "
            f"({ranked_text(t)}) above the variance-driven {v['policy']} that volmargin run "
            f"froze ({ranked_text(v, counted=False)}); volmargin run registers the "
            "variance-driven one unless the tail step runs inside it (tail.in_run: true), "
            "when one choice spans both kinds (outputs/tail/policy_frozen.json, across_kinds)"]


def tail_as_safe(frozen: Frozen, path: pd.DataFrame, sweep: Mapping[float, pd.DataFrame],
                 cfg: Config) -> pd.DataFrame:
    """The frozen tail-driven candidate against EWMA-FHS's sweep (``sweep``: level → path),
    per period, pooled at ``evaluation.comparison_lb``: EWMA-FHS's cheapest level with no
    more bad debt (:func:`pipelines.policy_eval.frontier.cheapest_as_safe`), "capital at
    equal-or-better bad debt" read on its sweep rather than at its 99 % alone."""
    q = float(frozen.overrides.get("policy.confidence", cfg.policy.confidence))
    items = [(frozen.name, q, path), *((SIGMA_MODEL, level, p) for level, p in sweep.items())]
    return cheapest_as_safe(points_by_period(items, cfg), (frozen.name, q), [SIGMA_MODEL])

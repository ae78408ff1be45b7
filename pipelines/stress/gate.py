"""The stress condition of the promotion gate: a challenger whose parameters would leave more
bad debt than the budget on the standard scenarios is refused.

The *standard* scenarios are the deterministic market-wide ones (historical as they happened
and filtered, the listed episodes and the stress days found in the data,
``stress.found_days``; the beta, correlation-one and volatility shocks); the Monte Carlo tail
is reported, not gated, because it moves with the seed and path count. The budget
``stress.max_bad_debt_share`` is a share of the debt each scenario could evaluate (an
account holding an asset not listed in an episode is excluded, and its debt does not dilute
the share), so it does not depend on the book's size. A single asset's −90% collapse, which
no margin absorbs, is judged apart against ``stress.max_collapse_bad_debt_share`` (a
concentration limit, off by default): in one maximum with the others it would decide every
gate alone. The refusal text goes into the gate's reason, which the registry keeps in the
alias history.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from configs.schema import Config
from models.base import Forecaster
from pipelines.stress.job import stress_parameters
from serving.apply import policy_frame


def stress_refusal(summary: dict[str, Any], budget: float | None,
                   collapse_budget: float | None = None) -> str | None:
    """Why the stress refuses a challenger (None: it does not, or no budget is set).

    A market-wide hypothetical shock that could not be built (its shock asset stale, without
    a forecast, or not among the published assets, e.g. ``stress.shock_asset`` misspelt:
    ``skipped_scenarios``) refuses too: the gate cannot say the budget holds on a scenario it
    did not run; with a budget set, a universe without the shock asset needs another one.
    The collapse of an unusable asset is not one: its
    holders are excluded from every scenario."""
    reasons = []
    if budget is not None:
        unjudged = [item for item in summary.get("skipped_scenarios", [])
                    if item["kind"] == "hypothetical"
                    and not item["scenario"].endswith("_collapse")]
        if unjudged:
            return "stress cannot judge the challenger: " + "; ".join(
                f"{item['scenario']} skipped ({item['reason']})" for item in unjudged)
        share = float(summary["worst_standard_bad_debt_share"])
        if share > budget:
            reasons.append(f"stress bad debt {share:.3%} of the debt it evaluated in "
                           f"{summary['worst_standard']} > budget {budget:.3%}")
    if collapse_budget is not None:
        share = float(summary.get("worst_collapse_bad_debt_share", 0.0))
        if share > collapse_budget:
            reasons.append(f"collapse bad debt {share:.3%} of the book's debt in "
                           f"{summary['worst_collapse']} > budget {collapse_budget:.3%}")
    return "; ".join(reasons) or None


def challenger_stress(cfg: Config, parameters: pd.DataFrame, as_of: dt.date,
                      book_path: Path | str | None = None) -> str | None:
    """Stress a challenger's parameters for ``as_of`` on the standard scenarios and return the
    refusal reason for :func:`pipelines.selection.gate.gate` (``stress_refusal=``), or None.

    Nothing is published or logged: the challenger's parameters are not the published ones.
    """
    budget, collapse = cfg.stress.max_bad_debt_share, cfg.stress.max_collapse_bad_debt_share
    if budget is None and collapse is None:
        return None
    result = stress_parameters(cfg, parameters, as_of, book_path, monte_carlo=False)
    return stress_refusal(result.summary, budget, collapse)


def stress_gate_refusal(cfg: Config, forecaster: Forecaster, bundle: dict[str, Any],
                        features: pd.DataFrame) -> str | None:
    """The registration hook: the challenger's parameters at its fit cutoff (the policy
    applied exactly as serving would, :func:`serving.apply.policy_frame`), stressed on the
    standard scenarios. None without a budget, and then nothing is computed."""
    if cfg.stress.max_bad_debt_share is None and cfg.stress.max_collapse_bad_debt_share is None:
        return None
    cutoff = dt.date.fromisoformat(bundle["fit_cutoff"])
    return challenger_stress(cfg, policy_frame(forecaster, bundle, features, cutoff), cutoff)

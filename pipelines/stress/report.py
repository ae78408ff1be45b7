"""Stress results as tables: one row per scenario × asset (``stress.parquet``) and a summary.

Pure functions: outcomes in, frames and JSON-able dicts out. Per scenario, dollar figures
are means over its paths (a historical or hypothetical scenario has one path, so they are
exact); the Monte Carlo scenario adds the VaR and ES of the protocol's bad debt at 95% and
99% and the probability of any bad debt (:func:`var_es`).

Bad debt is shared two ways: ``bad_debt_share`` on the whole book's debt (comparable across
scenarios; what a single-asset collapse's budget reads) and ``bad_debt_share_evaluated`` on
the debt the scenario actually evaluated, the book's minus ``excluded_debt_usd`` (accounts
holding an asset without a move then; what the gate's budget on the market-wide scenarios
reads, ``worst_standard_bad_debt_share``). An episode that excludes a third of the book's
debt reads as a third milder on the first; the second says how bad it was for what it could
see, and is null when it saw no debt at all (never a plausible 0).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.stress.book import Book
from pipelines.stress.liquidation import Outcome
from pipelines.stress.scenarios import Scenario, Skipped

TOTAL = "ALL"
LEVELS = (0.95, 0.99)
STRESS_SCHEMA_VERSION = "3"  # bump on any breaking change of stress.parquet or the summary
#                             (2: excluded_debt_usd, bad_debt_share_evaluated, skipped
#                             scenarios, frozen-asset sizing of the synthetic book; 3: the
#                             worst standard scenario is market-wide, its share of the debt
#                             evaluated; single-asset collapses apart, worst_collapse)


def _f(name: str, type_: pa.DataType, description: str, unit: str | None = None, *,
       nullable: bool = True) -> pa.Field:
    meta = {"description": description} | ({"unit": unit} if unit else {})
    return pa.field(name, type_, nullable=nullable, metadata=meta)


STRESS_SCHEMA = pa.schema([
    _f("as_of", pa.date32(), "As-of day of the parameters stressed.", "date (UTC)",
       nullable=False),
    _f("scenario", pa.string(), "Scenario name, e.g. luna_ust_filtered.", nullable=False),
    _f("kind", pa.string(), "historical | filtered | hypothetical | monte_carlo.",
       nullable=False),
    _f("asset", pa.string(), "Collateral asset, or ALL for the scenario total.",
       nullable=False),
    _f("source", pa.string(), "Where the asset's move comes from: hourly, daily (flagged: "
       "no hourly data then), missing (no data then: accounts holding it excluded), a shock "
       "type, fhs or t_copula, or proxy:<asset> (Monte Carlo: listed too recently for the "
       "joint pool, moved by that asset's standardized returns at its own sigma); empty on "
       "the ALL row.", nullable=False),
    _f("paths", pa.int32(), "Paths in the scenario.", nullable=False),
    _f("worst_move", pa.float64(), "Lowest price relative minus 1 over the path (Monte "
       "Carlo: its 1% quantile over paths); null for a missing move or the ALL row.",
       "fraction of price"),
    _f("accounts_liquidated", pa.float64(), "Accounts liquidated (mean over paths); ALL "
       "row only.", "accounts"),
    _f("liquidated_value_usd", pa.float64(), "Collateral seized by liquidators at the "
       "scenario price (mean over paths).", "USD", nullable=False),
    _f("bad_debt_usd", pa.float64(), "Debt left unpaid after liquidation (mean over paths), "
       "attributed to collateral assets pro rata to realized value (to the value before the "
       "move where nothing is realized, so the assets sum to the ALL row).", "USD",
       nullable=False),
    _f("bad_debt_share", pa.float64(), "bad_debt_usd / total debt of the book.",
       "fraction of debt", nullable=False),
    _f("bad_debt_share_evaluated", pa.float64(), "bad_debt_usd / debt of the accounts the "
       "scenario evaluated (total debt minus excluded_debt_usd); null when it evaluated no "
       "debt.", "fraction of debt"),
    _f("excluded_accounts", pa.int64(), "Accounts not evaluated: they hold an asset whose "
       "move is missing; ALL row only.", "accounts"),
    _f("excluded_debt_usd", pa.float64(), "Debt of the excluded accounts (not evaluated); "
       "ALL row only.", "USD"),
    _f("bad_debt_var95", pa.float64(), "VaR 95% of total bad debt over paths (Monte Carlo "
       "ALL row only).", "USD"),
    _f("bad_debt_es95", pa.float64(), "ES 95% of total bad debt.", "USD"),
    _f("bad_debt_var99", pa.float64(), "VaR 99% of total bad debt.", "USD"),
    _f("bad_debt_es99", pa.float64(), "ES 99% of total bad debt.", "USD"),
    _f("prob_bad_debt", pa.float64(), "Share of paths with any bad debt.", "probability"),
])


def var_es(x: np.ndarray, level: float) -> tuple[float, float]:
    r"""VaR and ES of losses ``x`` at ``level`` over equally likely paths.

    With :math:`k = \lceil (1 - \alpha) n \rceil` and :math:`x_{(1)} \ge x_{(2)} \ge \dots`,
    :math:`\mathrm{VaR}_\alpha = x_{(k)}` and :math:`\mathrm{ES}_\alpha = \frac1k
    \sum_{i \le k} x_{(i)}`: the mean of the worst :math:`(1-\alpha)` share of paths. Bad debt
    has an atom at zero, so "the mean of all x >= VaR" would average in every zero path.
    Where :math:`(1-\alpha)n` is a whole number this VaR is the least of the worst share, one
    order statistic above the lower empirical quantile :math:`\inf\{x: F_n(x) \ge \alpha\}`
    (400 paths at 99%: the 4th largest, where that quantile is the 5th): the side of the
    protocol's bad debt, chosen so, and the same paths as ES.
    """
    x = np.sort(np.asarray(x, float))[::-1]
    k = max(int(np.ceil((1.0 - level) * len(x) - 1e-9)), 1)
    return float(x[k - 1]), float(x[:k].mean())


def scenario_rows(as_of: dt.date, scn: Scenario, out: Outcome, total_debt: float
                  ) -> list[dict[str, Any]]:
    """The rows of one scenario: one per asset, then the ALL row."""
    n = scn.relative.shape[0]
    worst = scn.relative.min(axis=1)  # (P, K)
    worst_k = np.quantile(worst, 0.01, axis=0) if n > 1 else worst[0]
    share = (lambda usd: usd / total_debt) if total_debt > 0 else (lambda usd: 0.0)
    seen = out.evaluated_debt_usd
    share_seen = (lambda usd: usd / seen) if seen > 0 else (lambda usd: None)
    rows = []
    for j, a in enumerate(scn.assets):
        bad = float(out.bad_debt_by_asset[:, j].mean())
        move = float(worst_k[j] - 1.0)
        rows.append({"as_of": as_of, "scenario": scn.name, "kind": scn.kind, "asset": a,
                     "source": scn.source.get(a, ""), "paths": n,
                     "worst_move": move if np.isfinite(move) else None,
                     "liquidated_value_usd": float(out.seized_by_asset[:, j].mean()),
                     "bad_debt_usd": bad, "bad_debt_share": share(bad),
                     "bad_debt_share_evaluated": share_seen(bad)})
    bad = float(out.bad_debt.mean())
    total = {"as_of": as_of, "scenario": scn.name, "kind": scn.kind, "asset": TOTAL,
             "source": "", "paths": n, "accounts_liquidated": float(out.accounts_liquidated.mean()),
             "liquidated_value_usd": float(out.seized_value.mean()), "bad_debt_usd": bad,
             "bad_debt_share": share(bad), "bad_debt_share_evaluated": share_seen(bad),
             "excluded_accounts": out.excluded_accounts,
             "excluded_debt_usd": out.excluded_debt_usd}
    if n > 1:
        for level in LEVELS:
            var, es = var_es(out.bad_debt, level)
            total[f"bad_debt_var{round(level * 100)}"] = var
            total[f"bad_debt_es{round(level * 100)}"] = es
        total["prob_bad_debt"] = float((out.bad_debt > 0).mean())
    return [*rows, total]


def stress_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows → a table with :data:`STRESS_SCHEMA` (absent optional columns are null)."""
    frame = pd.DataFrame(rows).reindex(columns=STRESS_SCHEMA.names)
    return pa.Table.from_pandas(frame, schema=STRESS_SCHEMA, preserve_index=False)


def concentration(scn: Scenario, out: Outcome, book: Book, top_n: int) -> dict[str, Any]:
    """Top accounts and assets by bad debt (mean over paths) and their shares of the total."""
    n = scn.relative.shape[0]
    acc = out.account_bad_debt / n
    total = float(acc.sum())
    order = np.argsort(-acc)[:top_n]
    top_accounts = [{"account": str(book.accounts[i]), "bad_debt_usd": float(acc[i]),
                     "share": float(acc[i] / total) if total > 0 else 0.0}
                    for i in order if acc[i] > 0]
    by_asset = out.bad_debt_by_asset.mean(axis=0)
    top_assets = [{"asset": scn.assets[j], "bad_debt_usd": float(by_asset[j]),
                   "share": float(by_asset[j] / total) if total > 0 else 0.0}
                  for j in np.argsort(-by_asset)[:top_n] if by_asset[j] > 0]
    shares = acc / total if total > 0 else acc
    return {"top_accounts": top_accounts, "top_assets": top_assets,
            "hhi_accounts": float((shares**2).sum()) if total > 0 else 0.0}


def _worst(rows: list[dict[str, Any]]) -> str | None:
    return max(rows, key=lambda r: r["bad_debt_usd"])["scenario"] if rows else None


def _finite(x: Any) -> float:
    """A share that is not a number (no evaluated debt) counts as 0: nothing was priced."""
    v = float(x) if x is not None else math.nan
    return v if math.isfinite(v) else 0.0


def _worst_share(rows: list[dict[str, Any]], key: str) -> str | None:
    return max(rows, key=lambda r: _finite(r[key]))["scenario"] if rows else None


def summary(as_of: dt.date, rows: list[dict[str, Any]], details: dict[str, dict[str, Any]],
            book_info: dict[str, Any], parameters: dict[str, Any],
            skipped: list[Skipped] | tuple[Skipped, ...] = ()) -> dict[str, Any]:
    """The JSON summary (``stress_summary.json``; schema ``docs/schema/stress_summary``);
    ``skipped`` are the scenarios not built, published with their reason."""
    totals = [r for r in rows if r["asset"] == TOTAL]
    scenarios = []
    for r in totals:
        item = {k: r.get(k) for k in ("scenario", "kind", "paths", "accounts_liquidated",
                                      "liquidated_value_usd", "bad_debt_usd", "bad_debt_share",
                                      "bad_debt_share_evaluated", "excluded_accounts",
                                      "excluded_debt_usd")}
        item.update(details.get(r["scenario"], {}))
        scenarios.append(item)
    hist = [r for r in totals if r["kind"] in ("historical", "filtered")]
    # market-wide: a single asset's −90% collapse is a concentration test, read apart (no
    # margin absorbs it, so in the same maximum it would decide every gate on its own)
    collapses = [r for r in totals if r["kind"] == "hypothetical"
                 and str(r["scenario"]).endswith("_collapse")]
    standard = [r for r in totals if r["kind"] != "monte_carlo" and r not in collapses]
    mc = next((r for r in totals if r["scenario"] == "fhs_joint"), None)
    tc = next((r for r in totals if r["scenario"] == "t_copula"), None)
    tail = ("paths", "bad_debt_usd", "bad_debt_var95", "bad_debt_es95", "bad_debt_var99",
            "bad_debt_es99", "prob_bad_debt")

    def tail_of(r: dict[str, Any] | None) -> dict[str, Any] | None:
        if r is None:
            return None
        # a joint scenario that priced no account (every holder excluded: e.g. paths that
        # overflowed on an absurd σ) has no tail to give: its figures are null, not $0 and a
        # probability of 0 (the scenario's row says how many accounts it excluded)
        accounts = book_info.get("accounts")
        priced = not accounts or (r["excluded_accounts"] or 0) < accounts
        return {k: r[k] if k == "paths" or priced else None for k in tail}

    return {
        "as_of": as_of.isoformat(), "schema_version": STRESS_SCHEMA_VERSION,
        "parameters": parameters, "book": book_info,
        "worst_historical": _worst(hist),
        # an episode before some assets were listed excludes their holders: not comparable
        "worst_historical_complete": _worst([r for r in hist if not r["excluded_accounts"]]),
        # judged on the debt it could price: accounts excluded (an asset not listed in an
        # episode) would otherwise dilute the share as if their debt were safe
        "worst_standard": _worst_share(standard, "bad_debt_share_evaluated"),
        "worst_standard_bad_debt_share": max(
            (_finite(r["bad_debt_share_evaluated"]) for r in standard), default=0.0),
        "worst_collapse": _worst_share(collapses, "bad_debt_share"),
        "worst_collapse_bad_debt_share": max((r["bad_debt_share"] for r in collapses),
                                             default=0.0),
        "monte_carlo": tail_of(mc),
        "t_copula": tail_of(tc),
        "scenarios": scenarios,
        "skipped_scenarios": [{"scenario": s.name, "kind": s.kind, "reason": s.reason}
                              for s in skipped],
    }

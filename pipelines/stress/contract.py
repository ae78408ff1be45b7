"""JSON Schemas of the stress outputs, written to ``docs/schema/`` and checked by a test.

``stress.schema.json`` (one row of ``stress.parquet``) is generated field by field from
:data:`pipelines.stress.report.STRESS_SCHEMA`; ``stress_summary.schema.json`` describes
``stress_summary.json``. Regenerate after a change with::

    .venv/bin/python -m pipelines.stress.contract docs/schema
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pipelines.stress.report import STRESS_SCHEMA, STRESS_SCHEMA_VERSION
from serving.schema import JSON_SCHEMA_DIALECT, json_properties, render

_NUM = {"type": "number"}
_NUM_NULL = {"type": ["number", "null"]}


def stress_row_schema() -> dict[str, Any]:
    """JSON Schema of one ``stress.parquet`` row rendered as a JSON object."""
    properties = json_properties(STRESS_SCHEMA)
    return {"$schema": JSON_SCHEMA_DIALECT,
            "$id": f"urn:volmargin:stress-row:v{STRESS_SCHEMA_VERSION}",
            "title": "volmargin stress row",
            "description": "One scenario x asset (or the scenario total, asset ALL) of a "
                           "stress test of published parameters over a book (stress.parquet).",
            "x-schema-version": STRESS_SCHEMA_VERSION, "type": "object",
            "properties": properties, "required": list(STRESS_SCHEMA.names),
            "additionalProperties": False}


_FROZEN_SIZING = {
    "description": "synthetic book only (empty for a real book): assets published frozen "
                   "(fail-safe, LTV 0, LT and LB held) whose positions opened before the "
                   "freeze were sized at the highest LTV admitted in the protection window "
                   "(basis admitted_ltv) or, lacking one, at LT - roles.ltv_gap (basis "
                   "lt_minus_gap)",
    "type": "array", "items": {
        "type": "object", "required": ["asset", "published_ltv", "sizing_ltv", "basis"],
        "properties": {"asset": {"type": "string"}, "published_ltv": _NUM,
                       "sizing_ltv": _NUM,
                       "basis": {"enum": ["admitted_ltv", "lt_minus_gap"]}},
        "additionalProperties": False}}


def _ranked(key: str) -> dict[str, Any]:
    return {"type": "array", "items": {
        "type": "object", "required": [key, "bad_debt_usd", "share"],
        "properties": {key: {"type": "string"}, "bad_debt_usd": _NUM, "share": _NUM},
        "additionalProperties": False}}


def summary_schema() -> dict[str, Any]:
    """JSON Schema of ``stress_summary.json``."""
    scenario = {
        "type": "object",
        "required": ["scenario", "kind", "paths", "accounts_liquidated", "liquidated_value_usd",
                     "bad_debt_usd", "bad_debt_share", "bad_debt_share_evaluated",
                     "excluded_accounts", "excluded_debt_usd", "note", "missing_assets",
                     "daily_assets", "top_accounts", "top_assets", "hhi_accounts"],
        "properties": {
            "scenario": {"type": "string"}, "kind": {"type": "string"},
            "paths": {"type": "integer", "minimum": 1},
            "accounts_liquidated": {**_NUM, "description": "mean over paths"},
            "liquidated_value_usd": _NUM, "bad_debt_usd": _NUM,
            "bad_debt_share": {**_NUM, "description": "bad debt / the whole book's debt"},
            "bad_debt_share_evaluated": {**_NUM_NULL, "description": "bad debt / the debt "
                                         "of the accounts evaluated (book debt minus "
                                         "excluded_debt_usd); null when none was"},
            "excluded_accounts": {"type": "integer", "minimum": 0, "description": "hold an "
                                  "asset whose scenario move is missing"},
            "excluded_debt_usd": {**_NUM, "minimum": 0, "description": "debt of the "
                                  "excluded accounts (not evaluated)"},
            "note": {"type": "string"},
            "missing_assets": {"type": "array", "items": {"type": "string"}},
            "daily_assets": {"type": "array", "items": {"type": "string"},
                             "description": "moves from daily data (no hourly data then)"},
            "top_accounts": _ranked("account"), "top_assets": _ranked("asset"),
            "hhi_accounts": {**_NUM, "description": "Herfindahl index of bad debt over "
                             "accounts (1 = one account holds it all)"}},
        "additionalProperties": False}
    mc_keys = ["paths", "bad_debt_usd", "bad_debt_var95", "bad_debt_es95", "bad_debt_var99",
               "bad_debt_es99", "prob_bad_debt"]
    mc_tail = {"oneOf": [{"type": "null"}, {
        "type": "object", "required": mc_keys,
        "properties": {k: ({"type": "integer"} if k == "paths" else _NUM_NULL) for k in mc_keys},
        "additionalProperties": False}]}
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:volmargin:stress-summary:v{STRESS_SCHEMA_VERSION}",
        "title": "volmargin stress summary",
        "description": "Totals per scenario, concentration, Monte Carlo VaR/ES of protocol bad "
                       "debt, and the parameters partition that was stressed.",
        "x-schema-version": STRESS_SCHEMA_VERSION, "type": "object",
        "required": ["as_of", "schema_version", "parameters", "book", "worst_historical",
                     "worst_historical_complete", "worst_standard",
                     "worst_standard_bad_debt_share", "worst_collapse",
                     "worst_collapse_bad_debt_share", "monte_carlo", "t_copula", "scenarios",
                     "skipped_scenarios"],
        "properties": {
            "as_of": {"type": "string", "format": "date"},
            "schema_version": {"const": STRESS_SCHEMA_VERSION},
            "parameters": {"type": "object", "required": ["path", "revision", "success_sha256"],
                           "properties": {"path": {"type": "string"},
                                          "revision": {"type": "integer", "minimum": 1},
                                          "success_sha256": {"type": "string",
                                                             "pattern": "^[0-9a-f]{64}$"}},
                           "additionalProperties": False},
            "book": {"type": "object", "required": ["source", "accounts", "debt_usd",
                                                    "collateral_usd", "unhealthy_at_start",
                                                    "frozen_sizing"],
                     "properties": {"source": {"type": "string"},
                                    "accounts": {"type": "integer", "minimum": 1},
                                    "debt_usd": _NUM, "collateral_usd": _NUM,
                                    "unhealthy_at_start": {
                                        "type": "integer", "minimum": 0,
                                        "description": "accounts below HF 1 at today's prices "
                                                       "(liquidated in every scenario)"},
                                    "frozen_sizing": _FROZEN_SIZING},
                     "additionalProperties": False},
            "worst_historical": {"type": ["string", "null"]},
            "worst_historical_complete": {
                "type": ["string", "null"], "description": "worst historical scenario among "
                "those that exclude no account (every held asset was listed then)"},
            "worst_standard": {"type": ["string", "null"], "description": "the market-wide "
                               "standard scenario with the largest bad debt share of the "
                               "debt it evaluated"},
            "worst_standard_bad_debt_share": {**_NUM, "description": "largest bad debt / "
                                              "evaluated debt over the historical and "
                                              "market-wide hypothetical scenarios, single-asset "
                                              "collapses apart (what the gate compares to its "
                                              "budget)"},
            "worst_collapse": {"type": ["string", "null"], "description": "the single-asset "
                               "collapse with the largest bad debt share"},
            "worst_collapse_bad_debt_share": {**_NUM, "description": "its bad debt / book debt "
                                              "(a concentration reading, "
                                              "stress.max_collapse_bad_debt_share)"},
            "monte_carlo": {"description": "joint FHS tail of protocol bad debt (null when no "
                            "held asset has a year of returns: logged, the other scenarios "
                            "stand)", **mc_tail},
            "t_copula": {"description": "Student-t copula tail (null when not configured, or "
                         "as monte_carlo)", **mc_tail},
            "scenarios": {"type": "array", "items": scenario},
            "skipped_scenarios": {
                "description": "scenarios not built, with the reason (a shock of an unusable "
                               "shock asset, the correlation-one shock without a positive "
                               "shock sigma, the collapse of an unusable asset, the Monte "
                               "Carlo without a year of returns); never computed from a "
                               "placeholder",
                "type": "array", "items": {
                    "type": "object", "required": ["scenario", "kind", "reason"],
                    "properties": {"scenario": {"type": "string"}, "kind": {"type": "string"},
                                   "reason": {"type": "string"}},
                    "additionalProperties": False}}},
        "additionalProperties": False}


def contract_files() -> dict[str, dict[str, Any]]:
    return {"stress.schema.json": stress_row_schema(),
            "stress_summary.schema.json": summary_schema()}


def write_contract(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in contract_files().items():
        (directory / name).write_text(render(schema))
        written.append(directory / name)
    return written


if __name__ == "__main__":
    for path in write_contract(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schema")):
        print(path)

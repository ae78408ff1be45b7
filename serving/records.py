"""Update records: the published parameters as a list of changes, in the shape on-chain risk
oracles use.

Chaos Labs' Risk Oracle stores each recommendation as a ``RiskParameterUpdate`` (market,
update type, previous value, new value, reference id, additional data) and Aave's risk
stewards apply one change per (market, parameter). A consumer that pushes parameters to a
venue therefore wants *changes*, not a table. :func:`update_records` turns one partition's
rows into one record per changed parameter:

``update_id``            1, 2, ... in (market, update type) order within the partition
``market``               asset symbol
``update_type``          ``MaintenanceMargin`` (mmf), ``InitialMargin`` (imf),
                         ``LiquidationThreshold`` (lt), ``LTV`` (ltv), ``LiquidationBonus`` (lb);
                         ``PendingLiquidationThreshold`` (pending_lt) and
                         ``PendingLiquidationBonus`` (pending_lb): an announced change
``previous_value``       value in force before this partition; null on first listing (for a
                         pending type: the change announced before, null if none)
``new_value``            value published in this partition (decimal, as in the parquet); for a
                         pending type null when an announced change is withdrawn
``effective_date``       the first partition in which ``new_value`` applies: ``as_of``, or the
                         announced change's ``pending_effective`` (null when withdrawn)
``*_bps``                the same in basis points, rounded on the safe side (below)
``reference_id``         ``0x`` + sha256 of ``volmargin|as_of|market|update_type|model_version``
                         (``|rev=n`` appended for revision n > 1): deterministic, bytes32-sized
``flags``, ``reason``    why the row looks the way it does (fallback, stale, clamped, proxy,
                         young, held)

No record is emitted when the value did not change: the policy's deadband and loosening
guardrails already decided that, and a held value is the previous value exactly. A market
that disappears from a partition emits nothing (a delisting is not a parameter update).
Thresholds that protect open positions change only as announced (:mod:`serving.roles`), so an
announcement is an update of its own: a new or trimmed announced change (value or effective
date) is a pending record, and so is a withdrawal (``new_value`` null); an announced change
that takes effect is the ``LiquidationThreshold``/``LiquidationBonus`` record of that day, with
no pending record beside it; one that takes effect trimmed to the day's target
(:mod:`serving.roles`) is that record and a withdrawal of the value announced.

Basis points follow Aave v3's encoding (LT 78% → 7800, liquidation bonus 105% → 10500).
Rounding never loosens a limit and keeps the solvency invariant: margins are rounded up, LT
and LTV down, and the bonus down, so ``lt_bps × lb_bps ≤ 10⁸`` whenever ``lt × lb ≤ 1``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any

import pandas as pd

# bump on any change of the record fields or their values; "2": pending (announced) changes,
# effective_date, the young flag
RECORDS_VERSION = "2"

# column → oracle update type, in the order records are emitted per market
UPDATE_TYPES: dict[str, str] = {
    "mmf": "MaintenanceMargin",
    "imf": "InitialMargin",
    "lt": "LiquidationThreshold",
    "ltv": "LTV",
    "lb": "LiquidationBonus",
}
# announced changes: column → update type, and the column each becomes once in force
PENDING_TYPES: dict[str, str] = {
    "pending_lt": "PendingLiquidationThreshold",
    "pending_lb": "PendingLiquidationBonus",
}
_IN_FORCE = {"pending_lt": "lt", "pending_lb": "lb"}
# Rounding to bps on the conservative side: margins up; LT, LTV and the bonus down.
_ROUND_UP = {"mmf": True, "imf": True, "lt": False, "ltv": False, "lb": False,
             "pending_lt": False, "pending_lb": False}
_FLAGS = ("fallback", "stale", "clamped", "proxy", "young", "held")


def reference_id(as_of: dt.date, market: str, update_type: str, model_version: str,
                 revision: int = 1) -> str:
    """Deterministic id of one update: the same inputs always give the same id, so a
    consumer (or an oracle contract) can deduplicate replays of the same partition."""
    key = f"volmargin|{as_of.isoformat()}|{market}|{update_type}|{model_version}"
    if revision > 1:
        key += f"|rev={revision}"
    return "0x" + hashlib.sha256(key.encode()).hexdigest()


def to_bps(value: float, column: str) -> int:
    """``value`` in basis points, rounded on the conservative side for ``column``."""
    scaled = value * 10_000
    # 1e-6 bps of slack so that 0.78 (7799.999999999999 in binary) stays 7800
    return math.ceil(scaled - 1e-6) if _ROUND_UP[column] else math.floor(scaled + 1e-6)


def update_records(
    parameters: pd.DataFrame, in_force: pd.DataFrame | None, *, revision: int = 1
) -> list[dict[str, Any]]:
    """One record per parameter whose published value differs from the one in force.

    Parameters
    ----------
    parameters : pd.DataFrame
        The partition's rows (columns of :data:`serving.schema.PARAMETERS_SCHEMA`).
    in_force : pd.DataFrame or None
        The rows consumers currently apply: the previous day's partition for a first
        publication, the superseded revision for a revision; None when nothing was
        published before (every parameter is then a first listing).
    revision : int
        Revision number of the partition being written (enters the reference id).

    Returns
    -------
    list of dict
        JSON-ready records (see the module docstring), ordered by market then update type.
    """
    before = in_force.set_index("asset") if in_force is not None else None
    records: list[dict[str, Any]] = []
    for row in parameters.sort_values("asset").itertuples(index=False):
        as_of = pd.Timestamp(row.as_of).date()
        flags = [name for name in _FLAGS if bool(getattr(row, f"flag_{name}"))]
        known = before is not None and row.asset in before.index

        def record(column: str, update_type: str, old: float | None, new: float | None,
                   effective: dt.date | None, row: Any = row, as_of: dt.date = as_of,
                   flags: list[str] = flags) -> dict[str, Any]:
            return {
                "update_id": len(records) + 1,
                "market": row.asset,
                "update_type": update_type,
                "previous_value": old,
                "new_value": new,
                "previous_value_bps": None if old is None else to_bps(old, column),
                "new_value_bps": None if new is None else to_bps(new, column),
                "effective_date": None if effective is None else effective.isoformat(),
                "reference_id": reference_id(as_of, row.asset, update_type,
                                             str(row.model_version), revision),
                "as_of": as_of.isoformat(),
                "model_version": None if pd.isna(row.model_version) else str(row.model_version),
                "policy_version": str(row.policy_version),
                "flags": flags,
                "reason": one_line_breaks(str(row.reason)),
            }

        for column, update_type in UPDATE_TYPES.items():
            new = float(getattr(row, column))
            old = _value(before, row.asset, column) if known else None
            if old is not None and old == new:
                continue  # unchanged (held by the deadband or the guardrails): nothing to push
            records.append(record(column, update_type, old, new, as_of))
        effective = _date(getattr(row, "pending_effective", None))
        was = (_date(before.at[row.asset, "pending_effective"])
               if known and before is not None and "pending_effective" in before else None)
        for column, update_type in PENDING_TYPES.items():
            held = _IN_FORCE[column]
            now = float(getattr(row, held))
            # an announced value equal to the one in force announces nothing (LB held under
            # an LT change); one that took effect today is the in-force record's, not a
            # replacement of it
            new = _number(getattr(row, column, None))
            new = None if new == now else new
            old = _value(before, row.asset, column) if known else None
            if old is not None and (old == _value(before, row.asset, held)
                                    or (was is not None and was <= as_of and old == now)):
                old = None
            if new is None and old is None:
                continue
            if new is not None and (new, effective) == (old, was):
                continue  # the same announcement, carried: already recorded
            records.append(record(column, update_type, old, new,
                                  effective if new is not None else None))
    return records


def one_line_breaks(text: str) -> str:
    """Line breaks written as ``\\n``: a bare carriage return is not quoted by a CSV writer
    (:func:`serving.publish.cast_parameters`), and the records say what the rows say."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _number(value: Any) -> float | None:
    return float(value) if value is not None and pd.notna(value) else None


def _date(value: Any) -> dt.date | None:
    return pd.Timestamp(value).date() if value is not None and pd.notna(value) else None


def _value(frame: pd.DataFrame | None, asset: str, column: str) -> float | None:
    """``frame``'s value of ``column`` for ``asset`` (None: no such column, or null)."""
    if frame is None or column not in frame:
        return None
    return _number(frame.at[asset, column])


def updates_document(as_of: dt.date, revision: int, records: list[dict[str, Any]]
                     ) -> dict[str, Any]:
    """The content of ``updates.json``: the records with what they belong to."""
    return {"records_version": RECORDS_VERSION, "as_of": as_of.isoformat(),
            "revision": revision, "records": records}


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts for the manifest and logs: records in total and per update type."""
    by_type: dict[str, int] = {}
    for record in records:
        by_type[record["update_type"]] = by_type.get(record["update_type"], 0) + 1
    return {"records": len(records), "by_type": dict(sorted(by_type.items())),
            "markets": len({r["market"] for r in records})}


def updates_json_schema() -> dict[str, Any]:
    """JSON Schema of ``updates.json``."""
    number_or_null = {"type": ["number", "null"]}
    bps_or_null = {"type": ["integer", "null"]}
    record = {
        "type": "object",
        "properties": {
            "update_id": {"type": "integer", "minimum": 1,
                          "description": "Position of the record in this partition."},
            "market": {"type": "string", "description": "Asset symbol, e.g. BTC."},
            "update_type": {"enum": [*UPDATE_TYPES.values(), *PENDING_TYPES.values()],
                            "description": "Parameter: MaintenanceMargin=mmf, InitialMargin="
                            "imf, LiquidationThreshold=lt, LTV=ltv, LiquidationBonus=lb; "
                            "PendingLiquidationThreshold=pending_lt, PendingLiquidation"
                            "Bonus=pending_lb (an announced change)."},
            "previous_value": number_or_null | {"description": "Value in force before (for a "
                                                "pending type, the change announced before); "
                                                "null on first listing or none announced."},
            "new_value": number_or_null | {"description": "Published value (decimal: "
                                           "fraction, or multiplier for the bonus); null only "
                                           "for a pending type: the announced change is "
                                           "withdrawn."},
            "previous_value_bps": bps_or_null | {"description": "previous_value in basis "
                                                 "points, conservative rounding."},
            "new_value_bps": bps_or_null | {"description": "new_value in basis points (Aave "
                                            "encoding, LB 1.05 = 10500), conservative "
                                            "rounding."},
            "effective_date": {"type": ["string", "null"], "format": "date",
                               "description": "First partition in which new_value applies: "
                               "as_of, or an announced change's pending_effective; null "
                               "when withdrawn."},
            "reference_id": {"type": "string", "pattern": "^0x[0-9a-f]{64}$",
                             "description": "sha256 of volmargin|as_of|market|update_type|"
                             "model_version[|rev=n]: deterministic."},
            "as_of": {"type": "string", "format": "date"},
            "model_version": {"type": ["string", "null"],
                              "description": "Registered volmargin-policy version."},
            "policy_version": {"type": "string"},
            "flags": {"type": "array", "items": {"enum": list(_FLAGS)},
                      "description": "Flags of the row (fallback, stale, clamped, proxy, "
                      "young, held)."},
            "reason": {"type": "string", "description": "Why a fallback, clamp or hold "
                       "happened; may be empty."},
        },
        "required": ["update_id", "market", "update_type", "previous_value", "new_value",
                     "previous_value_bps", "new_value_bps", "effective_date", "reference_id",
                     "as_of",
                     "model_version", "policy_version", "flags", "reason"],
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:volmargin:updates:v{RECORDS_VERSION}",
        "title": "volmargin update records (updates.json)",
        "description": "One record per parameter whose value changed against the one in force, "
                       "in the shape of on-chain risk-oracle updates.",
        "type": "object",
        "properties": {
            "records_version": {"const": RECORDS_VERSION},
            "as_of": {"type": "string", "format": "date"},
            "revision": {"type": "integer", "minimum": 1},
            "records": {"type": "array", "items": {"$ref": "#/$defs/record"}},
        },
        "required": ["records_version", "as_of", "revision", "records"],
        "additionalProperties": False,
        "$defs": {"record": record},
    }

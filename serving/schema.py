"""The published contract: the Arrow schema of ``parameters.parquet`` and its JSON Schema.

:data:`PARAMETERS_SCHEMA` is the single source of truth for the columns a risk engine reads
(names, types, nullability, units, descriptions). The JSON Schema files consumers get
(``docs/schema/*.schema.json``) are *generated* from it and from the update-record schema in
:mod:`serving.records`, and a test regenerates them and fails if the checked-in files differ.
Regenerate after a schema change with::

    .venv/bin/python -m serving.schema docs/schema
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

SCHEMA_VERSION = "4"  # bump on any breaking column change (2: liquidity, proxy, guardrail
#                       state; 3: loss_* renamed, stress floor, memory, announced changes;
#                       4: flag_young)
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_FRACTION = "fraction of collateral value"


def _field(name: str, type_: pa.DataType, description: str, unit: str | None = None, *,
           nullable: bool = True) -> pa.Field:
    metadata = {"description": description} | ({"unit": unit} if unit else {})
    return pa.field(name, type_, nullable=nullable, metadata=metadata)


def _prev(name: str, unit: str) -> pa.Field:
    return _field(f"prev_{name}", pa.float64(), f"{name} in the previous published partition; "
                  "null when there is none.", unit)


# Non-nullable fields are what a risk engine acts on: a null margin must never be published.
# Diagnostics (sigma, VaR/ES) and lineage ids may be null, e.g. on a fallback without a model.
PARAMETERS_SCHEMA: pa.Schema = pa.schema([
    _field("as_of", pa.date32(), "UTC day whose end-of-day data produced these parameters; "
           "they apply until the next partition.", "date (UTC)", nullable=False),
    _field("asset", pa.string(), "Collateral asset symbol, e.g. BTC.", nullable=False),
    _field("horizon_days", pa.int32(), "Update interval covered.", "days", nullable=False),
    _field("sigma_1d", pa.float64(), "Forecast s.d. of the 1-day log return.", "decimal"),
    _field("variance_1d", pa.float64(), "Forecast variance of the 1-day log return.", "decimal^2"),
    _field("loss_var", pa.float64(), "VaR of the covered loss (worst liquidation-delay loss in "
           "the interval) at loss_level.", _FRACTION),
    _field("loss_es", pa.float64(), "Expected shortfall of the covered loss at loss_level.",
           _FRACTION),
    _field("loss_level", pa.float64(), "Confidence level of loss_var and loss_es, e.g. 0.975.",
           "probability"),
    _field("stress_floor", pa.float64(), "Weighted ES of the covered loss over the worst stress "
           "window of the look-back (losses realized before the as-of); null when off.",
           _FRACTION),
    _field("loss_memory", pa.float64(), "Weighted, slowly decaying high-water mark of realized "
           "covered losses; null when off.", _FRACTION),
    _field("target_mmf", pa.float64(), "Risk-based MMF, max(loss tail, stress_floor, "
           "loss_memory) within [floor, cap], that the effective mmf moves toward by announced "
           "changes; null for the static fail-safe set.", "fraction of notional"),
    _field("liquidity_addon", pa.float64(), "Slippage of liquidating the reference size "
           "(square-root impact on a trailing ADV ending the day before), priced in lb, not "
           "in mmf.", _FRACTION),
    _field("mmf", pa.float64(), "Effective maintenance margin fraction, 1 - lt x lb: equity "
           "below mmf x notional is liquidatable. Changes only as announced (pending_*).",
           "fraction of notional", nullable=False),
    _field("imf", pa.float64(), "Initial margin fraction to open or increase a position, "
           "1 - ltv x lb, with anti-procyclicality; 1 (no new leverage) when frozen.",
           "fraction of notional", nullable=False),
    _field("lt", pa.float64(), "Effective liquidation threshold: debt above lt x collateral "
           "value is liquidatable. Changes only as announced (pending_lt, pending_effective).",
           _FRACTION, nullable=False),
    _field("ltv", pa.float64(), "Maximum loan-to-value at origination, (1 - imf) / lb, always "
           "below min(lt, pending_lt) minus a gap; 0 (no new borrowing) when frozen.",
           _FRACTION, nullable=False),
    _field("lb", pa.float64(), "Effective liquidation bonus: collateral paid per unit of debt "
           "repaid, e.g. 1.05. Changes only as announced (pending_lb).", "multiplier",
           nullable=False),
    _field("max_leverage", pa.float64(), "Maximum perp leverage, 1 / imf.", "multiplier",
           nullable=False),
    _prev("mmf", "fraction of notional"),
    _prev("imf", "fraction of notional"),
    _prev("lt", _FRACTION),
    _prev("ltv", _FRACTION),
    _prev("lb", "multiplier"),
    _field("change_mmf", pa.float64(), "mmf - prev_mmf; null when there is no previous value.",
           "fraction of notional"),
    _field("flag_fallback", pa.bool_(), "Fail-safe: inputs untrusted, parameters frozen (ltv 0, lt "
           "and lb held), or the conservative static set when nothing was published before.",
           nullable=False),
    _field("flag_stale", pa.bool_(), "Input data older than allowed at the as-of.", nullable=False),
    _field("flag_clamped", pa.bool_(), "The risk-based mmf hit its floor or cap.",
           nullable=False),
    _field("flag_proxy", pa.bool_(), "The covered loss is measured by the daily-range proxy "
           "(no intraday data for this asset).", nullable=False),
    _field("flag_young", pa.bool_(), "Young asset: fewer realized losses in the stress "
           "look-back than one stress window, so its stress ES is at least the largest of the "
           "seasoned assets' that day (reason names the one lent).", nullable=False),
    _field("flag_held", pa.bool_(), "The published lt, lb or ltv differ from the risk-based "
           "target (notice, rate limit, deadband, LTV cap, freeze).", nullable=False),
    _field("pending_lt", pa.float64(), "Announced lt that takes effect on pending_effective; "
           "null when no change is pending.", _FRACTION),
    _field("pending_lb", pa.float64(), "Announced lb that takes effect with pending_lt.",
           "multiplier"),
    _field("pending_mmf", pa.float64(), "1 - pending_lt x pending_lb.", "fraction of notional"),
    _field("pending_announced", pa.date32(), "Partition that announced the pending change.",
           "date (UTC)"),
    _field("pending_effective", pa.date32(), "First partition in which the pending change is "
           "effective (later if that partition is frozen).", "date (UTC)"),
    _field("admitted_ltv", pa.string(), "Policy state: JSON list of [date, ltv] of the "
           "partitions in the notice window that admitted borrowing; lt never falls below "
           "any of them plus the gap. Read back by the next update."),
    _field("reason", pa.string(), "Empty, or why a fallback, clamp or hold happened.",
           nullable=False),
    _field("model_name", pa.string(), "Forecaster alias, e.g. garch11_t.", nullable=False),
    _field("model_version", pa.string(), "Registered version of the volmargin-policy model."),
    _field("run_id", pa.string(), "MLflow run id that produced the model."),
    _field("policy_version", pa.string(), "Margin policy config version.", nullable=False),
    _field("feature_fingerprint", pa.string(), "Fingerprint of the feature panel used."),
])


def _v3_to_v4(frame: pd.DataFrame) -> pd.DataFrame:
    # v3 code had no young-asset rule: no v3 row was computed with a borrowed stress floor
    return frame.assign(flag_young=False)


# How the batch job carries a partition of an older schema forward as its previous state
# (:func:`upgrade`): version -> (next version, function, what it does). A deployment that
# upgrades volmargin keeps its in-force thresholds and announced changes; consumers' readers
# stay strict (:func:`serving.publish.read_partition` without ``upgrade``). v2 -> v3 renamed
# and replaced state columns (``last_loosened``), which cannot be rebuilt from a v2 row.
UPGRADES: dict[str, tuple[str, Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "3": ("4", _v3_to_v4, "flag_young added as false"),
}


def upgrade(frame: pd.DataFrame, version: str) -> tuple[pd.DataFrame, list[str]]:
    """``frame`` (rows of a partition of schema ``version``) as rows of
    :data:`SCHEMA_VERSION`, in its column order, and what each step did.

    Raises
    ------
    ValueError
        No chain of :data:`UPGRADES` leads from ``version`` to :data:`SCHEMA_VERSION`.
    """
    done = []
    while version != SCHEMA_VERSION:
        if version not in UPGRADES:
            raise ValueError(f"schema_version {version!r} cannot be upgraded to "
                             f"{SCHEMA_VERSION!r} (upgradable: {sorted(UPGRADES)})")
        nxt, step, what = UPGRADES[version]
        frame = step(frame)
        done.append(f"v{version} -> v{nxt}: {what}")
        version = nxt
    return frame[PARAMETERS_SCHEMA.names], done


def _json_type(type_: pa.DataType) -> dict[str, Any]:
    """JSON Schema of one Arrow type as it appears in a row rendered to JSON."""
    if pa.types.is_date32(type_):
        return {"type": "string", "format": "date"}
    if pa.types.is_string(type_):
        return {"type": "string"}
    if pa.types.is_integer(type_):
        return {"type": "integer"}
    if pa.types.is_floating(type_):
        return {"type": "number"}
    if pa.types.is_boolean(type_):
        return {"type": "boolean"}
    raise TypeError(f"no JSON Schema mapping for Arrow type {type_}; extend _json_type")


def json_properties(schema: pa.Schema) -> dict[str, Any]:
    """JSON Schema ``properties`` of an Arrow schema whose fields carry ``description`` (and
    optionally ``unit``) metadata: nullable fields admit ``null``, units become ``x-unit``."""
    properties: dict[str, Any] = {}
    for field in schema:
        spec = _json_type(field.type)
        if field.nullable:
            spec["type"] = [spec["type"], "null"]
        meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
        spec["description"] = meta["description"]
        if "unit" in meta:
            spec["x-unit"] = meta["unit"]
        properties[field.name] = spec
    return properties


def parameters_json_schema() -> dict[str, Any]:
    """JSON Schema of one row of ``parameters.parquet`` / ``parameters.csv`` as a JSON object.

    Derived field by field from :data:`PARAMETERS_SCHEMA`: a nullable column admits ``null``
    (NaN is published as null), dates are ISO strings, units are kept as ``x-unit``.
    """
    properties = json_properties(PARAMETERS_SCHEMA)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:volmargin:parameters-row:v{SCHEMA_VERSION}",
        "title": "volmargin parameters row",
        "description": "One asset's risk parameters in a published partition "
                       "(parameters.parquet, mirrored by parameters.csv).",
        "x-schema-version": SCHEMA_VERSION,
        "type": "object",
        "properties": properties,
        "required": list(PARAMETERS_SCHEMA.names),
        "additionalProperties": False,
    }


def contract_files() -> dict[str, dict[str, Any]]:
    """Every consumer-facing JSON Schema by file name, as written to ``docs/schema/``."""
    from serving.layout import latest_json_schema
    from serving.records import updates_json_schema

    return {"parameters.schema.json": parameters_json_schema(),
            "updates.schema.json": updates_json_schema(),
            "latest.schema.json": latest_json_schema()}


def render(schema: dict[str, Any]) -> str:
    """The exact text of a checked-in schema file (stable key order, trailing newline)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_contract(directory: Path) -> list[Path]:
    """(Re)write the JSON Schema files under ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in contract_files().items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_contract(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schema")):
        print(path)

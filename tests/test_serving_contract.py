"""The consumer contract without a model: JSON Schemas agree with the Arrow schema, update
records, revisions and LATEST, the lock, JSON log lines."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import jsonschema
import pandas as pd
import pyarrow as pa
import pytest
from rich.console import Console

from pipelines.ops.logs import JobLog, JsonLinesFormatter, json_requested
from serving import schema as contract
from serving.layout import advance_latest, current_partition, list_partitions, read_latest
from serving.ops.lock import LockHeldError, exclusive
from serving.publish import PartitionExistsError, publish_partition, read_partition
from serving.records import RECORDS_VERSION, reference_id, to_bps, update_records
from tests.conftest import REPO
from tests.test_publish import METADATA, make_parameters

AS_OF = dt.date(2025, 6, 30)
SCHEMAS = REPO / "docs" / "schema"


@pytest.mark.parametrize("name", sorted(contract.contract_files()))
def test_checked_in_json_schemas_are_the_generated_ones(name: str) -> None:
    """Fails when PARAMETERS_SCHEMA or the record fields change without regenerating
    ``docs/schema`` (``python -m serving.schema docs/schema``)."""
    generated = contract.render(contract.contract_files()[name])
    assert (SCHEMAS / name).read_text() == generated, f"regenerate docs/schema/{name}"


def test_parameters_json_schema_mirrors_every_arrow_field() -> None:
    spec = contract.parameters_json_schema()
    jsonschema.Draft202012Validator.check_schema(spec)
    assert list(spec["properties"]) == contract.PARAMETERS_SCHEMA.names == spec["required"]
    for field in contract.PARAMETERS_SCHEMA:
        kind = spec["properties"][field.name]["type"]
        assert ("null" in kind) == field.nullable, field.name
    assert spec["properties"]["mmf"]["type"] == "number"
    assert spec["properties"]["as_of"]["format"] == "date"
    assert spec["properties"]["lb"]["x-unit"] == "multiplier"


def test_a_row_breaking_the_contract_is_rejected() -> None:
    spec = json.loads((SCHEMAS / "parameters.schema.json").read_text())
    row = make_parameters().iloc[0].to_dict()
    row = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
    row = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()}
    jsonschema.validate(row, spec)
    with pytest.raises(jsonschema.ValidationError, match="None is not of type 'number'"):
        jsonschema.validate(row | {"mmf": None}, spec)
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        jsonschema.validate(row | {"vol_ann_pct": 65.0}, spec)


def test_an_unmapped_arrow_type_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    extended = contract.PARAMETERS_SCHEMA.append(pa.field("weights", pa.list_(pa.float64())))
    monkeypatch.setattr(contract, "PARAMETERS_SCHEMA", extended)
    with pytest.raises(TypeError, match="no JSON Schema mapping"):
        contract.parameters_json_schema()


def test_records_only_for_changed_values_with_deterministic_ids() -> None:
    new = make_parameters()  # ETH then BTC; BTC has no previous row
    previous = new.copy()
    previous.loc[previous["asset"] == "ETH", "mmf"] = 0.12  # ETH's MMF changed, rest equal
    records = update_records(new, previous)
    assert [(r["market"], r["update_type"]) for r in records] == [("ETH", "MaintenanceMargin")]
    record = records[0]
    assert (record["previous_value"], record["new_value"]) == (0.12, 0.1234567890123456)
    assert (record["previous_value_bps"], record["new_value_bps"]) == (1200, 1235)
    assert record["flags"] == ["clamped", "held"] and record["update_id"] == 1
    assert record["reference_id"] == reference_id(AS_OF, "ETH", "MaintenanceMargin", "3")
    assert record["reference_id"] == update_records(new, previous)[0]["reference_id"]
    assert reference_id(AS_OF, "ETH", "MaintenanceMargin", "3", revision=2) != \
        record["reference_id"]

    first = update_records(new, None)  # first listing: every parameter of every market,
    # and ETH's announced LT (its announced LB is the one in force: nothing announced)
    assert len(first) == 11 and all(r["previous_value"] is None for r in first)
    assert [r["market"] for r in first[:5]] == ["BTC"] * 5
    assert [(r["update_type"], r["new_value"], r["effective_date"]) for r in first[-1:]] == [
        ("PendingLiquidationThreshold", 0.8, "2025-07-01")]
    assert {r["effective_date"] for r in first[:-1]} == {"2025-06-30"}
    document = {"records_version": RECORDS_VERSION, "as_of": "2025-06-30", "revision": 1,
                "records": first}
    jsonschema.validate(document, json.loads((SCHEMAS / "updates.schema.json").read_text()))


def _pending(to_lt: float | None, to_lb: float | None, effective: str | None,
             **changes: float) -> pd.DataFrame:
    """ETH alone, with the announced change (to_lt, to_lb, effective) and other columns
    changed."""
    frame = make_parameters().iloc[[0]].assign(**changes).reset_index(drop=True)
    day = None if effective is None else dt.date.fromisoformat(effective)
    return frame.assign(pending_lt=[to_lt], pending_lb=[to_lb], pending_effective=[day],
                        pending_mmf=[None if to_lt is None else 1 - to_lt * to_lb])


def test_an_announced_change_is_recorded_when_it_is_announced_trimmed_or_withdrawn() -> None:
    """An announcement is an update of its own (the thresholds that protect open positions
    change only as announced): recorded when new, trimmed or withdrawn; carried unchanged it
    is not recorded again; taking effect, it is the in-force record alone."""
    schema = json.loads((SCHEMAS / "updates.schema.json").read_text())
    none = _pending(None, None, None)
    announced = _pending(0.8, 1.06, "2025-07-01")

    def kinds(new: pd.DataFrame, old: pd.DataFrame) -> list[tuple]:
        records = update_records(new, old)
        jsonschema.validate({"records_version": RECORDS_VERSION, "as_of": "2025-06-30",
                             "revision": 1, "records": records}, schema)
        return [(r["update_type"], r["previous_value"], r["new_value"], r["effective_date"])
                for r in records]

    # ETH's LB is 1.06 in force: an LT change announced with it held announces LT alone
    assert kinds(announced, none) == [("PendingLiquidationThreshold", None, 0.8, "2025-07-01")]
    assert kinds(announced, announced) == []  # carried: recorded when it was announced
    trimmed = _pending(0.795, 1.06, "2025-07-01")
    assert kinds(trimmed, announced) == [
        ("PendingLiquidationThreshold", 0.8, 0.795, "2025-07-01")]
    later = _pending(0.8, 1.06, "2025-07-02")  # same values, another effective date
    assert [k[0] for k in kinds(later, announced)] == ["PendingLiquidationThreshold"]
    both = _pending(0.8, 1.055, "2025-07-01")  # LB announced too (a looser bonus)
    assert kinds(both, none) == [("PendingLiquidationThreshold", None, 0.8, "2025-07-01"),
                                 ("PendingLiquidationBonus", None, 1.055, "2025-07-01")]
    assert kinds(none, both) == [("PendingLiquidationThreshold", 0.8, None, None),
                                 ("PendingLiquidationBonus", 1.055, None, None)]
    took = _pending(None, None, None, lt=0.8, lb=1.06).assign(as_of=[dt.date(2025, 7, 1)])
    assert [k[0] for k in kinds(took, announced)] == ["LiquidationThreshold"]  # lb unchanged
    # it takes effect the day a new change is announced: the new one is new, not a trim
    again = _pending(0.78, 1.06, "2025-07-08", lt=0.8).assign(as_of=[dt.date(2025, 7, 1)])
    assert kinds(again, announced) == [
        ("LiquidationThreshold", float(announced["lt"].iloc[0]), 0.8, "2025-07-01"),
        ("PendingLiquidationThreshold", None, 0.78, "2025-07-08")]
    withdrawn_early = took.assign(as_of=[dt.date(2025, 6, 30)])  # before its date: withdrawn
    assert ("PendingLiquidationThreshold", 0.8, None, None) in kinds(withdrawn_early, announced)


def test_bps_rounding_never_loosens_and_keeps_lt_times_lb_below_one() -> None:
    assert to_bps(0.78, "lt") == 7800 and to_bps(1.05, "lb") == 10500  # exact values stay
    assert to_bps(0.123401, "mmf") == 1235 and to_bps(0.123401, "imf") == 1235  # up
    assert to_bps(0.787999, "lt") == 7879 and to_bps(0.747999, "ltv") == 7479  # down
    lt, lb = 0.952380, 1.05  # lt * lb = 0.99999...
    assert to_bps(lt, "lt") * to_bps(lb, "lb") <= 10_000 * 10_000


def test_force_writes_revisions_and_latest_only_moves_forward(tmp_path: Path) -> None:
    publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    changed = make_parameters().assign(mmf=[0.13, 0.10])
    with pytest.raises(PartitionExistsError, match="--force"):
        publish_partition(changed, tmp_path, AS_OF, METADATA)
    rev2 = publish_partition(changed, tmp_path, AS_OF, METADATA, force=True)
    rev3 = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA, force=True)
    assert (rev2.revision, rev3.revision) == (2, 3)
    assert rev3.path == tmp_path / "_revisions" / "asof=2025-06-30" / "rev=3"
    assert rev3.manifest["supersedes"] == "_revisions/asof=2025-06-30/rev=2"
    assert current_partition(tmp_path, AS_OF) == (3, rev3.path)
    assert list(list_partitions(tmp_path)) == [AS_OF]
    assert read_partition(rev2.path)["mmf"].tolist() == [0.10, 0.13]
    assert read_latest(tmp_path)["revision"] == 3

    older = dt.date(2025, 6, 29)  # a back-fill publishes, but LATEST stays on the newest
    back = publish_partition(make_parameters(older), tmp_path, older, METADATA)
    assert back.created and read_latest(tmp_path)["path"] == "_revisions/asof=2025-06-30/rev=3"


def test_latest_lagging_after_a_crash_is_repaired_by_the_rerun(tmp_path: Path) -> None:
    first = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    (tmp_path / "LATEST").unlink()  # as if killed between the rename and the pointer write
    again = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    assert not again.created
    assert read_latest(tmp_path)["success_sha256"] == (first.path / "_SUCCESS").read_text().strip()
    assert not advance_latest(tmp_path, AS_OF, 1, first.path,
                              (first.path / "_SUCCESS").read_text().strip())


def test_lock_is_exclusive_names_the_holder_and_is_released(tmp_path: Path) -> None:
    lock = tmp_path / "outputs" / ".serve.lock"
    with exclusive(lock, "serve"):
        holder = json.loads(lock.read_text())
        assert holder["job"] == "serve" and isinstance(holder["pid"], int)
        with pytest.raises(LockHeldError) as exc, exclusive(lock, "serve"):
            pass  # pragma: no cover - never entered
        assert str(lock) in str(exc.value) and f"pid {holder['pid']}" in str(exc.value)
        assert json.loads(lock.read_text()) == holder  # the loser did not wipe the record
    with exclusive(lock, "serve"):  # released on exit, and the file is kept
        assert lock.exists()


def test_lock_dies_with_its_holder(tmp_path: Path) -> None:
    lock = tmp_path / ".retrain.lock"
    code = ("import sys, time; from serving.ops.lock import exclusive\n"
            f"with exclusive({str(lock)!r}, 'retrain'):\n    print('held', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError, match=f"pid {proc.pid}"), exclusive(lock, "retrain"):
            pass  # pragma: no cover
    finally:
        proc.kill()
        proc.wait()
    with exclusive(lock, "retrain"):  # SIGKILL released it: no stale lock
        pass


def test_json_log_lines_carry_fixed_keys_and_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    log = JobLog("serve", Console(file=io.StringIO()), json_lines=True)
    log.info("publish", "published", as_of="2025-06-30", assets=12, level="ignored")
    log.error("stale", "stale data for SOL", stale_assets=["SOL"])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["step"] == "publish" and first["assets"] == 12 and first["level"] == "info"
    assert second["level"] == "error" and second["stale_assets"] == ["SOL"]
    assert json_requested(False, {"VOLMARGIN_LOG_JSON": "1"})
    assert not json_requested(False, {"VOLMARGIN_LOG_JSON": "0"})
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("text",), None)
    assert json.loads(JsonLinesFormatter().format(record))["message"] == "plain text"


def test_quiet_text_log_still_prints_warnings() -> None:
    out = io.StringIO()
    log = JobLog("serve", Console(file=out, width=200), quiet=True)
    log.info("publish", "published [BTC]")
    log.warning("stale", "stale data for [SOL]")
    assert out.getvalue() == "stale data for [SOL]\n"

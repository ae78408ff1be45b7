"""Atomic, immutable publication of one as-of partition of risk parameters."""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from serving import publish
from serving.publish import (
    PARAMETERS_SCHEMA,
    SCHEMA_VERSION,
    PartitionExistsError,
    cast_parameters,
    list_partitions,
    partition_dir,
    publish_partition,
    read_partition,
)

AS_OF = datetime.date(2025, 6, 30)
METADATA = {"model_uri": "models:/volmargin-policy@champion", "config_sha256": "abc123"}


def make_parameters(as_of: datetime.date = AS_OF) -> pd.DataFrame:
    """A valid two-asset frame, rows deliberately not sorted by asset."""
    mmf = [0.1234567890123456, 0.0912345678901234]  # 16 significant digits: CSV must keep them
    imf = [m * 1.25 for m in mmf]
    return pd.DataFrame({
        "as_of": [as_of, as_of],
        "asset": ["ETH", "BTC"],
        "horizon_days": [1, 1],
        "sigma_1d": [0.041, 0.029],
        "variance_1d": [0.041**2, 0.029**2],
        "loss_var": [0.095, 0.067],
        "loss_es": [0.11, 0.08],
        "loss_level": [0.975, 0.975],
        "stress_floor": [0.05, None],
        "loss_memory": [0.03, 0.02],
        "target_mmf": [0.11, 0.0912345678901234],
        "liquidity_addon": [0.004, 0.002],
        "mmf": mmf,
        "imf": imf,
        "lt": [1 - m for m in mmf],
        "ltv": [1 - m for m in imf],
        "lb": [1.06, 1.05],
        "max_leverage": [1 / m for m in imf],
        "prev_mmf": [0.12, None],
        "prev_imf": [0.15, None],
        "prev_lt": [0.88, None],
        "prev_ltv": [0.85, None],
        "prev_lb": [1.06, None],
        "change_mmf": [mmf[0] - 0.12, None],
        "flag_fallback": [False, False],
        "flag_stale": [False, True],
        "flag_clamped": [True, False],
        "flag_proxy": [False, False],
        "flag_young": [False, True],
        "flag_held": [True, False],
        "pending_lt": [0.8, None],
        "pending_lb": [1.06, None],
        "pending_mmf": [1 - 0.8 * 1.06, None],
        "pending_announced": [datetime.date(2025, 6, 28), None],
        "pending_effective": [datetime.date(2025, 7, 1), None],
        "admitted_ltv": ['[["2025-06-28", 0.71], ["2025-06-29", 0.7]]', "[]"],
        "reason": ["loosening limited to 50 bp", ""],
        "model_name": ["garch11_t", "garch11_t"],
        "model_version": ["3", "3"],
        "run_id": ["0123abcd", "0123abcd"],
        "policy_version": ["1.0.0", "1.0.0"],
        "feature_fingerprint": ["f00d", "f00d"],
    })


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in directory.iterdir()}


def sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def asof_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("asof="))


def test_partition_dir_is_hive_style() -> None:
    assert partition_dir(Path("out"), AS_OF) == Path("out/asof=2025-06-30")


def test_round_trip_returns_cast_rows_sorted_by_asset(tmp_path: Path) -> None:
    frame = make_parameters()
    result = publish_partition(frame, tmp_path, AS_OF, METADATA)

    assert result.created
    assert result.path == tmp_path / "asof=2025-06-30"
    assert sorted(p.name for p in result.path.iterdir()) == [
        "_SUCCESS", "manifest.json", "parameters.csv", "parameters.parquet"]
    back = read_partition(result.path)
    pd.testing.assert_frame_equal(back, cast_parameters(frame).to_pandas())
    assert back["asset"].tolist() == ["BTC", "ETH"]
    assert back["mmf"].tolist() == [0.0912345678901234, 0.1234567890123456]
    assert back["as_of"].tolist() == [AS_OF, AS_OF]
    assert back["prev_mmf"].isna().tolist() == [True, False]


def test_parquet_has_explicit_schema_and_version_metadata(tmp_path: Path) -> None:
    path = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA).path
    schema = pq.read_schema(path / "parameters.parquet")

    assert schema.equals(PARAMETERS_SCHEMA)
    assert schema.metadata[b"schema_version"] == SCHEMA_VERSION.encode()
    assert json.loads(schema.metadata[b"volmargin"]) == METADATA
    assert schema.field("mmf").metadata[b"unit"] == b"fraction of notional"
    assert b"description" in schema.field("lb").metadata
    assert not schema.field("mmf").nullable and schema.field("prev_mmf").nullable


def test_manifest_hashes_and_counts_match_files(tmp_path: Path) -> None:
    result = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    manifest = json.loads((result.path / "manifest.json").read_text())

    assert manifest == result.manifest
    assert manifest["as_of"] == "2025-06-30"
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["metadata"] == METADATA
    created = datetime.datetime.fromisoformat(manifest["created_at"])
    assert created.utcoffset() == datetime.timedelta(0)
    assert set(manifest["files"]) == {"parameters.parquet", "parameters.csv"}
    for name, entry in manifest["files"].items():
        file = result.path / name
        assert entry["sha256"] == sha256(file)
        assert entry["bytes"] == file.stat().st_size
        assert entry["rows"] == 2
    assert pq.read_metadata(result.path / "parameters.parquet").num_rows == 2


def test_success_vouches_for_manifest(tmp_path: Path) -> None:
    path = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA).path

    assert (path / "_SUCCESS").read_text().strip() == sha256(path / "manifest.json")


def test_success_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real_write = publish._write_durably

    def recording_write(file: Path, data: bytes) -> None:
        order.append(file.name)
        real_write(file, data)

    monkeypatch.setattr(publish, "_write_durably", recording_write)
    publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)

    assert order[-1] == "_SUCCESS"
    assert sorted(order[:-1]) == ["manifest.json", "parameters.csv", "parameters.parquet"]


def test_csv_mirrors_parquet_exactly(tmp_path: Path) -> None:
    path = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA).path
    with open(path / "parameters.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    parquet = read_partition(path)

    assert [row["asset"] for row in rows] == ["BTC", "ETH"]
    assert [row["as_of"] for row in rows] == ["2025-06-30", "2025-06-30"]
    assert [row["flag_stale"] for row in rows] == ["true", "false"]
    assert [row["prev_mmf"] for row in rows] == ["", "0.12"]
    for column in ("mmf", "imf", "lt", "ltv", "max_leverage", "variance_1d"):
        assert [float(row[column]) for row in rows] == parquet[column].tolist()


def test_a_carriage_return_in_a_reason_cannot_split_the_csv_row(tmp_path: Path) -> None:
    """A reason quoting an exception's text with a bare \\r: the CSV writer would not quote
    it and readers would split the row; line breaks are written as \\n (quoted)."""
    frame = make_parameters().assign(reason=["model unavailable: boom\rsecond line", ""])
    path = publish_partition(frame, tmp_path, AS_OF, METADATA).path
    with open(path / "parameters.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(read_partition(path)) == 2
    assert pd.read_csv(path / "parameters.csv").shape[0] == 2
    eth = read_partition(path).set_index("asset").loc["ETH", "reason"]
    assert eth == "model unavailable: boom\nsecond line" == rows[1]["reason"]


def test_latest_never_points_back_once_its_pointer_is_lost(tmp_path: Path) -> None:
    publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    (tmp_path / "LATEST").unlink()
    day_before = AS_OF - datetime.timedelta(days=1)
    publish_partition(make_parameters(day_before), tmp_path, day_before, METADATA)
    latest = json.loads((tmp_path / "LATEST").read_text())
    assert (latest["as_of"], latest["path"]) == (AS_OF.isoformat(), f"asof={AS_OF}")
    success = (tmp_path / f"asof={AS_OF}" / "_SUCCESS").read_text().strip()
    assert latest["success_sha256"] == success


def test_identical_rerun_is_a_noop(tmp_path: Path) -> None:
    first = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    before = snapshot(first.path)

    # Same content in a different row order and column order is still the same partition.
    shuffled = make_parameters().iloc[::-1, ::-1]
    again = publish_partition(shuffled, tmp_path, AS_OF, dict(METADATA))

    assert not again.created
    assert again.path == first.path
    assert again.manifest == first.manifest
    assert snapshot(first.path) == before
    assert asof_dirs(tmp_path) == ["asof=2025-06-30"]
    assert not any(p.name.startswith(".staging") for p in tmp_path.iterdir())


@pytest.mark.parametrize("change", ["values", "metadata"])
def test_different_rerun_raises_and_keeps_original(tmp_path: Path, change: str) -> None:
    first = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    before = snapshot(first.path)
    frame, metadata = make_parameters(), dict(METADATA)
    if change == "values":
        frame.loc[0, "mmf"] += 1e-12
    else:
        metadata["config_sha256"] = "def456"

    with pytest.raises(PartitionExistsError, match=r"asof=2025-06-30.*immutable"):
        publish_partition(frame, tmp_path, AS_OF, metadata)
    assert snapshot(first.path) == before
    assert read_partition(first.path)["mmf"].tolist() == [0.0912345678901234, 0.1234567890123456]


def test_missing_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing \['lb'\]"):
        publish_partition(make_parameters().drop(columns="lb"), tmp_path, AS_OF, METADATA)
    assert list(tmp_path.iterdir()) == []


def test_extra_column_is_named(tmp_path: Path) -> None:
    frame = make_parameters().assign(vol_ann_pct=[65.0, 46.0])
    with pytest.raises(ValueError, match=r"extra \['vol_ann_pct'\]"):
        publish_partition(frame, tmp_path, AS_OF, METADATA)


def test_duplicate_asset_is_named(tmp_path: Path) -> None:
    frame = make_parameters().assign(asset=["BTC", "BTC"])
    with pytest.raises(ValueError, match=r"duplicated: \['BTC'\]"):
        publish_partition(frame, tmp_path, AS_OF, METADATA)


def test_uncastable_column_is_named(tmp_path: Path) -> None:
    frame = make_parameters().assign(horizon_days=[1.5, 1.0])
    with pytest.raises(ValueError, match=r"column 'horizon_days' cannot be cast to int32"):
        publish_partition(frame, tmp_path, AS_OF, METADATA)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_missing_margin_is_rejected(tmp_path: Path, bad: float | None) -> None:
    frame = make_parameters()
    frame["mmf"] = frame["mmf"].astype(object)
    frame.loc[1, "mmf"] = bad
    with pytest.raises(ValueError, match=r"column 'mmf' must not be null.*\['BTC'\]"):
        publish_partition(frame, tmp_path, AS_OF, METADATA)


def test_as_of_column_must_match_partition(tmp_path: Path) -> None:
    frame = make_parameters(as_of=datetime.date(2025, 6, 29))
    with pytest.raises(ValueError, match=r"2025-06-29.*partition is 2025-06-30"):
        publish_partition(frame, tmp_path, AS_OF, METADATA)


def test_non_json_metadata_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON-serializable"):
        publish_partition(make_parameters(), tmp_path, AS_OF, {"when": AS_OF})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["parameters.parquet", "parameters.csv", "manifest.json"])
def test_tampered_file_is_named_on_read(tmp_path: Path, name: str) -> None:
    path = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA).path
    file = path / name
    file.write_bytes(file.read_bytes() + b" ")  # one trailing byte

    with pytest.raises(ValueError, match=name):
        read_partition(path)


def test_read_requires_success(tmp_path: Path) -> None:
    path = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA).path
    (path / "_SUCCESS").unlink()

    with pytest.raises(ValueError, match="_SUCCESS is missing"):
        read_partition(path)


def test_final_dir_without_success_is_never_touched(tmp_path: Path) -> None:
    manual = partition_dir(tmp_path, AS_OF)
    manual.mkdir()
    (manual / "parameters.csv").write_text("half a copy")

    with pytest.raises(ValueError, match=r"asof=2025-06-30 exists without _SUCCESS"):
        publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    assert [p.name for p in manual.iterdir()] == ["parameters.csv"]
    assert (manual / "parameters.csv").read_text() == "half a copy"


def test_leftover_staging_dir_is_ignored(tmp_path: Path) -> None:
    leftover = tmp_path / ".staging-asof=2025-06-30-deadbeef"
    leftover.mkdir()
    (leftover / "parameters.parquet").write_bytes(b"truncated")

    result = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)

    assert result.created
    assert read_partition(result.path)["asset"].tolist() == ["BTC", "ETH"]
    assert (leftover / "parameters.parquet").read_bytes() == b"truncated"
    assert list(list_partitions(tmp_path)) == [AS_OF]


def test_crash_before_rename_leaves_no_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="simulated crash"):
        publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    assert asof_dirs(tmp_path) == []
    assert list_partitions(tmp_path) == {}

    monkeypatch.undo()
    result = publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    assert result.created
    assert len(read_partition(result.path)) == 2


def test_crash_while_staging_leaves_no_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = publish._write_durably

    def crash_on_success(file: Path, data: bytes) -> None:
        if file.name == "_SUCCESS":
            raise OSError("disk full")
        real_write(file, data)

    monkeypatch.setattr(publish, "_write_durably", crash_on_success)
    with pytest.raises(OSError, match="disk full"):
        publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    assert asof_dirs(tmp_path) == []

    monkeypatch.undo()
    assert publish_partition(make_parameters(), tmp_path, AS_OF, METADATA).created


@pytest.mark.parametrize("rival_mmf_shift", [0.0, 0.01])
def test_losing_a_publish_race_judges_the_winner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rival_mmf_shift: float
) -> None:
    real_rename = os.rename
    rival = make_parameters()
    rival["mmf"] += rival_mmf_shift

    def rival_wins(src: os.PathLike, dst: os.PathLike) -> None:
        monkeypatch.setattr(os, "rename", real_rename)
        publish_partition(rival, tmp_path, AS_OF, METADATA)  # lands first
        real_rename(src, dst)  # now fails: dst exists and is not empty

    monkeypatch.setattr(os, "rename", rival_wins)
    if rival_mmf_shift:
        with pytest.raises(PartitionExistsError):
            publish_partition(make_parameters(), tmp_path, AS_OF, METADATA)
    else:
        assert not publish_partition(make_parameters(), tmp_path, AS_OF, METADATA).created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "asof=2025-06-30"]
    pd.testing.assert_frame_equal(
        read_partition(tmp_path / "asof=2025-06-30"), cast_parameters(rival).to_pandas())


def test_list_partitions_skips_incomplete_dirs(tmp_path: Path) -> None:
    for day in (datetime.date(2025, 6, 30), datetime.date(2025, 6, 29)):
        publish_partition(make_parameters(day), tmp_path, day, METADATA)
    (tmp_path / "asof=2025-07-01").mkdir()
    (tmp_path / ".staging-asof=2025-07-02-0badc0de").mkdir()

    assert list(list_partitions(tmp_path)) == [datetime.date(2025, 6, 29), AS_OF]


def test_an_older_schema_is_refused_unless_upgraded_and_then_equals_the_new_rows(
        tmp_path: Path) -> None:
    """A v3 partition (no ``flag_young``) is refused by the consumers' strict read; the batch
    job's upgraded read gives the v4 rows with ``flag_young`` false; a v2 partition cannot be
    carried forward (its state columns were replaced) and says so."""
    from tests.older_schema import write_older

    new = publish_partition(make_parameters(), tmp_path / "v4", AS_OF, METADATA).path
    old = write_older(new, tmp_path / "v3" / f"asof={AS_OF}", "3", ["flag_young"])
    with pytest.raises(ValueError, match="has schema_version '3'; this code reads '4'"):
        read_partition(old)
    upgraded = read_partition(old, upgrade=True)
    assert upgraded.attrs["upgraded"] == ["v3 -> v4: flag_young added as false"]
    pd.testing.assert_frame_equal(upgraded, read_partition(new).assign(flag_young=False))
    ancient = write_older(new, tmp_path / "v2" / f"asof={AS_OF}", "2", ["flag_young"])
    with pytest.raises(ValueError, match=r"schema_version '2' cannot be upgraded to '4' "
                                         r"\(upgradable: \['3'\]\)"):
        read_partition(ancient, upgrade=True)

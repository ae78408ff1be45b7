"""The serving job under operations: crashes, reruns, revisions, locks, missing models, stale
data, update records, JSON logs and the consumer's reader, on a registered real-data champion.

Every test publishes into its own outputs directory (``VOLMARGIN__PATHS__OUTPUTS_DIR``) of one
module-wide copy of the session's champion project (:mod:`tests.project`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pandas as pd
import pyarrow.dataset as ds
import pytest
from click.testing import Result
from typer.testing import CliRunner

from pipelines.cli import app
from serving.layout import current_partition, list_partitions, read_latest
from serving.ops.lock import EX_TEMPFAIL, exclusive, lock_path
from serving.publish import PAUSE_ENV, read_manifest, read_partition
from serving.records import PENDING_TYPES, UPDATE_TYPES, reference_id
from tests.conftest import REPO
from tests.project import AS_OF, copy_project

D28, D29, D30 = dt.date(2025, 6, 28), dt.date(2025, 6, 29), dt.date(2025, 6, 30)
SCHEMAS = REPO / "docs" / "schema"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory, "serving-ops")


def invoke(project: Path, outputs: str, *args: str, env: dict[str, str] | None = None,
           data_dir: str = "market") -> Result:
    """``volmargin <args> --data-dir <data_dir>`` in-process, publishing under ``outputs``."""
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(project)
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        mp.setenv("VOLMARGIN__PATHS__OUTPUTS_DIR", outputs)
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        return CliRunner().invoke(app, [*args, "--data-dir", data_dir])
    finally:
        mp.undo()


def spawn(project: Path, outputs: str, *args: str, env: dict[str, str] | None = None
          ) -> subprocess.Popen[str]:
    """``volmargin <args>`` as a separate process (what a timer or a second operator runs)."""
    full_env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
                "VOLMARGIN__PATHS__OUTPUTS_DIR": outputs, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=project,
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def corrected_market(project: Path, name: str, edit: str) -> str:
    """A copy of the project's market data with SOL's daily file edited (``edit``)."""
    dest = project / name
    if not dest.exists():
        shutil.copytree(project / "market", dest)
        path = dest / "crypto" / "daily" / "SOL.csv.gz"
        frame = pd.read_csv(path, dtype={"timestamp": str})
        if edit == "revised close":  # the provider revised the last close down 8%
            frame.loc[frame.index[-1], "close"] *= 0.92
            frame.loc[frame.index[-1], "low"] = frame[["low", "close"]].iloc[-1].min()
        else:  # "stale": SOL stopped updating ten days before the as-of
            frame = frame[frame["timestamp"].str.slice(0, 10) <= "2025-06-20"]
        with gzip.open(path, "wt") as fh:
            frame.to_csv(fh, index=False)
    return name


@pytest.fixture(scope="module")
def daily(project: Path) -> tuple[Path, list[Result]]:
    """Three consecutive days published as a timer would, the last one with JSON logs."""
    results = [invoke(project, "out_daily", "serve", "--as-of", str(D28), "--quiet"),
               invoke(project, "out_daily", "serve", "--as-of", str(D29), "--quiet"),
               invoke(project, "out_daily", "serve", "--as-of", AS_OF, "--log-json")]
    for result in results:
        assert result.exit_code == 0, result.output
    return project / "out_daily" / "forecasts", results


def test_killed_while_publishing_leaves_no_partition_and_the_next_run_completes(
        project: Path) -> None:
    root = project / "out_kill" / "forecasts"
    assert invoke(project, "out_kill", "serve", "--as-of", str(D28), "-q").exit_code == 0
    latest_before = (root / "LATEST").read_bytes()

    proc = spawn(project, "out_kill", "serve", "--as-of", str(D29), "--data-dir", "market",
                 "-q", env={PAUSE_ENV: "120"})
    deadline = time.monotonic() + 120
    while not list(root.glob(".staging-asof=2025-06-29-*/parameters.parquet")):
        assert proc.poll() is None, f"serve ended before publishing: {proc.communicate()[0]}"
        assert time.monotonic() < deadline, "serve never reached the staging write"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # mid-publication: parquet written, _SUCCESS not yet
    proc.communicate()

    assert proc.returncode == -signal.SIGKILL
    assert not (root / "asof=2025-06-29").exists()
    assert list(list_partitions(root)) == [D28]
    assert (root / "LATEST").read_bytes() == latest_before
    assert len(read_partition(root / "asof=2025-06-28")) == 2
    leftovers = sorted(p.name for p in root.glob(".staging-*"))
    assert len(leftovers) == 1

    again = invoke(project, "out_kill", "serve", "--as-of", str(D29))
    assert again.exit_code == 0, again.output
    assert "published revision 1" in again.output and leftovers[0] in again.output
    assert list(list_partitions(root)) == [D28, D29]
    assert read_latest(root)["path"] == "asof=2025-06-29"
    assert not list(root.glob(".staging-*"))


def test_rerun_is_a_noop_and_force_publishes_a_revision_beside_the_original(
        project: Path) -> None:
    root = project / "out_rev" / "forecasts"
    first = invoke(project, "out_rev", "serve", "--as-of", AS_OF)
    assert first.exit_code == 0, first.output
    original = snapshot(root / f"asof={AS_OF}")
    for extra in ([], ["--force"]):  # identical content: nothing to revise either way
        rerun = invoke(project, "out_rev", "serve", "--as-of", AS_OF, *extra)
        assert rerun.exit_code == 0 and "already published (identical, no-op)" in rerun.output

    revised = corrected_market(project, "market_revised", "revised close")
    refused = invoke(project, "out_rev", "serve", "--as-of", AS_OF, data_dir=revised)
    assert refused.exit_code == 1
    assert "already published with different content" in refused.output
    assert "--force" in refused.output
    forced = invoke(project, "out_rev", "serve", "--as-of", AS_OF, "--force", data_dir=revised)
    assert forced.exit_code == 0, forced.output
    assert "published revision 2" in forced.output

    rev2 = root / "_revisions" / f"asof={AS_OF}" / "rev=2"
    assert snapshot(root / f"asof={AS_OF}") == original  # the original is untouched
    assert current_partition(root, D30) == (2, rev2)
    assert read_latest(root)["path"] == f"_revisions/asof={AS_OF}/rev=2"
    manifest = read_manifest(rev2)
    assert (manifest["revision"], manifest["supersedes"]) == (2, f"asof={AS_OF}")
    old, new = read_partition(root / f"asof={AS_OF}"), read_partition(rev2)
    assert new.set_index("asset").loc["SOL", "sigma_1d"] != old.set_index("asset").loc[
        "SOL", "sigma_1d"]
    # Readers of asof=D and Hive-dataset readers of the root see only the original.
    assert list(list_partitions(root)) == [D30]
    dataset = ds.dataset(root, format="parquet", partitioning="hive", exclude_invalid_files=True)
    assert dataset.to_table().num_rows == 2
    # The revision's records move consumers from rev 1's values, not from the day before.
    records = json.loads((rev2 / "updates.json").read_text())["records"]
    by_asset = old.set_index("asset")
    for record in records:
        column = {v: k for k, v in {**UPDATE_TYPES, **PENDING_TYPES}.items()}[
            record["update_type"]]
        held = by_asset.loc[record["market"], column]
        assert record["previous_value"] == (None if pd.isna(held) else held)
        assert record["reference_id"] == reference_id(D30, record["market"],
                                                      record["update_type"], "1", 2)
    # A rerun of the revised data is now a no-op against revision 2.
    same = invoke(project, "out_rev", "serve", "--as-of", AS_OF, data_dir=revised)
    assert same.exit_code == 0 and "no-op" in same.output


def test_a_second_serve_while_one_runs_exits_naming_the_lock_and_its_pid(project: Path) -> None:
    lock = lock_path(project / "out_lock", "serve")
    with exclusive(lock, "serve"):
        proc = spawn(project, "out_lock", "serve", "--as-of", AS_OF, "--data-dir", "market")
        output, _ = proc.communicate(timeout=120)
    assert proc.returncode == EX_TEMPFAIL, output
    flat = " ".join(output.split())  # rich wraps long lines
    assert "holds the lock" in flat and str(os.getpid()) in flat
    assert lock.name in flat
    assert not (project / "out_lock" / "forecasts").exists()


def test_missing_champion_or_version_fails_before_reading_data(project: Path,
                                                              tmp_path: Path) -> None:
    shutil.copytree(project / "configs", tmp_path / "configs")
    none = invoke(tmp_path, "out", "serve", "--as-of", AS_OF, data_dir="no-such-dir")
    assert none.exit_code == 1 and "no @champion" in none.output
    absent = invoke(project, "out_missing", "serve", "--model-version", "7",
                    data_dir="no-such-dir")
    assert absent.exit_code == 1
    assert "has no version 7" in " ".join(absent.output.split())
    assert not (project / "out_missing" / "forecasts").exists()


def test_an_unexpected_failure_is_logged_with_its_step(project: Path) -> None:
    no_data = invoke(project, "out_missing", "serve", "--as-of", AS_OF, "--log-json",
                     data_dir="no-such-dir")
    assert no_data.exit_code == 1
    error = [json.loads(line) for line in no_data.output.splitlines() if line.startswith("{")][-1]
    assert error["level"] == "error" and error["step"] in ("load data", "features")
    assert error["message"].startswith(f"serve failed at step {error['step']}:")
    assert "no-such-dir" in error["message"]


def test_stale_asset_gets_fallback_and_on_stale_decides_the_exit_status(project: Path) -> None:
    stale = corrected_market(project, "market_stale", "stale")
    warned = invoke(project, "out_stale", "serve", "--as-of", AS_OF, data_dir=stale)
    assert warned.exit_code == 0, warned.output
    assert "stale data for SOL" in " ".join(warned.output.split())

    failed = invoke(project, "out_stale", "serve", "--as-of", str(D29), "--log-json",
                    data_dir=stale, env={"VOLMARGIN__SERVING__ON_STALE": "fail"})
    assert failed.exit_code == 3, failed.output
    last = json.loads(failed.output.strip().splitlines()[-1])
    assert (last["level"], last["step"], last["stale_assets"]) == ("error", "stale", ["SOL"])
    for day in (D30, D29):  # published before failing: risk engines get the fallback
        params = read_partition(project / "out_stale" / "forecasts" / f"asof={day}")
        sol, btc = params.set_index("asset").loc["SOL"], params.set_index("asset").loc["BTC"]
        assert sol["flag_stale"] and sol["flag_fallback"] and sol["mmf"] == 0.5
        assert "stale" in sol["reason"]
        assert not btc["flag_stale"] and btc["mmf"] < 0.5


def test_update_records_list_exactly_the_changed_parameters(daily: tuple) -> None:
    root, _ = daily
    frames = {day: read_partition(root / f"asof={day}") for day in (D28, D29, D30)}
    schema = json.loads((SCHEMAS / "updates.schema.json").read_text())
    first = json.loads((root / f"asof={D28}" / "updates.json").read_text())
    jsonschema.validate(first, schema)
    assert len(first["records"]) == 2 * len(UPDATE_TYPES)  # first listing: everything
    assert all(r["previous_value"] is None for r in first["records"])
    for before, day in ((D28, D29), (D29, D30)):
        document = json.loads((root / f"asof={day}" / "updates.json").read_text())
        jsonschema.validate(document, schema)
        old, new = frames[before].set_index("asset"), frames[day].set_index("asset")
        changed = {(asset, kind) for asset in new.index for col, kind in UPDATE_TYPES.items()
                   if new.loc[asset, col] != old.loc[asset, col]}
        records = [r for r in document["records"] if r["update_type"] in UPDATE_TYPES.values()]
        assert {(r["market"], r["update_type"]) for r in records} == changed
        for record in records:
            col = {v: k for k, v in UPDATE_TYPES.items()}[record["update_type"]]
            assert record["previous_value"] == old.loc[record["market"], col]
            assert record["new_value"] == new.loc[record["market"], col]
            assert record["effective_date"] == str(day)
        for record in document["records"]:  # an announced change: new, trimmed or withdrawn
            if record["update_type"] in PENDING_TYPES.values():
                col = {v: k for k, v in PENDING_TYPES.items()}[record["update_type"]]
                now, then = new.loc[record["market"], col], old.loc[record["market"], col]
                assert record["new_value"] == (None if pd.isna(now) else now)
                assert record["previous_value"] == (None if pd.isna(then) else then)
        manifest = read_manifest(root / f"asof={day}")
        assert manifest["updates"]["records"] == len(document["records"])
        assert manifest["files"]["updates.json"]["rows"] == len(document["records"])


def test_a_deployment_upgraded_across_a_schema_bump_serves_on_from_its_old_partitions(
        project: Path, daily: tuple) -> None:
    """The day before was published by the release before (schema v3, no ``flag_young``):
    the next serve carries its thresholds in force and announced changes forward, says so,
    and publishes what it publishes after a v4 day before."""
    from tests.older_schema import write_older

    root, _ = daily
    upgraded = project / "out_upgrade" / "forecasts"
    write_older(root / f"asof={D28}", upgraded / f"asof={D28}", "3", ["flag_young"])
    result = invoke(project, "out_upgrade", "serve", "--as-of", str(D29))
    assert result.exit_code == 0, result.output
    assert "upgraded in memory (v3 -> v4: flag_young added as false)" in result.output
    pd.testing.assert_frame_equal(read_partition(upgraded / f"asof={D29}"),
                                  read_partition(root / f"asof={D29}"))
    assert (json.loads((upgraded / f"asof={D29}" / "updates.json").read_text())["records"]
            == json.loads((root / f"asof={D29}" / "updates.json").read_text())["records"])


def test_manifest_names_model_policy_features_and_code(daily: tuple) -> None:
    root, _ = daily
    manifest = read_manifest(root / f"asof={AS_OF}")
    meta = manifest["metadata"]
    assert meta["model_name"] == "volmargin-policy" and meta["model_version"] == "1"
    assert meta["model_uri"] == "models:/volmargin-policy/1" and meta["run_id"]
    assert meta["policy_version"] == "volmargin-policy/1" and meta["forecaster"] == "garch11_t"
    assert len(meta["feature_fingerprint"]) == 64
    assert manifest["code_version"].startswith(("git:", "volmargin=="))
    assert (manifest["revision"], manifest["supersedes"]) == (1, None)
    assert read_latest(root)["path"] == f"asof={AS_OF}"


def test_published_rows_satisfy_the_consumer_json_schema(daily: tuple) -> None:
    root, _ = daily
    schema = json.loads((SCHEMAS / "parameters.schema.json").read_text())
    jsonschema.validate(read_latest(root), json.loads(
        (SCHEMAS / "latest.schema.json").read_text()))
    for row in read_partition(root / f"asof={AS_OF}").to_dict(orient="records"):
        row = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
        row = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()}
        jsonschema.validate(row, schema, format_checker=jsonschema.FormatChecker())


def test_json_logs_are_one_object_per_line_with_key_figures(daily: tuple) -> None:
    _, results = daily
    lines = [json.loads(line) for line in results[-1].output.strip().splitlines()]
    assert all({"ts", "level", "job", "step", "message"} <= set(line) for line in lines)
    assert [line["step"] for line in lines[:-1]] == [
        "resolve model", "load model", "load data", "features", "apply policy", "publish"]
    final = lines[-1]
    assert (final["job"], final["as_of"], final["assets"], final["version"]) == (
        "serve", AS_OF, 2, "1")
    assert final["fallbacks"] == 0 and final["created"] is True
    assert dt.datetime.fromisoformat(final["ts"]).utcoffset() == dt.timedelta(0)


def test_reader_example_verifies_and_prints_the_latest_partition(daily: tuple,
                                                                 tmp_path: Path) -> None:
    root, _ = daily
    script = REPO / "examples" / "read_parameters.py"
    ok = subprocess.run([sys.executable, str(script), str(root), "--max-age-days", "100000"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert f"asof={AS_OF}" in ok.stdout and "BTC" in ok.stdout and "SOL" in ok.stdout
    assert "sha256 verified" in ok.stdout and "STALE" not in ok.stderr
    # the same partition read today is far older than two days: printed, then exit 2 with
    # what to apply (a job that failed publishes nothing; LATEST stays on its last good day)
    old = subprocess.run([sys.executable, str(script), str(root)], capture_output=True,
                         text=True, timeout=60)
    assert old.returncode == 2 and "BTC" in old.stdout
    assert f"STALE: the newest partition is as of {AS_OF}" in old.stderr
    assert "apply LTV 0" in old.stderr

    tampered = tmp_path / "forecasts"
    shutil.copytree(root, tampered)
    csv = tampered / f"asof={AS_OF}" / "parameters.csv"
    csv.write_text(csv.read_text().replace("BTC", "BTX"))
    bad = subprocess.run([sys.executable, str(script), str(tampered)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "parameters.csv is corrupt" in bad.stderr

    # a LATEST leading out of the root (a verified partition elsewhere) is refused
    pointer = json.loads((root / "LATEST").read_text())
    shutil.copytree(root, tmp_path / "moved" / "elsewhere")  # verified partitions out of it
    for n, elsewhere in enumerate((f"../elsewhere/{pointer['path']}",
                                   str(tmp_path / "moved" / "elsewhere" / pointer["path"]))):
        moved = tmp_path / "moved" / f"forecasts{n}"
        shutil.copytree(root, moved)
        (moved / "LATEST").write_text(json.dumps({**pointer, "path": elsewhere}))
        out = subprocess.run([sys.executable, str(script), str(moved), "--max-age-days",
                              "100000"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "points outside" in out.stderr, out.stderr


def test_reader_example_starts_again_when_latest_moves_while_it_reads(
        daily: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A newer revision is a new partition and a repointed LATEST, never a rewrite of the one
    being read: the reader must notice LATEST moving, not only a changed _SUCCESS."""
    root, _ = daily
    spec = importlib.util.spec_from_file_location(
        "read_parameters", REPO / "examples" / "read_parameters.py")
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    copy = tmp_path / "forecasts"
    shutil.copytree(root, copy)
    path, rows, _ = reader.latest_parameters(copy)  # unmoved: read as is
    assert path == copy / json.loads((copy / "LATEST").read_text())["path"]
    assert len(rows) == 2
    real = reader.read_partition

    def read_then_publish(p: Path):
        out = real(p)
        pointer = json.loads((copy / "LATEST").read_text())
        (copy / "LATEST").write_text(json.dumps({**pointer, "revision": 2}))
        return out

    monkeypatch.setattr(reader, "read_partition", read_then_publish)
    with pytest.raises(ValueError, match="newer partition was published while"):
        reader.latest_parameters(copy)


def test_reader_example_age_rule_and_withdrawn_records() -> None:
    spec = importlib.util.spec_from_file_location(
        "read_parameters", REPO / "examples" / "read_parameters.py")
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    today = dt.date(2025, 7, 3)
    assert reader.stale_note("2025-07-02", today, 2) is None  # the day's job has run
    assert reader.stale_note("2025-07-01", today, 2) is None  # it has not run yet
    note = reader.stale_note("2025-06-30", today, 2)  # a day missed
    assert note is not None and "3 days before 2025-07-03" in note
    withdrawn = {"market": "ETH", "update_type": "liquidation_threshold",
                 "previous_value_bps": 8300, "new_value_bps": None,
                 "reference_id": "0123456789abcdef0123"}
    assert "8300 bps -> withdrawn" in reader.record_line(withdrawn)
    assert "->  8325 bps" in reader.record_line({**withdrawn, "new_value_bps": 8325})


@pytest.mark.parametrize("name", [
    "qlike_h1.USD₮0", "capital.policy:gbm@confidence=0.99,w=1.BTC", "qlike_h1.BTC+", "a//b",
    "./x", "x/../y", "..", "/lead", "trail/", ""])
def test_metric_keys_are_ones_mlflow_admits(name: str) -> None:
    """Whatever a symbol or policy name holds, the key is one MLflow's own validator admits
    (characters and paths); a key it admits already is kept as it is."""
    from mlflow.utils.validation import _validate_metric_name

    from serving.ops.tracking import metric_key

    key = metric_key(name)
    _validate_metric_name(key)  # raises MlflowException on a refused key
    assert metric_key(key) == key  # a key MLflow admits is kept as it is
    assert metric_key("qlike_eva_h7.BTC-PERP/x.y z") == "qlike_eva_h7.BTC-PERP/x.y z"
    # two names cleaned alike keep two keys (one asset's metrics never overwrite another's)
    twin = name.replace("₮", "_").replace("+", "_").replace(":", "_").replace("@", "_")
    if twin != name:
        assert metric_key(twin) != key

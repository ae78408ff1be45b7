"""``volmargin retrain`` and ``volmargin ingest`` as the weekly timer runs them: registered and
gated once per as-of, no-op on unchanged inputs, failing steps named, the lock respected, and
ingestion from a local stand-in for the providers (never the network)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from click.testing import Result
from typer.testing import CliRunner

from pipelines import retrain as retrain_module
from pipelines.cli import app
from pipelines.retrain import (
    ALLOW_HTTP_LOOPBACK_ENV,
    ENDPOINT_ENV,
    data_fingerprint,
    read_marker,
)
from serving.ops.lock import EX_TEMPFAIL, exclusive, lock_path
from serving.ops.registry import alias_history
from serving.ops.tracking import tracking_uri
from serving.publish import read_manifest, read_partition
from tests.conftest import REPO
from tests.project import AS_OF, champion_project, copy_project
from tests.replay.fake_api import FakeApis
from tests.replay.harness import serving, small_market

MARKER = f"outputs/retrain/asof={AS_OF}.json"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory, "retrain")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApis]:
    with serving(monkeypatch) as apis:
        for var in ENDPOINT_ENV.values():
            monkeypatch.setenv(var, apis.url)
        monkeypatch.setenv(ALLOW_HTTP_LOOPBACK_ENV, "1")  # the fake server speaks plain HTTP
        yield apis


def invoke(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(root)
        mp.delenv(retrain_module.OFFLINE_ENV, raising=False)
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        return CliRunner().invoke(app, list(args))
    finally:
        mp.undo()


def registry(root: Path) -> mlflow.MlflowClient:
    # both globals: alias_history() uses a default client, whatever an earlier module set
    mlflow.set_tracking_uri(tracking_uri(root / "mlruns"))
    mlflow.set_registry_uri(tracking_uri(root / "mlruns"))
    return mlflow.MlflowClient(tracking_uri(root / "mlruns"), tracking_uri(root / "mlruns"))


def test_retrain_registers_gates_and_records_the_as_of(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    built = champion_project(tmp_path_factory)
    assert "registered volmargin-policy v1 (garch11_t); gate passed → @champion" in \
        " ".join(built.retrain.output.split())
    assert "ingest skipped: --skip-ingest" in built.retrain.output
    marker = read_marker(built.root / MARKER)
    assert marker is not None
    assert (marker["registered_version"], marker["champion_version"]) == ("1", "1")
    # promoted either way (registry.gate.promote_first); whether this short slice passes the
    # acceptance gate is the gate's business (tests/test_registry.py, tests/test_acceptance.py)
    assert marker["promoted"] is True
    assert marker["gate_reason"].startswith(("passed", "first version promoted with its gate"))
    assert marker["selected"] == "garch11_t" and marker["history"] == []
    assert marker["fit_cutoff"] == AS_OF  # fitted through the as-of, on nothing later
    assert marker["data_fingerprint"] == data_fingerprint(built.root / "market",
                                                          dt.date.fromisoformat(AS_OF))
    assert marker["ingest"] == {"skipped": "--skip-ingest"}
    client = registry(built.root)
    assert str(client.get_model_version_by_alias("volmargin-policy", "champion").version) == "1"
    assert [m["version"] for m in alias_history("volmargin-policy")] == ["1"]


def test_rerun_on_unchanged_inputs_is_a_noop(project: Path) -> None:
    before = (project / MARKER).read_bytes()
    result = invoke(project, "retrain", "--data-dir", "market", "--as-of", AS_OF,
                    env={retrain_module.OFFLINE_ENV: "1"})
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "ingest skipped: VOLMARGIN_OFFLINE is set" in flat
    assert f"already retrained for {AS_OF} on the same data, config and code (no-op)" in flat
    assert (project / MARKER).read_bytes() == before
    versions = registry(project).search_model_versions("name='volmargin-policy'")
    assert [str(v.version) for v in versions] == ["1"]


def test_new_code_retrains_the_same_as_of(project: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A fix deployed since the marker was written retrains the as-of (the run is stubbed
    to stop where it would begin); the marker is left as it was."""
    import pipelines.run as run_module

    before = (project / MARKER).read_bytes()
    recorded = json.loads(before)["code_version"]

    def reached(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the pipeline ran")

    monkeypatch.setattr(run_module, "run", reached)
    monkeypatch.setattr(retrain_module, "code_version", lambda: recorded)
    same = invoke(project, "retrain", "--data-dir", "market", "--as-of", AS_OF,
                  env={retrain_module.OFFLINE_ENV: "1"})
    assert same.exit_code == 0 and "(no-op)" in " ".join(same.output.split())
    monkeypatch.setattr(retrain_module, "code_version", lambda: "git:" + "f" * 40)
    fixed = invoke(project, "retrain", "--data-dir", "market", "--as-of", AS_OF,
                   env={retrain_module.OFFLINE_ENV: "1"})
    assert fixed.exit_code != 0 and "the pipeline ran" in fixed.output
    assert (project / MARKER).read_bytes() == before


def test_a_version_refused_because_the_champion_moved_is_judged_again(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compare-and-set refused the version (another run moved @champion while it was
    judged): the same as-of, data, config and code is no no-op then (the run is stubbed to
    stop where it would begin); the marker is left as it was."""
    import pipelines.run as run_module
    from serving.ops.registry import CHAMPION_MOVED

    before = (project / MARKER).read_bytes()
    record = json.loads(before)
    monkeypatch.setattr(retrain_module, "code_version", lambda: record["code_version"])

    def reached(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the pipeline ran")

    monkeypatch.setattr(run_module, "run", reached)
    try:
        (project / MARKER).write_text(json.dumps(
            {**record, "gate_reason": f"{CHAMPION_MOVED} 1 to 2 while this version was judged"}))
        again = invoke(project, "retrain", "--data-dir", "market", "--as-of", AS_OF,
                       env={retrain_module.OFFLINE_ENV: "1"})
        assert again.exit_code != 0 and "the pipeline ran" in again.output
    finally:
        (project / MARKER).write_bytes(before)


def test_the_retrain_fans_out_on_the_engine_the_config_names(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """backtest.engine / scheduler / dask_workers reach the retrain's run as `volmargin run`'s
    (the run is stubbed to stop where it would begin, after recording what it was given)."""
    import pipelines.engine as engine_module
    import pipelines.run as run_module

    asked: list[tuple] = []
    given: list[object] = []
    real = engine_module.make_engine

    def recorded(kind, n_jobs=-1, scheduler=None, n_workers=None, say=print):
        asked.append((kind, n_jobs, scheduler, n_workers))
        return real("local", 1)  # no cluster started here: what was asked is the point

    def reached(*args: object, **kwargs: object) -> None:
        given.append(kwargs.get("engine"))
        raise RuntimeError("the pipeline ran")

    monkeypatch.setattr(engine_module, "make_engine", recorded)
    monkeypatch.setattr(run_module, "run", reached)
    before = (project / MARKER).read_bytes()
    result = invoke(project, "retrain", "--data-dir", "market", "--as-of", AS_OF, "--force",
                    env={retrain_module.OFFLINE_ENV: "1",
                         "VOLMARGIN__BACKTEST__ENGINE": "dask",
                         "VOLMARGIN__BACKTEST__SCHEDULER": "tcp://10.0.0.7:8786",
                         "VOLMARGIN__BACKTEST__DASK_WORKERS": "3",
                         "VOLMARGIN__BACKTEST__N_JOBS": "5"})
    assert result.exit_code != 0 and "the pipeline ran" in result.output
    assert asked == [("dask", 5, "tcp://10.0.0.7:8786", 3)]
    assert len(given) == 1 and given[0] is not None and given[0].kind == "local"  # the stub's
    assert (project / MARKER).read_bytes() == before


def test_failing_steps_are_named_and_leave_no_marker(project: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(retrain_module, "ingest", disk_full)
    ingest_failed = invoke(project, "retrain", "--data-dir", "market", "--as-of", "2025-06-29")
    assert ingest_failed.exit_code == 1
    assert "retrain failed at step ingest: OSError: No space left on device" in \
        " ".join(ingest_failed.output.split())

    broken = project / "market_broken"
    shutil.copytree(project / "market", broken, dirs_exist_ok=True)
    with gzip.open(broken / "crypto" / "daily" / "SOL.csv.gz", "wt") as fh:
        fh.write("timestamp,open,high,low,close,volume\n2025-06-30T00:00:00Z,1,2,3,x,5\n")
    load_failed = invoke(project, "retrain", "--data-dir", str(broken), "--as-of",
                         "2025-06-29", "--skip-ingest", "--log-json")
    assert load_failed.exit_code == 1
    last = json.loads(load_failed.output.strip().splitlines()[-1])
    assert (last["level"], last["step"]) == ("error", "load data")
    assert last["message"].startswith("retrain failed at step load data:")
    assert "SOL" in last["message"]
    assert not (project / "outputs/retrain/asof=2025-06-29.json").exists()


def test_a_second_retrain_while_one_runs_exits_with_the_lock(project: Path) -> None:
    lock = lock_path(project / "outputs", "retrain")
    with exclusive(lock, "retrain"):
        result = invoke(project, "retrain", "--data-dir", "market", "--as-of", AS_OF,
                        "--skip-ingest")
    assert result.exit_code == EX_TEMPFAIL
    assert "holds the lock" in result.output and ".retrain.lock" in result.output


def test_run_and_tail_wait_their_turn_behind_a_retrain(project: Path) -> None:
    """The training jobs write outputs/backtest, outputs/tail and register versions: while a
    retrain holds its lock, `run` and `tail` do nothing and exit 75, naming the holder."""
    lock = lock_path(project / "outputs", "retrain")
    with exclusive(lock, "retrain"):
        for args in (["run", "--data-dir", "market", "--as-of", AS_OF, "--quiet"],
                     ["tail", "--data-dir", "market", "--as-of", AS_OF]):
            result = invoke(project, *args)
            assert result.exit_code == EX_TEMPFAIL, result.output
            flat = " ".join(result.output.split())
            assert "another volmargin retrain holds the lock" in flat, flat


def test_retrain_after_ingesting_new_rows_registers_a_challenger(project: Path,
                                                                 api: FakeApis) -> None:
    result = invoke(project, "retrain", "--data-dir", "market", "--as-of", "2025-07-03",
                    "--log-json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()
             if line.startswith("{")]
    steps = [line["step"] for line in lines]
    assert steps[:3] == ["ingest", "fingerprint", "load data"] and "register" in steps
    assert any("SOLUSDT" in line["message"] for line in lines if line["level"] == "warning")
    appended = [line for line in lines if line.get("appended") is not None][-1]
    assert appended["appended"] > 0  # BTC daily, hourly and DVOL rows up to 2025-07-03
    marker = read_marker(project / "outputs/retrain/asof=2025-07-03.json")
    assert marker is not None and marker["registered_version"] == "2"
    assert marker["ingest"]["ok"] is False and marker["ingest"]["appended"] > 0
    champion = registry(project).get_model_version_by_alias("volmargin-policy", "champion")
    assert marker["promoted"] == (str(champion.version) == "2")
    assert marker["gate_reason"].startswith("passed" if marker["promoted"] else "refused")
    assert "vs champion" in marker["gate_reason"]  # compared with v1 on the same backtest
    final = lines[-1]
    assert (final["step"], final["version"], final["skipped"]) == ("retrain", "2", False)


def test_ingest_command_appends_and_reports_per_file(tmp_path: Path, api: FakeApis) -> None:
    market = small_market(tmp_path / "market")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    ok = invoke(tmp_path, "ingest", "--data-dir", str(market), "--sources", "binance",
                "--until", "2025-07-06T12:00:00Z")
    assert ok.exit_code == 0, ok.output
    assert "crypto/daily/BTC.csv.gz" in ok.output and "ingest ok:" in ok.output

    shutil.copy(market / "crypto/daily/BTC.csv.gz", market / "crypto/daily/ZZZ.csv.gz")
    bad = invoke(tmp_path, "ingest", "--data-dir", str(market), "--sources", "binance,deribit",
                 "--until", "2025-07-06T12:00:00Z", "--log-json")
    assert bad.exit_code == 1
    lines = [json.loads(line) for line in bad.output.strip().splitlines()]
    rows = {line["file"]: line["status"] for line in lines if "file" in line}
    assert rows["crypto/daily/ZZZ.csv.gz"] == "error"
    assert rows["crypto/daily/BTC.csv.gz"] == "ok"  # nothing new since the first run
    assert lines[-1]["level"] == "error" and lines[-1]["ok"] is False

    unknown = invoke(tmp_path, "ingest", "--data-dir", str(market), "--sources", "kraken")
    assert unknown.exit_code == 2 and "unknown ingest source" in unknown.output


def test_a_first_version_its_gate_refuses_is_promoted_and_serves_its_refused_assets_frozen(
        tmp_path: Path) -> None:
    """The slice of the champion project with the coverage test on: five months fail the
    acceptance on both assets, so the store's first version is refused by its own gate,
    promoted all the same (promote_first) and says so everywhere; the serve freezes both."""
    from tests.conftest import write_slice
    from tests.project import ASSETS, invoke_in, shrunken_config, write_config

    root = tmp_path / "refused"
    write_slice(root / "market", ASSETS, "2023-07-01", AS_OF)
    cfg = shrunken_config()
    cfg["registry"]["gate"]["require_coverage"] = True
    write_config(root, cfg)
    result = invoke_in(root, ["retrain", "--data-dir", "market", "--as-of", AS_OF,
                              "--skip-ingest"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "gate refused, promoted as the first version → @champion" in flat
    marker = read_marker(root / MARKER)
    assert marker is not None and marker["promoted"] is True and marker["gate_passed"] is False
    assert marker["gate_reason"].startswith("first version promoted with its gate result: "
                                            "refused: not acceptable on BTC")
    client = registry(root)
    version = client.get_model_version_by_alias("volmargin-policy", "champion")
    assert (version.tags["gate.passed"], version.tags["gate.promoted_anyway"]) == (
        "false", "first version")
    served = invoke_in(root, ["serve", "--data-dir", "market", "--as-of", AS_OF])
    assert served.exit_code == 0, served.output
    assert "frozen where its policy was not acceptable: BTC, SOL" in " ".join(
        served.output.split())
    part = root / "outputs" / "forecasts" / f"asof={AS_OF}"
    params = read_partition(part).set_index("asset")
    assert params["flag_fallback"].all() and (params["ltv"] == 0).all()
    assert params["reason"].str.contains("its gate refused it").all()
    assert read_manifest(part)["metadata"]["gate_refused"] == marker["gate_reason"]


def test_a_run_whose_compare_and_set_is_refused_reports_the_refusal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run promotes a version while this one is judged (staged here inside the
    promotion, before its compare-and-set): this version is not promoted, and what the
    retrain prints and records is the refusal tagged on it, not the gate's own verdict."""
    from serving.ops import registry as registry_module
    from tests.conftest import write_slice
    from tests.project import ASSETS, invoke_in, shrunken_config, write_config

    root = tmp_path / "raced"
    write_slice(root / "market", ASSETS, "2023-07-01", AS_OF)
    write_config(root, shrunken_config())
    real = registry_module.promote

    def raced(name: str, version: str, *args: object, **kwargs: object) -> object:
        client = mlflow.MlflowClient()
        other = client.create_model_version(name, client.get_model_version(name, version).source)
        registry_module.set_alias(name, registry_module.CHAMPION, str(other.version),
                                  "promoted by another run")
        return real(name, version, *args, **kwargs)

    monkeypatch.setattr(registry_module, "promote", raced)
    result = invoke_in(root, ["retrain", "--data-dir", "market", "--as-of", AS_OF,
                              "--skip-ingest"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert ("gate refused, @champion unchanged: refused: @champion moved from none to 2 "
            "while this version was judged") in flat
    marker = read_marker(root / MARKER)
    assert marker is not None
    assert (marker["registered_version"], marker["champion_version"]) == ("1", "2")
    assert marker["promoted"] is False and marker["gate_passed"] is False
    assert marker["gate_reason"].startswith(registry_module.CHAMPION_MOVED)
    client = registry(root)
    assert client.get_model_version("volmargin-policy", "1").tags["gate.reason"] == \
        marker["gate_reason"]
    assert [m["version"] for m in alias_history("volmargin-policy")] == ["2"]


def test_a_version_fitted_on_an_earlier_day_never_replaces_the_champion(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retrain for a day before the champion's fit cutoff (a backfill) registers its
    version, refused whatever the gate found (here the gate is made to pass): a champion fitted
    on later data is never replaced by one fitted on less."""
    import pipelines.steps as steps_module
    from pipelines.selection.gate import GateDecision

    root = copy_project(tmp_path_factory, "backfill")
    monkeypatch.setattr(steps_module, "gate", lambda *a, **k: GateDecision(True, "passed: x"))
    result = invoke(root, "retrain", "--data-dir", "market", "--as-of", "2025-06-20",
                    "--skip-ingest")
    assert result.exit_code == 0, result.output
    marker = read_marker(root / "outputs/retrain/asof=2025-06-20.json")
    assert marker is not None and marker["registered_version"] == "2"
    assert marker["promoted"] is False and marker["champion_version"] == "1"
    assert marker["gate_reason"].startswith(
        f"refused: fitted through 2025-06-20, before the fit cutoff {AS_OF} of @champion v1")
    assert "the gate's verdict: passed: x" in marker["gate_reason"]
    assert "gate refused, @champion unchanged" in " ".join(result.output.split())
    # fitted through the champion's own day (new code, --force): the gate decides, it passed
    same = invoke(root, "retrain", "--data-dir", "market", "--as-of", AS_OF, "--skip-ingest",
                  "--force")
    assert same.exit_code == 0, same.output
    again = read_marker(root / MARKER)
    assert again is not None and again["registered_version"] == "3"
    assert again["promoted"] is True and again["gate_reason"] == "passed: x"


def test_the_data_fingerprint_of_an_as_of_ignores_rows_after_it(tmp_path: Path) -> None:
    """What the daily ingest appends after the as-of leaves that as-of's fingerprint as it
    was (a rerun is a no-op); a revised row on or before it, a new file or a changed
    non-CSV file changes it."""
    root = tmp_path / "market"
    (root / "crypto" / "daily").mkdir(parents=True)
    rows = ["timestamp,open,high,low,close,volume",
            "2025-06-29T00:00:00Z,1,2,0.5,1.5,10", "2025-06-30T00:00:00Z,1.5,2,1,1.8,12"]
    path = root / "crypto" / "daily" / "BTC.csv.gz"

    def write(lines: list[str]) -> None:
        with gzip.open(path, "wt") as fh:
            fh.write("\n".join(lines) + "\n")

    write(rows)
    (root / "README.md").write_text("provenance\n")
    day = dt.date(2025, 6, 30)
    before = data_fingerprint(root, day)
    write([*rows, "2025-07-01T00:00:00Z,1.8,2.2,1.7,2.0,9"])  # the next day, appended
    assert data_fingerprint(root, day) == before
    assert data_fingerprint(root) != data_fingerprint(root, day)  # whole files: it moved
    assert data_fingerprint(root, dt.date(2025, 7, 1)) != before
    write([rows[0], rows[1], "2025-06-30T00:00:00Z,1.5,2,1,1.7,12"])  # a revised close
    assert data_fingerprint(root, day) != before
    write(rows)
    assert data_fingerprint(root, day) == before
    (root / "README.md").write_text("provenance, corrected\n")
    assert data_fingerprint(root, day) != before


def test_the_cut_of_a_sorted_csv_is_found_by_bisection_as_by_reading_every_line() -> None:
    """:func:`pipelines.retrain._end_of_day` against a line-by-line reading, on files of 0 to
    40 dated lines (repeated dates, with and without a final newline) and every cut."""
    import random

    from pipelines.retrain import _end_of_day

    rng = random.Random(7)
    for n in range(41):
        days = sorted(rng.sample(range(1, 29), min(n, 28)) + rng.choices(range(1, 29), k=n // 3))
        body = [f"2025-02-{d:02d}T00:00:00Z,1,2,0.5,1.5,{i}" for i, d in enumerate(days)]
        for final in ("\n", ""):
            data = ("timestamp,open,high,low,close,volume\n" + "\n".join(body)
                    + (final if body else "")).encode()
            for cut in range(0, 30):
                key = f"2025-02-{cut:02d}".encode()
                lines = data.split(b"\n")
                kept = [lines[0]] + [x for x in lines[1:] if x and x[:10] <= key]
                end = _end_of_day(data, key)
                assert data[:end].rstrip(b"\n") == b"\n".join(kept), (n, final, cut)
                assert end == len(data) or data[end - 1:end] == b"\n"  # whole lines

"""As-of is as-of everywhere: ``run``, ``retrain`` and ``serve`` see rows up to the as-of only;
without one the last complete UTC day is used (later rows ignored, named); a future as-of is
refused. Stale and missing data: a one-day gap keeps the previous parameters flagged stale.
``--keep-going`` in ``serve`` and through ``run``. Serve-time overrides the model ignores.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import Result
from mlflow import MlflowClient
from typer.testing import CliRunner

from pipelines.cli import app
from serving.layout import current_partition
from serving.market import FutureAsOfError, load_as_of
from serving.publish import read_manifest, read_partition
from tests.conftest import write_slice
from tests.project import AS_OF, copy_project, shrunken_config

D29, D30 = dt.date(2025, 6, 29), dt.date(2025, 6, 30)


def invoke(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(root)
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        return CliRunner().invoke(app, list(args))
    finally:
        mp.undo()


def cut_file(path: Path, last_day: str) -> None:
    """Keep the rows of a data file dated up to ``last_day`` (real rows, none altered)."""
    frame = pd.read_csv(path, dtype={"timestamp": str})
    with gzip.open(path, "wt") as fh:
        frame[frame["timestamp"].str.slice(0, 10) <= last_day].to_csv(fh, index=False)


def cut_hours(path: Path, last_stamp: str) -> None:
    """Keep the rows of an hourly file stamped up to ``last_stamp`` (ISO, as in the file)."""
    frame = pd.read_csv(path, dtype={"timestamp": str})
    with gzip.open(path, "wt") as fh:
        frame[frame["timestamp"] <= last_stamp].to_csv(fh, index=False)


@pytest.fixture(scope="module")
def small_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_slice(tmp_path_factory.mktemp("asof-market"), ["BTC"], "2025-06-01", AS_OF)


def test_without_as_of_the_last_complete_utc_day_is_used_and_later_rows_are_named(
        small_market: Path) -> None:
    pit = load_as_of(small_market, None, None, today=D30)  # 2025-06-30 is still trading
    assert pit.as_of == D29
    assert pit.market.daily["BTC"].index.max() == pd.Timestamp(D29)
    assert pit.market.hourly["BTC"].index.max() == pd.Timestamp("2025-06-29 23:00")
    text = "\n".join(pit.warnings)
    for name in ("crypto/daily/BTC.csv.gz", "crypto/hourly/BTC.csv.gz", "iv/DVOL_BTC.csv.gz"):
        assert name in text
    assert "24 row(s) from 2025-06-30 00:00:00 on ignored" in text  # the hourly file
    # a day later the data's last day is complete: nothing is ignored
    later = load_as_of(small_market, None, None, today=dt.date(2025, 7, 1))
    assert later.as_of == D30 and later.warnings == []


def test_an_explicit_as_of_cuts_without_warning_and_a_future_one_is_refused(
        small_market: Path) -> None:
    pit = load_as_of(small_market, None, dt.date(2025, 6, 15), today=D30)
    assert pit.market.daily["BTC"].index.max() == pd.Timestamp("2025-06-15")
    assert pit.warnings == []
    with pytest.raises(FutureAsOfError, match="2025-07-01 is in the future"):
        load_as_of(small_market / "not-read", None, dt.date(2025, 7, 1), today=D30)


@pytest.mark.parametrize("command", [["serve"], ["run", "--quiet"], ["retrain", "--skip-ingest"]])
def test_a_future_as_of_exits_2_with_a_clear_message(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("{}\n")
    future = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)).isoformat()
    result = invoke(tmp_path, *command, "--as-of", future, "--data-dir", "nowhere")
    assert result.exit_code == 2, result.output
    assert f"as-of {future} is in the future" in " ".join(result.output.split())
    assert not (tmp_path / "mlruns").exists()  # refused before anything was opened


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory, "asof-serving")


def market_copy(project: Path, name: str, edit) -> str:
    dest = project / name
    shutil.copytree(project / "market", dest)
    edit(dest)
    return name


def test_a_one_day_gap_keeps_the_previous_parameters_flagged_stale(project: Path) -> None:
    first = invoke(project, "serve", "--as-of", str(D29), "--data-dir", "market", "--quiet",
                   env={"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_gap"})
    assert first.exit_code == 0, first.output
    gap = market_copy(project, "market_gap", lambda d: [
        cut_file(p, str(D29)) for p in d.rglob("*.csv.gz") if "SPX" not in p.name])
    result = invoke(project, "serve", "--as-of", str(D30), "--data-dir", gap, "--log-json",
                    env={"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_gap",
                         "VOLMARGIN__SERVING__ON_STALE": "fail"})
    assert result.exit_code == 3, result.output  # on_stale: fail, although published
    last = json.loads(result.output.strip().splitlines()[-1])
    assert last["stale_assets"] == ["BTC", "SOL"]
    before = read_partition(project / "out_gap" / "forecasts" / f"asof={D29}").set_index("asset")
    after = read_partition(project / "out_gap" / "forecasts" / f"asof={D30}").set_index("asset")
    for asset in ("BTC", "SOL"):
        row = after.loc[asset]
        assert row["flag_stale"] and row["flag_fallback"], row["reason"]
        assert "stale data: last price 1 day(s) before 2025-06-30" in row["reason"]
        # the previous set is held (never the 50% conservative set for everyone)
        assert row["mmf"] == before.loc[asset, "mmf"] < 0.5
        assert row["lt"] == before.loc[asset, "lt"]


def test_serve_keep_going_carries_a_broken_asset_flagged_and_exits_4(project: Path) -> None:
    env = {"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_keep"}
    first = invoke(project, "serve", "--as-of", str(D29), "--data-dir", "market", "--quiet",
                   env=env)
    assert first.exit_code == 0, first.output
    broken = market_copy(project, "market_broken", lambda d: (
        d / "crypto" / "daily" / "SOL.csv.gz").write_bytes(b"\x1f\x8b\x08 not really gzip"))
    strict = invoke(project, "serve", "--as-of", AS_OF, "--data-dir", broken, env=env)
    assert strict.exit_code == 1
    assert "SOL.csv.gz" in " ".join(strict.output.split())
    assert not (project / "out_keep" / "forecasts" / f"asof={AS_OF}").exists()

    kept = invoke(project, "serve", "--as-of", AS_OF, "--data-dir", broken, "--keep-going",
                  env=env)
    assert kept.exit_code == 4, kept.output
    assert "crypto/daily/SOL.csv.gz" in " ".join(kept.output.split())
    partition = project / "out_keep" / "forecasts" / f"asof={AS_OF}"
    params = read_partition(partition).set_index("asset")
    previous = read_partition(project / "out_keep" / "forecasts" / f"asof={D29}")
    assert not params.loc["BTC", "flag_stale"]
    sol = params.loc["SOL"]
    assert sol["flag_stale"] and sol["flag_fallback"]
    assert "crypto/daily/SOL.csv.gz failed to load" in sol["reason"]
    assert sol["mmf"] == previous.set_index("asset").loc["SOL", "mmf"]  # frozen: held...
    assert sol["lt"] == previous.set_index("asset").loc["SOL", "lt"]
    assert sol["ltv"] == 0.0  # ... and no new borrowing on data that could not be read
    manifest = read_manifest(partition)["metadata"]
    assert list(manifest["skipped_files"]) == ["crypto/daily/SOL.csv.gz"]


def test_an_asset_gone_from_the_data_is_carried_frozen_until_it_returns_or_is_retired(
        project: Path) -> None:
    """SOL published on D28, its files gone on D29 (removed, renamed, not synced), back on
    D30: on D29 it is carried frozen on D28's thresholds, so D30 reads its state (the LTVs
    admitted on D28 among it) instead of starting afresh; retired on purpose, it is gone."""
    env = {"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_absent"}
    d28 = dt.date(2025, 6, 28)
    first = invoke(project, "serve", "--as-of", str(d28), "--data-dir", "market", "--quiet",
                   env=env)
    assert first.exit_code == 0, first.output
    gone = market_copy(project, "market_nosol", lambda d: [
        p.unlink() for p in d.rglob("SOL.csv.gz")])
    result = invoke(project, "serve", "--as-of", str(D29), "--data-dir", gone, env=env)
    assert result.exit_code == 0, result.output  # stale assets only warn by default
    said = " ".join(result.output.split())
    assert "SOL: no data for SOL in this update (published 2025-06-28)" in said
    assert "serving.retired_assets" in said
    out = project / "out_absent" / "forecasts"
    before = read_partition(out / f"asof={d28}").set_index("asset")
    held = read_partition(out / f"asof={D29}").set_index("asset")
    sol = held.loc["SOL"]
    assert sol["flag_stale"] and sol["flag_fallback"] and sol["ltv"] == 0.0
    assert "no data for SOL in this update" in sol["reason"]
    assert sol["lt"] == before.loc["SOL", "lt"] and sol["lb"] == before.loc["SOL", "lb"]
    assert sol["admitted_ltv"] == before.loc["SOL", "admitted_ltv"]  # the state, carried
    assert not held.loc["BTC", "flag_stale"]

    back = invoke(project, "serve", "--as-of", str(D30), "--data-dir", "market", "--quiet",
                  env=env)
    assert back.exit_code == 0, back.output
    sol30 = read_partition(out / f"asof={D30}").set_index("asset").loc["SOL"]
    admitted = dict(json.loads(sol30["admitted_ltv"]))
    assert admitted[str(d28)] == before.loc["SOL", "ltv"] > 0  # D28's LTV still protected
    assert sol30["lt"] >= before.loc["SOL", "ltv"]

    retired = invoke(project, "serve", "--as-of", str(D29), "--data-dir", gone, "--force",
                     "--quiet", env={**env, "VOLMARGIN__SERVING__RETIRED_ASSETS": "[SOL]"})
    assert retired.exit_code == 0, retired.output
    revision, path = current_partition(out, D29)
    assert revision == 2 and set(read_partition(path)["asset"]) == {"BTC"}
    # retired with its files still in the data directory: not published either
    listed = invoke(project, "serve", "--as-of", str(D30), "--data-dir", "market", "--force",
                    "--quiet", env={**env, "VOLMARGIN__SERVING__RETIRED_ASSETS": "[SOL]"})
    assert listed.exit_code == 0, listed.output
    revision, path = current_partition(out, D30)
    assert revision == 2 and set(read_partition(path)["asset"]) == {"BTC"}


def test_lost_or_stale_hourly_candles_freeze_the_asset_rather_than_switch_it_to_the_proxy(
        project: Path) -> None:
    """SOL's hourly file emptied on D29: margined on the daily-range proxy its covered loss
    (and the LT cut it would announce) would rest on a data fault, so it is frozen on D28's
    thresholds; an hourly feed that stopped while the daily one goes on, the same."""
    env = {"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_hourly"}
    d28 = dt.date(2025, 6, 28)
    assert invoke(project, "serve", "--as-of", str(d28), "--data-dir", "market", "--quiet",
                  env=env).exit_code == 0
    lost = market_copy(project, "market_lost_hourly", lambda d: (
        d / "crypto" / "hourly" / "SOL.csv.gz").write_bytes(b""))
    result = invoke(project, "serve", "--as-of", str(D29), "--data-dir", lost, env=env)
    assert result.exit_code == 0, result.output
    assert "SOL: hourly candles of SOL lost" in " ".join(result.output.split())
    out = project / "out_hourly" / "forecasts"
    before = read_partition(out / f"asof={d28}").set_index("asset")
    after = read_partition(out / f"asof={D29}").set_index("asset")
    sol = after.loc["SOL"]
    assert sol["flag_fallback"] and sol["ltv"] == 0.0 and "hourly candles of SOL lost" in (
        sol["reason"])
    assert sol["lt"] == before.loc["SOL", "lt"] and sol["lb"] == before.loc["SOL", "lb"]
    assert not after.loc["BTC", "flag_fallback"]

    stopped = market_copy(project, "market_stopped_hourly", lambda d: cut_file(
        d / "crypto" / "hourly" / "SOL.csv.gz", "2025-06-24"))
    again = invoke(project, "serve", "--as-of", str(D29), "--data-dir", stopped, "--force",
                   "--quiet", env=env)
    assert again.exit_code == 0, again.output
    _, path = current_partition(out, D29)
    sol = read_partition(path).set_index("asset").loc["SOL"]
    assert sol["ltv"] == 0.0 and sol["lt"] == before.loc["SOL", "lt"]
    assert "hourly candles of SOL stale (last 2025-06-24, 5 days old" in sol["reason"]

    # the hourly feed hours behind the daily one: the as-of day's last hours are missing (a
    # crash in them would go unseen), so the asset is frozen too, not margined on the rest
    behind = market_copy(project, "market_behind_hourly", lambda d: cut_hours(
        d / "crypto" / "hourly" / "SOL.csv.gz", f"{D29}T19:00:00Z"))
    late = invoke(project, "serve", "--as-of", str(D29), "--data-dir", behind, "--force",
                  "--quiet", env=env)
    assert late.exit_code == 0, late.output
    _, path = current_partition(out, D29)
    held = read_partition(path).set_index("asset")
    sol = held.loc["SOL"]
    assert sol["ltv"] == 0.0 and sol["lt"] == before.loc["SOL", "lt"]
    assert (f"hourly candles of SOL end at {D29} 19:00 UTC, before the as-of day's last hour "
            f"({D29} 23:00)") in sol["reason"]
    assert not held.loc["BTC", "flag_fallback"]  # its hours reach 23:00


def test_a_day_served_after_a_later_one_is_said(project: Path) -> None:
    env = {"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_backfill"}
    assert invoke(project, "serve", "--as-of", str(D30), "--data-dir", "market", "--quiet",
                  env=env).exit_code == 0
    result = invoke(project, "serve", "--as-of", str(D29), "--data-dir", "market", env=env)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"{D29} served after {D30} was published" in said and "--force" in said
    latest = (project / "out_backfill" / "forecasts" / "LATEST").read_text()
    assert str(D30) in latest  # LATEST does not move back


def test_today_is_refused_as_an_as_of_it_has_not_closed(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    with pytest.raises(FutureAsOfError, match="is today \\(UTC\\), which has not closed"):
        load_as_of(tmp_path / "not-read", None, today, today=today)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("{}\n")
    result = invoke(tmp_path, "serve", "--as-of", "today", "--data-dir", "nowhere")
    assert result.exit_code == 2, result.output
    assert "which has not closed" in " ".join(result.output.split())
    assert not (tmp_path / "mlruns").exists()


def test_a_serve_time_policy_override_is_refused_and_the_manifest_states_what_was_used(
        project: Path) -> None:
    env = {"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_cfg"}
    refused = invoke(project, "serve", "--as-of", AS_OF, "--data-dir", "market",
                     env={**env, "VOLMARGIN__POLICY__CONFIDENCE": "0.98"})
    assert refused.exit_code == 2, refused.output
    text = " ".join(refused.output.split())
    assert "policy.confidence = 0.98 (model: 0.975)" in text
    assert not (project / "out_cfg" / "forecasts").exists()

    edited = yaml.safe_load((project / "configs" / "default.yaml").read_text())
    edited["policy"]["confidence"] = 0.98    # a setting the protocol froze (its grid's)
    edited["policy"]["fhs_window"] = 400     # one it did not: the file was edited since
    edited["features"]["liquidation_delay_hours"] = 24  # what a loss column holds: the model's
    edited["features"]["store_keep_latest"] = 5  # the operator's retention: not the model's
    (project / "edited.yaml").write_text(yaml.safe_dump(edited))
    served = invoke(project, "serve", "--as-of", AS_OF, "--data-dir", "market", "--config",
                    "edited.yaml", env=env)
    assert served.exit_code == 0, served.output
    text = " ".join(served.output.split())
    assert "config values not applied" in text and "policy.fhs_window = 400" in text
    assert "settings frozen by the policy protocol" in text
    assert "policy.confidence = 0.975 (config file: 0.98)" in text
    meta = read_manifest(project / "out_cfg" / "forecasts" / f"asof={AS_OF}")["metadata"]
    assert meta["confidence"] == 0.975  # what the model applied
    assert meta["config_not_applied"] == {
        "policy.fhs_window": {"serve": 400, "model": 500},
        "features.liquidation_delay_hours": {"serve": 24, "model": 1}}
    assert meta["frozen_settings"] == {"policy.confidence": 0.975}
    # not applied means not applied: the panel too is built with the model's H (a 24-hour
    # loss window read by a policy fitted on 1-hour losses moved every margin)
    plain = invoke(project, "serve", "--as-of", AS_OF, "--data-dir", "market",
                   env={"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_plain"})
    assert plain.exit_code == 0, plain.output
    a = read_partition(project / "out_cfg" / "forecasts" / f"asof={AS_OF}")
    b = read_partition(project / "out_plain" / "forecasts" / f"asof={AS_OF}")
    cols = ["asset", "mmf", "imf", "lt", "ltv", "lb", "loss_es"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


@pytest.mark.slow
def test_run_as_of_fits_selects_and_publishes_on_rows_up_to_the_as_of_only(
        tmp_path: Path) -> None:
    as_of = "2025-03-31"
    write_slice(tmp_path / "market", ["BTC", "ETH", "SOL"], "2023-07-01", AS_OF)
    (tmp_path / "market" / "crypto" / "hourly" / "ETH.csv.gz").write_bytes(b"broken")
    cfg = shrunken_config()
    cfg["models"]["enabled"] = ["ewma94"]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text(yaml.safe_dump(cfg))
    result = invoke(tmp_path, "run", "--data-dir", "market", "--as-of", as_of, "--quiet",
                    "--keep-going")
    assert result.exit_code == 4, result.output  # completed, with ETH's file skipped
    assert "skipped file crypto/hourly/ETH.csv.gz" in result.output
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    version = client.get_model_version_by_alias("volmargin-policy", "champion")
    assert version.tags["fit_cutoff"] == as_of  # fitted through the as-of, not to June
    panels = list((tmp_path / "outputs" / "features").glob("panel-*.parquet"))
    assert panels and all(
        pd.read_parquet(p).index.get_level_values("date").max() <= pd.Timestamp(as_of)
        for p in panels)
    paths = pd.read_parquet(tmp_path / "outputs" / "backtest" / "policy_paths.parquet")
    assert pd.to_datetime(paths.reset_index()["date"]).max() <= pd.Timestamp(as_of)
    # the serve step kept going too: ETH's broken file skipped, the others published
    params = read_partition(tmp_path / "outputs" / "forecasts" / f"asof={as_of}")
    assert sorted(params["asset"]) == ["BTC", "SOL"]
    meta = read_manifest(tmp_path / "outputs" / "forecasts" / f"asof={as_of}")["metadata"]
    assert meta["fit_cutoff"] == as_of
    assert list(meta["skipped_files"]) == ["crypto/hourly/ETH.csv.gz"]


def test_serve_without_as_of_publishes_the_last_complete_day_and_logs_the_ignored_rows(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serving.market.utc_today", lambda: D30)  # 2025-06-30 still trading
    result = invoke(project, "serve", "--data-dir", "market", "--log-json",
                    env={"VOLMARGIN__PATHS__OUTPUTS_DIR": "out_default"})
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    ignored = [line["message"] for line in lines if line["level"] == "warning"]
    assert any(m.startswith("crypto/hourly/BTC.csv.gz: 24 row(s) from 2025-06-30") for m in ignored)
    assert any(m.startswith("crypto/daily/SOL.csv.gz: 1 row(s) from 2025-06-30") for m in ignored)
    assert lines[-1]["as_of"] == str(D29)
    assert (project / "out_default" / "forecasts" / f"asof={D29}").is_dir()


@pytest.mark.parametrize("command", ["run", "tail"])
def test_a_malformed_file_stops_run_and_tail_with_its_line_and_rule(
        tmp_path: Path, command: str) -> None:
    """Without --keep-going a bad row stops the job before any fit, as ``serve`` does: exit 1
    with the file, line and rule on the console, and the way to run the other assets."""
    root = write_slice(tmp_path / "market", ["BTC", "ETH"], "2024-01-01", "2024-03-31")
    daily = root / "crypto" / "daily" / "ETH.csv.gz"
    with gzip.open(daily, "rt") as fh:
        lines = fh.read().splitlines()
    fields = lines[10].split(",")  # line 11 of the file: 2024-01-10
    fields[2] = str(float(fields[3]) / 2)  # high below low
    lines[10] = ",".join(fields)
    with gzip.open(daily, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text(yaml.safe_dump(shrunken_config()))
    result = invoke(tmp_path, command, "--data-dir", "market", "--as-of", "2024-03-31")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "crypto/daily/ETH.csv.gz line 11: rule high_ge_low failed" in text
    assert "--keep-going skips only its asset" in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "outputs" / "forecasts").exists()

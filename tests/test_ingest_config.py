"""The ``ingest`` config section drives the client and the screen; it cannot enable plain HTTP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from configs.schema import ConfigError, IngestConfig, load_config
from features.loaders import load_daily
from pipelines.cli import app
from pipelines.ingest import IngestSettings
from pipelines.ingest.http import MIB
from pipelines.retrain import ALLOW_HTTP_LOOPBACK_ENV, ingest_settings_from_env
from tests.conftest import REPO
from tests.replay.harness import serving, small_market


def test_default_config_gives_the_documented_defaults() -> None:
    from_yaml = IngestSettings.from_config(load_config().ingest)
    assert from_yaml.retry == IngestSettings().retry  # yaml, schema and code agree
    assert from_yaml.plausibility == IngestSettings().plausibility
    assert from_yaml.retry.max_response_bytes == 50 * MIB
    assert from_yaml.retry.allow_http_loopback is False


def test_config_overrides_reach_the_client_and_the_screen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOLMARGIN__INGEST__MAX_RESPONSE_MB", "2")
    monkeypatch.setenv("VOLMARGIN__INGEST__PLAUSIBILITY__K_DAILY", "40")
    settings = IngestSettings.from_config(load_config().ingest)
    assert settings.retry.max_response_bytes == 2 * MIB
    assert settings.plausibility.k("daily") == 40.0


def test_plain_http_is_not_a_config_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="allow_http_loopback"):
        IngestConfig(allow_http_loopback=True)  # type: ignore[call-arg]
    monkeypatch.setenv("VOLMARGIN__INGEST__ALLOW_HTTP_LOOPBACK", "true")
    with pytest.raises(ConfigError, match="allow_http_loopback"):
        load_config()


def test_only_the_environment_opt_in_allows_loopback_http() -> None:
    env = {"VOLMARGIN_INGEST_BINANCE_URL": "http://127.0.0.1:8000"}
    assert ingest_settings_from_env(env).retry.allow_http_loopback is False
    opted = ingest_settings_from_env({**env, ALLOW_HTTP_LOOPBACK_ENV: "1"})
    assert opted.retry.allow_http_loopback and opted.endpoints.binance == env[
        "VOLMARGIN_INGEST_BINANCE_URL"]
    tight = ingest_settings_from_env(env, IngestConfig(deadline_s=30.0))
    assert tight.retry.deadline_s == 30.0


def test_volmargin_ingest_reads_the_config_and_exits_1_on_a_held_candle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = small_market(tmp_path / "market")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    with serving(monkeypatch) as api:
        monkeypatch.setenv("VOLMARGIN_INGEST_BINANCE_URL", api.url)
        monkeypatch.setenv(ALLOW_HTTP_LOOPBACK_ENV, "1")
        api.klines[("BTCUSDT", "1d")][3][2] = api.klines[("BTCUSDT", "1d")][3][4] = "1.2e12"
        args = ["ingest", "--data-dir", str(market), "--sources", "binance",
                "--until", "2025-07-06T12:00:00Z", "--log-json"]
        held = CliRunner().invoke(app, args)
        assert held.exit_code == 1, held.output
        lines = [json.loads(line) for line in held.output.strip().splitlines()]
        daily = next(line for line in lines if line.get("file") == "crypto/daily/BTC.csv.gz")
        assert (daily["status"], daily["held"], daily["appended"]) == ("held", 3, 2)
        # The config section reaches the command: a k above the candle's ratio accepts it.
        monkeypatch.setenv("VOLMARGIN__INGEST__PLAUSIBILITY__K_DAILY", "1000")
        accepted = CliRunner().invoke(app, args)
    assert accepted.exit_code == 0, accepted.output
    assert load_daily(market / "crypto/daily/BTC.csv.gz").loc["2025-07-03", "close"] == 1.2e12


def test_volmargin_ingest_without_a_fred_key_skips_fred_and_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is optional: without it, the default sources leave FRED out (said once)
    rather than failing every macro file and exiting 1 every day."""
    market = small_market(tmp_path / "market")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    with serving(monkeypatch) as api:
        monkeypatch.delenv("FRED_API_KEY", raising=False)  # the harness sets one
        monkeypatch.setenv("VOLMARGIN_INGEST_BINANCE_URL", api.url)
        monkeypatch.setenv("VOLMARGIN_INGEST_DERIBIT_URL", api.url)
        monkeypatch.setenv(ALLOW_HTTP_LOOPBACK_ENV, "1")
        result = CliRunner().invoke(app, ["ingest", "--data-dir", str(market), "--until",
                                          "2025-07-06T12:00:00Z", "--log-json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert any("fred skipped: FRED_API_KEY is not set" in line["message"] for line in lines)
    files = [line["file"] for line in lines if "file" in line]
    assert "crypto/daily/BTC.csv.gz" in files and not any(f.startswith("macro/") for f in files)


def test_ingest_settings_do_not_change_the_retrain_config_fingerprint() -> None:
    from pipelines.retrain import config_fingerprint

    base = load_config()
    assert config_fingerprint(base.with_overrides({"ingest.deadline_s": 30.0})) == \
        config_fingerprint(base)
    assert config_fingerprint(base.with_overrides({"backtest.refit_every": 30})) != \
        config_fingerprint(base)

"""``volmargin ui`` serves the project's MLflow store: the backtest runs with their metrics, the
registered policy and its @champion alias are reachable through the UI server's REST API, and
stopping the command by its pid stops the whole server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.conftest import REPO
from tests.project import champion_project


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def get(base: str, path: str, **query: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_ui_shows_backtest_runs_metrics_and_the_champion(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    root = champion_project(tmp_path_factory).root
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ui = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ui", "--port", str(port)],
                          cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while not answers(f"{base}/health"):
            assert ui.poll() is None, f"volmargin ui exited: {ui.communicate()[0]}"
            assert time.monotonic() < deadline, "the UI did not answer within 90 s"
            time.sleep(0.25)

        experiments = post(base, "/api/2.0/mlflow/experiments/search", {"max_results": 50})
        (exp_id,) = [e["experiment_id"] for e in experiments["experiments"]
                     if e["name"] == "volmargin"]
        found = post(base, "/api/2.0/mlflow/runs/search", {
            "experiment_ids": [exp_id], "filter": "tags.`volmargin.step` = 'backtest'"})
        runs = {r["info"]["run_name"]: r for r in found["runs"]}
        assert set(runs) == {"backtest", "garch11_t"}  # the step run and its nested model run
        metrics = {m["key"]: m["value"] for m in runs["garch11_t"]["data"]["metrics"]}
        assert metrics["forecast_rows"] > 0
        assert 0 < metrics["qlike_h1.mean"] < 5
        assert {"qlike_h1.BTC", "qlike_h1.SOL", "qlike_h7.mean"} <= set(metrics)
        policy = post(base, "/api/2.0/mlflow/runs/search", {
            "experiment_ids": [exp_id], "filter": "tags.`volmargin.step` = 'policy-backtest'"})
        assert len(policy["runs"]) == 1

        model = get(base, "/api/2.0/mlflow/registered-models/get", name="volmargin-policy")
        assert model["registered_model"]["name"] == "volmargin-policy"
        assert {a["alias"]: a["version"] for a in model["registered_model"]["aliases"]} == {
            "challenger": "1", "champion": "1"}
        champion = get(base, "/api/2.0/mlflow/registered-models/alias",
                       name="volmargin-policy", alias="champion")["model_version"]
        tags = {t["key"]: t["value"] for t in champion["tags"]}
        assert champion["version"] == "1" and tags["forecaster"] == "garch11_t"
        assert tags["gate.passed"] == "true"
    finally:
        ui.terminate()
        try:
            ui.wait(timeout=20)
        except subprocess.TimeoutExpired:
            ui.kill()
            ui.wait()
    assert ui.returncode == 0
    time.sleep(0.5)
    assert not answers(f"{base}/health")  # the server's own processes went with it


def test_ui_refuses_a_port_in_use_with_a_clear_message_and_a_non_zero_exit(tmp_path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("{}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "ui", "--port", str(port)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert f"cannot start the MLflow UI: 127.0.0.1:{port}" in text and "--port" in text

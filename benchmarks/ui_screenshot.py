"""What a reviewer sees in the MLflow UI: screenshots of the experiment and the registered model.

Starts ``volmargin ui`` on a free loopback port over this project's ``mlruns/`` (run
``make run`` first so there is something to see), waits until the REST API answers, then
renders two pages in headless Chromium and saves PNGs:

- ``experiment.png`` — the ``volmargin`` experiment, which opens on the training runs table
  (the experiment carries ``mlflow.experimentKind = custom_model_development``);
- ``registered_model.png`` — ``volmargin-policy`` with its versions and aliases.

Chromium is not a Python package: install Debian's ``chromium`` (``apt-get install chromium``)
or point ``--chromium`` at a binary. This is a manual check (``make ui-check``); the CI check
of the same pages is ``tests/test_ui.py``, which asks the REST API.

    python -m benchmarks.ui_screenshot [--out outputs/ui] [--port 5077]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from configs.schema import load_config

# The flags a locked-down machine needs: no sandbox as root, no GPU, and no background
# connections (they are refused here and slow every start).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--window-size=1600,1000", "--virtual-time-budget=15000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def wait_ready(base: str, deadline_s: float = 120.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        try:
            post(base, "/api/2.0/mlflow/experiments/search", {"max_results": 1})
            return
        except OSError:
            time.sleep(1.0)
    raise TimeoutError(f"MLflow UI at {base} did not answer within {deadline_s:.0f} s")


def screenshot(chromium: str, url: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=120)
    if not out.exists() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot for {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/ui"))
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args(argv)
    if shutil.which(args.chromium) is None:
        print("chromium not found: apt-get install chromium (or pass --chromium PATH)",
              file=sys.stderr)
        return 2
    cfg = load_config()
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    ui = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ui", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(base)
        found = post(base, "/api/2.0/mlflow/experiments/search", {"max_results": 50})
        ids = [e["experiment_id"] for e in found.get("experiments", [])
               if e["name"] == cfg.registry.experiment]
        if not ids:
            print(f"no experiment {cfg.registry.experiment!r}: run `make run` first",
                  file=sys.stderr)
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        pages = {"experiment.png": f"{base}/#/experiments/{ids[0]}?workflowType=machine_learning",
                 "registered_model.png": f"{base}/#/models/{cfg.registry.model_name}"}
        for name, url in pages.items():
            screenshot(args.chromium, url, args.out / name)
            print(f"{url} -> {args.out / name}")
    finally:
        ui.send_signal(signal.SIGINT)
        try:
            ui.wait(timeout=20)
        except subprocess.TimeoutExpired:
            ui.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

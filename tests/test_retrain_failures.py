"""volmargin retrain says what its run left out, and exits 4 like `run` ("completed with
failures"), so a scheduler's alert fires for a partial retrain too."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

from rich.console import Console

from configs.schema import Config
from pipelines import jobs
from pipelines.ops.logs import JobLog
from pipelines.retrain import RetrainResult


def _record(failures: list[str]) -> dict:
    return {"registered_version": "2", "promoted": False, "champion_version": "1",
            "selected": "har_rv", "data_fingerprint": "f" * 64, "gate_reason": "refused: x",
            "failures": failures}


def _job(monkeypatch, capsys, failures: list[str]) -> tuple[int, str]:
    def fake_retrain(cfg, as_of, **kwargs):
        return RetrainResult(as_of, _record(failures), Path("marker.json"), False, None,
                             "skipped by the test")

    monkeypatch.setattr("pipelines.retrain.retrain", fake_retrain)
    out = io.StringIO()
    log = JobLog("retrain", Console(file=out, width=200), json_lines=True, quiet=True)
    code = jobs.retrain_job(Config(), log, dt.date(2025, 6, 30), skip_ingest=True, force=False)
    return code, out.getvalue() + capsys.readouterr().out  # JSON lines go to stdout


def test_a_retrain_with_failures_lists_them_and_exits_4(monkeypatch, capsys):
    line = "forecast failed: egarch_t TRX h=1d (plausibility): 3 implausible forecasts"
    code, text = _job(monkeypatch, capsys, [line])
    assert code == jobs.EXIT_PARTIAL == 4
    assert '"level": "warning"' in text and "egarch_t TRX h=1d" in text


def test_a_clean_retrain_exits_0(monkeypatch, capsys):
    code, text = _job(monkeypatch, capsys, [])
    assert code == 0 and "forecast failed" not in text

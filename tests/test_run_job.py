"""``volmargin run`` says why it stops when the day is already published with other content
(a rerun after a change of code or data), instead of a traceback, and keeps what it did."""

from __future__ import annotations

from rich.console import Console

import pipelines.run
from configs.schema import Config
from pipelines.jobs import EXIT_FAILED, run_job
from serving.publish import PartitionExistsError


def test_a_rerun_onto_a_published_day_is_said_not_a_traceback(monkeypatch) -> None:
    def published(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PartitionExistsError("outputs/forecasts/asof=2025-06-30 is already published "
                                   "with different content")

    monkeypatch.setattr(pipelines.run, "run", published)
    console = Console(record=True, width=200)
    assert run_job(Config(), console, None, quiet=True, keep_going=False) == EXIT_FAILED
    said = console.export_text()
    assert "asof=2025-06-30 is already published with different content" in said
    assert "registered version are in MLflow" in said
    assert "Traceback" not in said

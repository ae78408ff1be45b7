"""``volmargin run`` says why it stops when the day is already published with other content
(a rerun after a change of code or data), instead of a traceback, and keeps what it did."""

from __future__ import annotations

import shutil

from rich.console import Console

import pipelines.run
from configs.schema import Config
from pipelines.jobs import EXIT_FAILED, run_job
from serving.publish import PartitionExistsError
from tests.conftest import REPO


def test_a_rerun_onto_a_published_day_is_said_not_a_traceback(monkeypatch,
                                                               isolated_config) -> None:
    def published(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PartitionExistsError("outputs/forecasts/asof=2025-06-30 is already published "
                                   "with different content")

    monkeypatch.setattr(pipelines.run, "run", published)
    console = Console(record=True, width=200)
    assert run_job(isolated_config, console, None, quiet=True,
                   keep_going=False) == EXIT_FAILED
    said = console.export_text()
    assert "asof=2025-06-30 is already published with different content" in said
    assert "registered version are in MLflow" in said
    assert "Traceback" not in said


def test_serve_names_the_skipped_files_even_when_stale_data_decides_the_exit(
        monkeypatch, tmp_path) -> None:
    """``serving.on_stale: fail`` returns 3 for the stale asset; the files skipped under
    ``--keep-going`` are still named in the log (they used to be named only after it)."""
    import datetime as dt
    from pathlib import Path

    import pandas as pd

    import serving.serve
    from pipelines.jobs import EXIT_STALE, serve_job
    from pipelines.ops.logs import JobLog
    from serving.publish import Published
    from serving.serve import ServeResult

    params = pd.DataFrame({"asset": ["BTC", "SOL"], "flag_stale": [False, True],
                           "flag_fallback": [False, True]})
    result = ServeResult(
        published=Published(Path(tmp_path / "asof=2025-06-30"), True,
                            {"as_of": "2025-06-30"}, 1),
        parameters=params, model_version="3",
        failures={"crypto/daily/ETH.csv.gz": "row 7: rule high_ge_low"})
    monkeypatch.setattr(serving.serve, "serve", lambda *a, **k: result)
    console = Console(record=True, width=300)
    cfg = Config().with_overrides({"serving.on_stale": "fail"})
    assert serve_job(cfg, JobLog("serve", console, quiet=True), dt.date(2025, 6, 30), None,
                     False, keep_going=True) == EXIT_STALE
    said = console.export_text()
    assert "skipped crypto/daily/ETH.csv.gz: row 7: rule high_ge_low" in said
    assert "stale data for SOL" in said


def test_a_run_whose_serve_finds_no_champion_says_so_not_a_traceback(
        monkeypatch, isolated_config) -> None:
    """E.g. a first version its gate refused, with ``registry.gate.promote_first`` off: the
    serve step has no champion; the run says so and exits 1, as ``volmargin serve`` would."""
    from serving.ops.registry import ChampionMissingError

    def no_champion(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ChampionMissingError("registered model 'volmargin-policy' has no @champion alias")

    monkeypatch.setattr(pipelines.run, "run", no_champion)
    console = Console(record=True, width=200)
    assert run_job(isolated_config, console, None, quiet=True,
                   keep_going=False) == EXIT_FAILED
    said = console.export_text()
    assert "has no @champion alias" in said and "nothing was published" in said


def test_tail_refuses_a_day_not_closed_yet_with_exit_2(tmp_path, monkeypatch) -> None:
    import datetime as dt

    from typer.testing import CliRunner

    from pipelines.cli import app

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    for day in ("today", tomorrow):
        result = CliRunner().invoke(app, ["tail", "--as-of", day])
        assert result.exit_code == 2, result.output
        assert "give a date before today" in " ".join(result.output.split())
    assert not (tmp_path / "mlruns").exists()  # refused before the store was opened


def test_a_malformed_stress_scenarios_override_exits_2(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "scenarios.yaml"
    bad.write_text("shock_move: 5\n")
    result = CliRunner().invoke(app, ["stress", "--as-of", "2025-06-30", "--scenarios",
                                      str(bad)])
    assert result.exit_code == 2, result.output
    assert "shock_move" in result.output


def test_run_exits_3_on_stale_assets_when_serving_says_fail(monkeypatch, tmp_path,
                                                            isolated_config) -> None:
    """``serving.on_stale: fail`` is the run's rule as the serve's: the run that published
    stale assets on their fail-safe parameters exits 3 (0 with the default ``warn``)."""
    from pathlib import Path

    import pandas as pd

    from pipelines.jobs import EXIT_STALE
    from pipelines.run import EXIT_STALE as RUN_EXIT_STALE
    from pipelines.run import RunResult
    from serving.publish import Published
    from serving.serve import ServeResult
    from tests.test_fault_isolation import _result_fields

    params = pd.DataFrame({"asset": ["BTC", "SOL"], "flag_stale": [False, True],
                           "flag_fallback": [False, True]})
    served = ServeResult(published=Published(Path(tmp_path / "asof=2025-06-30"), True,
                                             {"as_of": "2025-06-30"}, 1),
                         parameters=params, model_version="1")
    result = RunResult(**_result_fields(served=served))
    monkeypatch.setattr(pipelines.run, "run", lambda *a, **k: result)
    monkeypatch.setattr("pipelines.ops.console.print_run", lambda *a, **k: None)
    console = Console(record=True, width=300)
    fail = isolated_config.with_overrides({"serving.on_stale": "fail"})
    assert run_job(fail, console, None, quiet=True, keep_going=False) == EXIT_STALE == \
        RUN_EXIT_STALE
    assert "stale data for SOL" in console.export_text()
    assert run_job(isolated_config, Console(record=True), None, quiet=True,
                   keep_going=False) == 0


def test_a_run_whose_serve_is_refused_exits_as_serve_would(monkeypatch, tmp_path,
                                                           isolated_config) -> None:
    """The serve step's refusals inside the run: a serve-time override of a bundled value
    exits 2 (bad config); no model to serve exits 1 after the fail-safe partition, said."""
    from pathlib import Path

    from pipelines.jobs import EXIT_USAGE
    from serving.publish import Published
    from serving.serve import ModelUnavailableError, ServeConfigError

    def refused(error: Exception):
        def raising(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise error
        return raising

    monkeypatch.setattr(pipelines.run, "run", refused(ServeConfigError(
        "policy.confidence is decided by the served model's bundled config")))
    console = Console(record=True, width=300)
    assert run_job(isolated_config, console, None, quiet=True,
                   keep_going=False) == EXIT_USAGE == 2
    assert "decided by the served model's bundled config" in console.export_text()

    frozen = Published(Path(tmp_path / "asof=2025-06-30" / "rev=2"), True,
                       {"as_of": "2025-06-30"}, 2)
    monkeypatch.setattr(pipelines.run, "run", refused(ModelUnavailableError(
        "the stored model of version 3 changed since registration", frozen)))
    console = Console(record=True, width=300)
    assert run_job(isolated_config, console, None, quiet=True,
                   keep_going=False) == EXIT_FAILED
    said = " ".join(console.export_text().split())
    assert "the stored model of version 3 changed since registration; fail-safe: published " \
           "revision 2" in said and "every asset frozen" in said

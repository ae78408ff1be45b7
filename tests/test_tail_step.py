"""The tail step on a real slice: nested MLflow runs per tail model, tables on disk."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from features.build import build_panel
from features.loaders import load_market
from pipelines.tail_step import headline, step_tail
from serving.ops.tracking import setup
from tests.conftest import MARKET


def test_tail_step_logs_a_nested_run_per_model_and_writes_its_tables(isolated_config):
    cfg = isolated_config.with_overrides({
        "tail.enabled": ["fhs_ewma", "evt_garch"], "tail.refit_every": 182,
        "tail.in_run": True,  # configured, but this is `volmargin tail`: it registers nothing
        "evaluation.selection_start": "2023-01-01", "evaluation.selection_end": "2023-12-31",
        "evaluation.evaluation_start": "2024-01-01", "evaluation.evaluation_end": "2025-06-30",
    })
    market = load_market(MARKET, ["BTC", "ETH"], dt.date(2025, 6, 30))
    panel = build_panel(market, cfg.features)
    panel = panel[panel.index.get_level_values("date") >= "2021-06-01"]
    setup(cfg)
    earlier = Path(cfg.paths.outputs_dir) / "tail" / "policy_as_safe_of_an_earlier_step.csv"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("x\n")
    step = step_tail(cfg, panel)

    assert not earlier.exists()  # the step's outputs are its own
    assert set(step.forecasts["model"]) == {"fhs_ewma", "evt_garch"}
    for name in ("fz0_selection", "fz0_evaluation", "dm", "backtests", "choice"):
        assert (step.out_dir / f"{name}.csv").is_file()
    frozen = json.loads((step.out_dir / "policy_frozen.json").read_text())
    assert frozen["one_choice"] is False and step.policy is not None
    table = headline(step.tables)
    assert list(table["model"]) == sorted(table["model"], key=dict(
        zip(table["model"], table["fz0"], strict=True)).get)  # best (lowest FZ0) first
    assert (table["assets"] == 2).all() and np.isfinite(table["fz0"]).all()

    runs = mlflow.search_runs(filter_string="tags.`volmargin.step` = 'tail-backtest'")
    nested = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert sorted(nested["tags.model"]) == ["evt_garch", "fhs_ewma"]
    assert nested["metrics.fz0_long_0.99"].notna().all()
    assert (nested["metrics.assets_99_long"] == 2).all()


def test_failure_lines_list_models_statistics_and_files_with_a_cap():
    import pandas as pd

    from pipelines.evaluation.tail_compare import FAILURE_COLUMNS, failure
    from pipelines.tail_step import TailStep, failure_lines

    rows = [failure("walk-forward", "caviar", "LinAlgError: singular design")]
    rows += [failure("backtest dq", "fhs_ewma", "ValueError: too few rows", "long", f"A{i}")
             for i in range(5)]
    step = TailStep(pd.DataFrame(), {"failures": pd.DataFrame(rows, columns=FAILURE_COLUMNS)},
                    MARKET)
    lines = failure_lines(step, {"crypto/daily/X.csv": "bad row"}, most=3)
    assert lines[0] == "tail model failed: caviar: LinAlgError: singular design"
    assert lines[1] == ("statistic undefined: backtest dq fhs_ewma long A0: "
                        "ValueError: too few rows")
    assert lines[4] == "... and 2 more (outputs/tail/failures.csv)"
    assert lines[5] == "skipped file crypto/daily/X.csv: bad row" and len(lines) == 6
    empty = TailStep(pd.DataFrame(), {"failures": pd.DataFrame(columns=FAILURE_COLUMNS)},
                     MARKET)
    assert failure_lines(empty) == []


def test_a_young_assets_undefined_tail_statistics_are_not_judged_not_failures():
    """The DQ test undefined on 3 scored days (an asset listed weeks ago) is one "not
    judged" line and no failure; undefined on 400 days it is a failure."""
    import pandas as pd

    from pipelines.evaluation.tail_compare import FAILURE_COLUMNS, failure
    from pipelines.tail_step import TailStep, failure_lines, not_judged_lines

    why = "ValueError: the DQ test needs more rows than regressors; got 3 rows for 4 lags"
    rows = [failure("backtest dq", m, why, side, "NEW", 3)
            for m in ("fhs_ewma", "tail_nn") for side in ("long", "short")]
    rows.append(failure("backtest z2", "caviar", "ValueError: no breach", "long", "OLD", 400))
    rows.append(failure("mcs", "", "ValueError: singular", "long"))  # pooled: no days
    step = TailStep(pd.DataFrame(), {"failures": pd.DataFrame(rows, columns=FAILURE_COLUMNS)},
                    MARKET)
    assert not_judged_lines(step) == [
        "not judged: NEW: tail scored on 3 days (< 250); 4 statistics not computable yet "
        "(backtest dq)"]
    assert failure_lines(step) == [
        "statistic undefined: backtest z2 caviar long OLD: ValueError: no breach",
        "statistic undefined: mcs long: ValueError: singular"]


def test_a_dm_on_a_short_evaluation_period_is_not_judged_not_a_failure():
    """``volmargin tail --as-of`` weeks into the evaluation period: the pooled DM on 20 days
    is not computable yet (a "not judged" line), not a failure that changes the exit."""
    import numpy as np
    import pandas as pd

    from pipelines.evaluation import tail_compare as tc
    from pipelines.tail_step import TailStep, failure_lines, not_judged_lines

    days = pd.date_range("2024-01-01", periods=20)
    rng = np.random.default_rng(1)
    scores = pd.concat([pd.DataFrame({"model": m, "asset": "A", "cutoff": days, "side": "long",
                                      "level": 0.99, "fz0": rng.normal(-2, 0.1, 20)})
                        for m in ("evt_garch", "tail_nn")], ignore_index=True)
    failures: list[dict] = []
    assert tc.dm_table(scores, ["evt_garch"], failures=failures).empty
    assert failures == [tc.failure("dm vs evt_garch", "tail_nn",
                                   "20 days < 30: too few to test", "long", days=20)]
    step = TailStep(pd.DataFrame(),
                    {"failures": pd.DataFrame(failures, columns=tc.FAILURE_COLUMNS)}, MARKET)
    assert failure_lines(step) == []
    assert not_judged_lines(step) == [
        "not judged: pooled over assets: tail scored on 20 days (< 250); 1 statistics not "
        "computable yet (dm vs evt_garch)"]


def test_the_tail_step_compares_only_the_frozen_policy_of_a_run_on_its_panel_and_settings(
        tmp_path):
    """``outputs/backtest/frozen.json`` left by an earlier run on other data or settings (or
    written before it recorded them) is not the reference of the tail-driven policies: it is
    said, not compared; the run's own, on the same panel and settings, is."""
    import pandas as pd

    from configs.schema import Config
    from pipelines.policy_eval.pipeline import run_identity
    from pipelines.tail_policy import frozen_variance_policy

    cfg = Config()
    bt = tmp_path / "backtest"
    bt.mkdir()
    name = "policy:ewma94@confidence=0.99"
    pd.DataFrame({"policy": [name, "other"], "asset": "BTC",
                  "date": pd.Timestamp("2024-01-01"), "mmf": 0.1}).to_parquet(
        bt / "policy_paths.parquet")
    mine = run_identity(cfg, "f" * 64)

    def frozen(**record: object) -> None:
        (bt / "frozen.json").write_text(json.dumps({"policy": name, **record}))

    frozen(**mine)
    notes: list[str] = []
    same = frozen_variance_policy(tmp_path, mine, notes)
    assert list(same) == [name] and len(same[name]) == 1 and notes == []
    others = [{"policy.confidence": 0.99}, {"selection.rule": "forecast"},
              {"models.enabled": ["ewma94"]}, {"evaluation.selection_end": "2023-03-31"},
              {"backtest.refit_every": 30}, {"backtest.min_train_days": 200}]
    for record in (run_identity(cfg, "e" * 64),  # another panel
                   *(run_identity(cfg.with_overrides(o), "f" * 64) for o in others),
                   {}):  # recorded before the identity was
        frozen(**record)
        assert frozen_variance_policy(tmp_path, mine, notes) == {}, record
        assert "is of another run" in notes[-1]
    assert len(notes) == 2 + len(others)
    # settings the choice does not read (where files go and where it runs, the registry, the
    # stress test, the tail step's own) do not count
    other = cfg.with_overrides({"paths.outputs_dir": "elsewhere", "tail.refit_every": 30,
                                "backtest.n_jobs": 4, "backtest.dask_workers": 3,
                                "backtest.chunk_assets": 7,
                                "registry.model_name": "another", "stress.mc_paths": 500})
    frozen(**mine)
    assert list(frozen_variance_policy(tmp_path, run_identity(other, "f" * 64))) == [name]


def test_the_tail_command_fingerprints_the_panel_as_the_run_does(tmp_path, monkeypatch):
    """`volmargin tail` after `volmargin run` on the same data and as-of builds the same panel
    under the same fingerprint, so the run's frozen policy is recognised as of it (the tail
    command had hashed its as-of into the fingerprint and the run had not: every tail step
    after a run said "of another run")."""
    import pipelines.tail_step as tail_module
    from configs.schema import Config
    from pipelines.steps import step_features
    from serving.market import load_as_of
    from tests.conftest import write_slice

    market_dir = write_slice(tmp_path / "market", ["BTC", "SOL"], "2024-01-01", "2025-06-30")
    cfg = Config().with_overrides({"paths.data_dir": str(market_dir),
                                   "paths.outputs_dir": str(tmp_path / "outputs"),
                                   "paths.mlruns_dir": str(tmp_path / "mlruns")})
    seen: list[str | None] = []

    class StoppedError(Exception):
        pass

    def captured(*args, fingerprint=None, **kwargs):
        seen.append(fingerprint)
        raise StoppedError

    monkeypatch.setattr(tail_module, "step_tail", captured)
    as_of = dt.date(2025, 6, 30)
    with pytest.raises(StoppedError):
        tail_module.tail_job(cfg, as_of, say=lambda line: None)
    setup(cfg)
    _, run_fp, _ = step_features(cfg, load_as_of(cfg.paths.data_dir, None, as_of).market)
    assert seen == [run_fp]

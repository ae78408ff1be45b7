"""The stress job end to end on a slice of the real data and a published partition: outputs
beside (never inside) the parameters, valid against docs/schema, idempotent; bad input
publishes nothing."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import pipelines.stress.job as stress_job
from configs.schema import Config, ConfigError, GateConfig
from features.build import build_panel
from features.loaders import load_market
from features.schema import feature_view
from models.registry import build_forecaster
from pipelines.selection.gate import gate
from pipelines.stress import contract
from pipelines.stress.book import BOOK_COLUMNS, BookValidationError
from pipelines.stress.gate import challenger_stress, stress_gate_refusal, stress_refusal
from pipelines.stress.job import print_stress, run_stress, stress_parameters, stress_published
from pipelines.stress.publish import STRESS_DIR, read_stress
from pipelines.stress.scenarios import ewma_sigma_after
from serving.publish import PARAMETERS_SCHEMA, publish_partition
from tests.conftest import write_slice

AS_OF = dt.date(2022, 11, 30)
SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schema"
_REF = {"path": f"asof={AS_OF}", "revision": 1, "success_sha256": "0" * 64}  # not published


def _parameters(as_of: dt.date, extra: tuple[tuple[str, float, float, float], ...] = ()
                ) -> pd.DataFrame:
    rows = []
    for asset, sigma, mmf, lb in (("BTC", 0.03, 0.10, 1.04), ("ETH", 0.04, 0.13, 1.05),
                                  *extra):
        imf = mmf * 1.25
        rows.append({"as_of": as_of, "asset": asset, "horizon_days": 1, "sigma_1d": sigma,
                     "variance_1d": sigma**2, "loss_var": mmf * 0.8, "loss_es": mmf * 0.9,
                     "liquidity_addon": 0.002, "mmf": mmf, "imf": imf, "lt": (1 - mmf) / lb,
                     "ltv": (1 - imf) / lb, "lb": lb, "max_leverage": 1 / imf,
                     "flag_fallback": False, "flag_stale": False, "flag_clamped": False,
                     "flag_proxy": False, "flag_young": False, "flag_held": False,
                     "reason": "",
                     "model_name": "ewma94", "policy_version": "1"})
    frame = pd.DataFrame(rows)
    for name in PARAMETERS_SCHEMA.names:  # lineage and previous values: null
        if name not in frame:
            frame[name] = pd.Series([None] * len(frame), dtype=object)
    return frame[PARAMETERS_SCHEMA.names]


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real BTC/ETH daily and hourly rows, written once; they run past the as-of."""
    return write_slice(tmp_path_factory.mktemp("stress") / "data", ["BTC", "ETH"],
                       "2021-06-01", "2022-12-31", macro=())


@pytest.fixture
def project(tmp_path: Path, market_dir: Path) -> tuple[Config, Path]:
    data = market_dir
    cfg = Config().with_overrides({
        "paths.data_dir": str(data), "paths.outputs_dir": str(tmp_path / "outputs"),
        "paths.mlruns_dir": str(tmp_path / "mlruns"),
        "stress.episodes": [{"name": "luna_ust", "start": "2022-05-09", "end": "2022-05-12"},
                            {"name": "ftx", "start": "2022-11-08", "end": "2022-11-10"},
                            {"name": "future", "start": "2022-12-05", "end": "2022-12-05"}],
        "stress.mc_paths": 400, "stress.book.accounts": 300})
    root = tmp_path / "outputs" / "forecasts"
    publish_partition(_parameters(AS_OF), root, AS_OF, {"test": True})
    return cfg, root


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*")
            if p.is_file()}


def test_stress_is_published_beside_the_parameters(project: tuple[Config, Path]) -> None:
    cfg, root = project
    before = _tree(root / f"asof={AS_OF}")
    result = run_stress(cfg, AS_OF, track=False)
    assert result.created and result.path == root / STRESS_DIR / f"asof={AS_OF}" / "rev=1"
    assert _tree(root / f"asof={AS_OF}") == before  # the immutable partition is untouched
    table, doc, manifest = read_stress(result.path)
    assert manifest["parameters"]["path"] == f"asof={AS_OF}"
    assert manifest["files"]["stress.parquet"]["rows"] == table.num_rows
    names = [s["scenario"] for s in doc["scenarios"]]
    # the 2022-12-05 episode is after the as-of: strict cut, not replayed
    assert names[:4] == ["luna_ust", "luna_ust_filtered", "ftx", "ftx_filtered"]
    assert "future" not in names and names[-1] == "fhs_joint"
    jsonschema.validate(doc, contract.summary_schema())
    row_schema = contract.stress_row_schema()
    for row in json.loads(table.to_pandas().to_json(orient="records", date_format="iso")):
        row["as_of"] = row["as_of"][:10]
        jsonschema.validate(row, row_schema)
    frame = table.to_pandas()
    total = frame[frame["asset"] == "ALL"].set_index("scenario")
    per_asset = frame[frame["asset"] != "ALL"].groupby("scenario")["bad_debt_usd"].sum()
    assert per_asset.reindex(total.index).to_numpy() == pytest.approx(
        total["bad_debt_usd"].to_numpy())
    assert total.loc["BTC_drop30_corr1", "accounts_liquidated"] > 0
    luna = frame[(frame["scenario"] == "luna_ust") & (frame["asset"] != "ALL")]
    assert set(luna["source"]) == {"hourly"} and (luna["worst_move"] < -0.15).all()
    mc = doc["monte_carlo"]
    assert mc["paths"] == 400 and mc["bad_debt_es99"] >= mc["bad_debt_var99"] >= 0

    again = run_stress(cfg, AS_OF, track=False)
    assert not again.created and again.path == result.path  # identical rerun: no-op


def test_bad_book_raises_and_publishes_nothing(project: tuple[Config, Path],
                                               tmp_path: Path) -> None:
    cfg, root = project
    book = tmp_path / "book.csv"
    pd.DataFrame([("a", "BTC", 1.0, "USDC", 10_000.0, 0.5),
                  ("b", "DOGE", 10.0, "USDC", 5.0, 0.1)], columns=BOOK_COLUMNS).to_csv(
        book, index=False)
    with pytest.raises(BookValidationError, match=r"book.csv, row 3: rule unknown_asset"):
        run_stress(cfg, AS_OF, book_path=book, track=False)
    assert not (root / STRESS_DIR).exists()


def test_real_book_figures_and_missing_partition(project: tuple[Config, Path],
                                                 tmp_path: Path) -> None:
    cfg, root = project
    book = tmp_path / "book.csv"
    pd.DataFrame([("a", "BTC", 1.0, "USDC", 10_000.0, 0.5),
                  ("b", "ETH", 10.0, "DAI", 5_000.0, 0.4)], columns=BOOK_COLUMNS).to_csv(
        book, index=False)
    result = run_stress(cfg, AS_OF, book_path=book, publish=False, track=False)
    assert result.path is None and not (root / STRESS_DIR).exists()
    book_info = dict(result.summary["book"])
    assert book_info.pop("frozen_sizing") == []  # positions of a real book are given
    assert book_info == pytest.approx(
        {"source": "book.csv", "accounts": 2, "debt_usd": 15_000.0, "unhealthy_at_start": 0,
         "collateral_usd": result.summary["book"]["collateral_usd"]})
    with pytest.raises(FileNotFoundError, match="no published parameters for 2022-11-29"):
        run_stress(cfg, dt.date(2022, 11, 29), track=False)


def test_checked_in_schemas_match_the_code() -> None:
    for name, schema in contract.contract_files().items():
        assert (SCHEMAS / name).read_text() == contract.render(schema), (
            f"regenerate docs/schema/{name}: python -m pipelines.stress.contract docs/schema")


def test_gate_refuses_a_challenger_over_the_stress_budget(project: tuple[Config, Path]) -> None:
    cfg, _ = project
    assert stress_refusal({"worst_standard_bad_debt_share": 0.5}, None) is None
    assert stress_refusal({"worst_standard_bad_debt_share": 0.01,
                           "worst_standard": "x"}, 0.02) is None
    # a market-wide shock that could not be built refuses; an unusable asset's collapse not
    skipped = [{"scenario": "BTC_drop30_beta", "kind": "hypothetical", "reason": "BTC stale"},
               {"scenario": "MATIC_collapse", "kind": "hypothetical", "reason": "unusable"}]
    refused = stress_refusal({"worst_standard_bad_debt_share": 0.01, "worst_standard": "x",
                              "skipped_scenarios": skipped}, 0.02)
    assert refused == ("stress cannot judge the challenger: BTC_drop30_beta skipped "
                       "(BTC stale)")
    assert stress_refusal({"worst_standard_bad_debt_share": 0.01, "worst_standard": "x",
                           "skipped_scenarios": skipped[1:]}, 0.02) is None
    assert stress_refusal({"skipped_scenarios": skipped}, None) is None  # no budget
    # a single asset's collapse is judged apart, against its own budget
    doc = {"worst_standard_bad_debt_share": 0.01, "worst_standard": "x",
           "worst_collapse_bad_debt_share": 0.3, "worst_collapse": "BTC_collapse"}
    assert stress_refusal(doc, 0.02) is None
    assert stress_refusal(doc, 0.02, 0.25) == (
        "collapse bad debt 30.000% of the book's debt in BTC_collapse > budget 25.000%")
    assert stress_refusal(doc, None, 0.5) is None
    # the collapse budget alone is enough to stress a challenger (no market-wide budget)
    only_collapse = cfg.with_overrides({"stress.max_collapse_bad_debt_share": 0.001})
    said = challenger_stress(only_collapse, _parameters(AS_OF), AS_OF)
    assert said is not None and said.startswith("collapse bad debt")
    # a loose challenger (LT 0.97, LB 1.01: a 2% cushion) on the standard scenarios
    loose = _parameters(AS_OF).assign(lt=0.97, ltv=0.95, lb=1.01)
    strict = cfg.with_overrides({"stress.max_bad_debt_share": 0.001})
    reason = challenger_stress(strict, loose, AS_OF)
    assert reason is not None and "> budget 0.100%" in reason
    assert challenger_stress(cfg, loose, AS_OF) is None  # no budget configured: no condition
    rows = pd.DataFrame({"asset": ["BTC", "ETH"], "acceptable": [True, True],
                         "red_windows": [0, 0], "capital": [0.1, 0.12]})
    decision = gate(rows, None, GateConfig(), stress_refusal=reason)
    assert not decision.passed and reason in decision.reason
    assert gate(rows, None, GateConfig()).passed


def test_stress_after_run_is_local_and_configurable(project: tuple[Config, Path],
                                                   caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, root = project
    off = cfg.with_overrides({"stress.after_run": False})
    assert stress_published(off, AS_OF) is None and not (root / STRESS_DIR).exists()
    with caplog.at_level("WARNING"):
        assert stress_published(cfg, dt.date(2022, 11, 1)) is None  # nothing published then
    assert "stress of 2022-11-01 skipped" in caplog.text

    def broken_store(*args: object) -> None:
        raise OSError("No space left on device")

    # published already: an error that is neither the data's nor the book's (MLflow, disk)
    # is the stress's own as well, logged and skipped, never the run's
    monkeypatch.setattr(stress_job, "run_stress", broken_store)
    skipped: list[str] = []
    with caplog.at_level("WARNING"):
        assert stress_published(cfg, AS_OF, skipped) is None
    assert f"stress of {AS_OF} skipped: OSError: No space left on device" in caplog.text
    # and said to the run, which lists it among its failures (pipelines.run.RunResult)
    assert skipped == [f"stress of {AS_OF} skipped: OSError: No space left on device"]


def test_scenario_file_overrides_the_stress_section(project: tuple[Config, Path],
                                                    tmp_path: Path) -> None:
    cfg, _ = project
    good = tmp_path / "scenarios.yaml"
    good.write_text("episodes: [{name: ftx_only, start: '2022-11-08', end: '2022-11-09'}]\n"
                    "shock_move: -0.5\ncollapse_assets: [ETH]\nmc_paths: 200\n")
    result = run_stress(cfg, AS_OF, scenarios_path=good, publish=False, track=False)
    names = [s["scenario"] for s in result.summary["scenarios"]]
    assert names == ["ftx_only", "ftx_only_filtered", "BTC_drop50_beta", "BTC_drop50_corr1",
                     "vol_x3", "ETH_collapse", "fhs_joint"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("shock_mvoe: -0.5\n")
    with pytest.raises(ConfigError, match=r"scenario file .*bad\.yaml:\n  stress\.shock_mvoe"):
        run_stress(cfg, AS_OF, scenarios_path=bad, publish=False, track=False)


def test_as_of_cut_is_strict(project: tuple[Config, Path], tmp_path: Path) -> None:
    """Data after the as-of (here December 2022) changes nothing: same table as a data
    directory that ends on the as-of."""
    cfg, _ = project
    cut = write_slice(tmp_path / "cut", ["BTC", "ETH"], "2021-06-01", str(AS_OF), macro=())
    params = _parameters(AS_OF)
    full = stress_parameters(cfg, params, AS_OF).table
    ended = stress_parameters(cfg.with_overrides({"paths.data_dir": str(cut)}), params,
                              AS_OF).table
    assert full.equals(ended)


@pytest.mark.slow
def test_mlflow_run_holds_the_tables_and_plots(project: tuple[Config, Path]) -> None:
    import mlflow

    cfg, _ = project
    result = run_stress(cfg, AS_OF, publish=False)
    run = mlflow.search_runs(experiment_names=[cfg.registry.experiment],
                             filter_string="tags.`volmargin.step` = 'stress'")
    assert len(run) == 1
    row = run.iloc[0]
    assert row["metrics.bad_debt_usd.BTC_drop30_corr1"] == pytest.approx(
        next(s["bad_debt_usd"] for s in result.summary["scenarios"]
             if s["scenario"] == "BTC_drop30_corr1"))
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(row["run_id"], "stress")}
    assert {"stress/stress.csv", "stress/stress_summary.json", "stress/worst_cascade.png",
            "stress/bad_debt_distribution.png"} <= files


def test_registration_hook_stresses_the_challenger_as_serving_would(
        project: tuple[Config, Path]) -> None:
    cfg, _ = project
    market = load_market(cfg.paths.data_dir, ["BTC", "ETH"], as_of=AS_OF)
    features = feature_view(build_panel(market, cfg.features))
    model = build_forecaster("ewma94", cfg.models, [1]).fit(features)
    bundle = {"config": cfg.resolved(), "forecasts": {}, "fit_cutoff": AS_OF.isoformat()}
    assert stress_gate_refusal(cfg, model, bundle, features) is None  # no budget: off
    strict = cfg.with_overrides({"stress.max_bad_debt_share": 0.0})
    reason = stress_gate_refusal(strict, model, bundle, features)
    assert reason is not None and reason.startswith("stress bad debt")
    assert "> budget 0.000%" in reason


def test_unhealthy_accounts_and_complete_episodes_are_reported(project: tuple[Config, Path],
                                                               tmp_path: Path) -> None:
    cfg, _ = project
    book = tmp_path / "book.csv"
    # 'deep' owes more than LT × its collateral today: below HF 1 before any scenario
    pd.DataFrame([("ok", "BTC", 1.0, "USDC", 5_000.0, 0.3),
                  ("deep", "ETH", 1.0, "USDC", 5_000.0, None)], columns=BOOK_COLUMNS).to_csv(
        book, index=False)
    result = run_stress(cfg, AS_OF, book_path=book, publish=False, track=False)
    doc = result.summary
    assert doc["book"]["unhealthy_at_start"] == 1
    calm = next(s for s in doc["scenarios"] if s["scenario"] == "ETH_collapse")
    assert calm["accounts_liquidated"] >= 1
    assert doc["worst_historical_complete"] in {"luna_ust", "luna_ust_filtered", "ftx",
                                                "ftx_filtered"}
    jsonschema.validate(doc, contract.summary_schema())


def _with_newe(tmp_path: Path, market_dir: Path, **overrides: object) -> tuple[Config, Path]:
    """BTC/ETH and NEWE, ETH's real rows from 2022-08-01 under a new name (listed 121 days
    before the as-of, after LUNA), with ``overrides`` and LUNA as the one listed episode."""
    data = tmp_path / "data"
    shutil.copytree(market_dir, data)
    eth = pd.read_csv(market_dir / "crypto" / "daily" / "ETH.csv.gz", dtype={"timestamp": str})
    with gzip.open(data / "crypto" / "daily" / "NEWE.csv.gz", "wt") as fh:
        eth[eth["timestamp"].str.slice(0, 10) >= "2022-08-01"].to_csv(fh, index=False)
    cfg = Config().with_overrides({
        "paths.data_dir": str(data), "paths.outputs_dir": str(tmp_path / "outputs"),
        "paths.mlruns_dir": str(tmp_path / "mlruns"), "stress.book.accounts": 300,
        "stress.episodes": [{"name": "luna_ust", "start": "2022-05-09", "end": "2022-05-12"}],
        **overrides})
    return cfg, data


def test_an_asset_listed_months_ago_is_stressed_through_its_proxy(
        tmp_path: Path, market_dir: Path) -> None:
    """A collateral listed 121 days before the as-of (ETH's real rows under a new name) left
    the joint Monte Carlo fewer than a year of complete cross-sections, which cancelled the
    whole stress of the day; now it moves with its proxy, found by correlation."""
    cfg, data = _with_newe(tmp_path, market_dir, **{"stress.mc_paths": 400,
                                                     "stress.t_copula_dof": 4.0})
    publish_partition(_parameters(AS_OF, (("NEWE", 0.06, 0.2, 1.06),)),
                      tmp_path / "outputs" / "forecasts", AS_OF, {"test": True})
    result = run_stress(cfg, AS_OF, publish=False, track=False)
    scn = {s.name: s for s in result.scenarios}
    for name, own in (("fhs_joint", "fhs"), ("t_copula", "t_copula")):
        mc = scn[name]
        assert mc.source == {"BTC": own, "ETH": own, "NEWE": "proxy:ETH"}, name
        assert "NEWE by ETH" in mc.note
        x = np.log(mc.relative)
        k = mc.assets.index
        # the proxy's standardized moves at the new asset's own EWMA σ (ETH's returns under
        # a new name since 2022-08: nearly ETH's σ by the as-of, the start of its recursion
        # weighing 0.94^121 ≈ 6e-4; the published σ, 0.06 against 0.04, scales nothing)
        sigma = {a: ewma_sigma_after(load_market(data, [a], as_of=AS_OF).daily[a]["close"],
                                     cfg.stress.ewma_decay, AS_OF) for a in ("ETH", "NEWE")}
        assert sigma["NEWE"] == pytest.approx(sigma["ETH"], rel=1e-3)
        assert np.allclose(x[..., k("NEWE")] / sigma["NEWE"], x[..., k("ETH")] / sigma["ETH"])
    doc = result.summary
    assert doc["monte_carlo"]["paths"] == 400 and doc["t_copula"]["paths"] == 400
    # the episode before its listing still excludes its holders, counted, as before
    luna = next(s for s in doc["scenarios"] if s["scenario"] == "luna_ust")
    assert luna["missing_assets"] == ["NEWE"] and luna["excluded_accounts"] > 0
    jsonschema.validate(doc, contract.summary_schema())


def _ftx_project(tmp_path: Path, start: str, **overrides: object) -> Config:
    """BTC and ETH from ``start`` to 2022-12-31, the FTX episode, a small book and Monte
    Carlo, and the as-of's parameters published: a stress run's smallest project."""
    data = write_slice(tmp_path / "data", ["BTC", "ETH"], start, "2022-12-31", macro=())
    cfg = Config().with_overrides({
        "paths.data_dir": str(data), "paths.outputs_dir": str(tmp_path / "outputs"),
        "paths.mlruns_dir": str(tmp_path / "mlruns"), "stress.mc_paths": 400,
        "stress.book.accounts": 300,
        "stress.episodes": [{"name": "ftx", "start": "2022-11-08", "end": "2022-11-10"}],
        **overrides})
    publish_partition(_parameters(AS_OF), tmp_path / "outputs" / "forecasts", AS_OF,
                      {"test": True})
    return cfg


def test_without_a_year_of_returns_the_monte_carlo_is_skipped_not_the_stress(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _ftx_project(tmp_path, "2022-06-01")
    with caplog.at_level("WARNING"):
        result = run_stress(cfg, AS_OF, publish=False, track=False)
    names = [s["scenario"] for s in result.summary["scenarios"]]
    assert names[:2] == ["ftx", "ftx_filtered"] and "BTC_drop30_beta" in names
    assert "fhs_joint" not in names and result.summary["monte_carlo"] is None
    skipped = result.summary["skipped_scenarios"]  # said in the outputs, not only the log
    assert [(s["scenario"], s["kind"]) for s in skipped] == [("fhs_joint", "monte_carlo")]
    assert "none has them" in skipped[0]["reason"]
    assert "Monte Carlo scenario fhs_joint skipped" in caplog.text
    assert "none has them" in caplog.text
    jsonschema.validate(result.summary, contract.summary_schema())


def test_a_t_copula_that_cannot_be_drawn_leaves_the_joint_fhs_standing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _ftx_project(tmp_path, "2021-06-01", **{"stress.t_copula_dof": 4.0})

    def singular(*args: object) -> None:
        raise ValueError("correlation matrix is singular")

    monkeypatch.setattr(stress_job, "t_copula", singular)
    result = run_stress(cfg, AS_OF, publish=False, track=False)
    names = [s["scenario"] for s in result.summary["scenarios"]]
    assert "fhs_joint" in names and "t_copula" not in names
    assert result.summary["monte_carlo"]["paths"] == 400
    skipped = result.summary["skipped_scenarios"]
    assert [(s["scenario"], s["kind"]) for s in skipped] == [("t_copula", "monte_carlo")]
    assert skipped[0]["reason"] == "correlation matrix is singular"
    jsonschema.validate(result.summary, contract.summary_schema())


def test_a_stale_shock_asset_skips_its_shocks_and_loses_no_bad_debt(
        project: tuple[Config, Path]) -> None:
    """BTC (the shock asset) stale: its σ used to become 0 before the scenarios were built,
    so the correlation-one shock moved every other asset by −∞ (a price of 0) and the bad
    debt of worthless collateral vanished from the totals. Now its shocks are skipped with
    the reason, and every scenario's bad debt is the same summed over assets or accounts."""
    cfg, _ = project
    params = _parameters(AS_OF)
    params.loc[params["asset"] == "BTC", "flag_stale"] = True
    result = stress_parameters(cfg.with_overrides({"stress.book.accounts": 2_000}), params,
                               AS_OF, parameters_ref=_REF)
    doc = result.summary
    assert not [s for s in doc["scenarios"] if s["scenario"].startswith("BTC_drop30")]
    skipped = {s["scenario"]: s for s in doc["skipped_scenarios"]}
    assert set(skipped) == {"BTC_drop30_beta", "BTC_drop30_corr1", "BTC_collapse"}
    assert "shock asset BTC is unusable" in skipped["BTC_drop30_corr1"]["reason"]
    for name, out in result.outcomes.items():
        assert out.bad_debt_by_asset.sum() == pytest.approx(out.account_bad_debt.sum()), name
    frame = result.table.to_pandas()
    missing = frame[frame["source"] == "missing"]
    assert set(missing["asset"]) == {"BTC"} and missing["worst_move"].isna().all()
    jsonschema.validate(doc, contract.summary_schema())
    console = Console(record=True, width=200)
    print_stress(result, console)
    assert "Skipped BTC_drop30_corr1: shock asset BTC is unusable" in console.export_text()


def test_excluded_debt_and_the_share_of_the_evaluated_debt_are_published(
        project: tuple[Config, Path], tmp_path: Path) -> None:
    """BTC stale: the two accounts holding it are excluded in every scenario; their debt is
    published and the bad debt is also shared on the 5,000 USD actually evaluated."""
    cfg, _ = project
    params = _parameters(AS_OF)
    params.loc[params["asset"] == "BTC", "flag_stale"] = True
    book = tmp_path / "book.csv"
    pd.DataFrame([("b", "BTC", 1.0, "USDC", 10_000.0, 0.5),
                  ("e", "ETH", 10.0, "USDC", 5_000.0, 0.4),
                  ("m", "BTC", 0.5, "DAI", 8_000.0, 0.5),
                  ("m", "ETH", 5.0, "DAI", 8_000.0, 0.5)], columns=BOOK_COLUMNS).to_csv(
        book, index=False)
    result = stress_parameters(cfg, params, AS_OF, book, parameters_ref=_REF)
    doc = result.summary
    assert any(s["bad_debt_usd"] > 0 for s in doc["scenarios"])  # ETH_collapse at least
    for s in doc["scenarios"]:
        assert s["excluded_accounts"] == 2 and s["excluded_debt_usd"] == 18_000.0
        assert s["bad_debt_share"] == pytest.approx(s["bad_debt_usd"] / 23_000.0)
        assert s["bad_debt_share_evaluated"] == pytest.approx(s["bad_debt_usd"] / 5_000.0)
    frame = result.table.to_pandas()
    total = frame["asset"] == "ALL"
    assert (frame.loc[total, "excluded_debt_usd"] == 18_000.0).all()
    assert frame.loc[~total, "excluded_debt_usd"].isna().all()
    assert frame["bad_debt_share_evaluated"].to_numpy() == pytest.approx(
        frame["bad_debt_usd"].to_numpy() / 5_000.0)
    jsonschema.validate(doc, contract.summary_schema())


def _frozen(params: pd.DataFrame, asset: str, admitted: str | None) -> pd.DataFrame:
    """``params`` with ``asset`` frozen as serving.update.freeze writes it."""
    out = params.copy()
    row = out["asset"] == asset
    out.loc[row, ["ltv", "imf", "max_leverage"]] = [0.0, 1.0, 1.0]
    out.loc[row, ["flag_fallback", "flag_held"]] = True
    out.loc[row, "reason"] = "fail-safe: implausible jump; frozen: LTV 0, LT and LB held"
    out["admitted_ltv"] = out["admitted_ltv"].astype(object)
    out.loc[row, "admitted_ltv"] = admitted
    return out


def test_a_frozen_asset_is_stressed_on_the_positions_opened_before_the_freeze(
        project: tuple[Config, Path]) -> None:
    """ETH frozen (LTV 0, LT and LB held): sized at today's LTV its accounts owed nothing and
    its collapse showed no bad debt. Sized at the LTV admitted before the freeze, the book
    and every figure are those of the day before; without an admitted LTV, LT − gap."""
    cfg, _ = project
    live = _parameters(AS_OF)
    eth = live["asset"] == "ETH"
    before = float(live.loc[eth, "ltv"].iloc[0])
    window = json.dumps([["2022-11-28", before - 0.02], ["2022-11-29", before]])
    unfrozen = stress_parameters(cfg, live, AS_OF, monte_carlo=False, parameters_ref=_REF)
    frozen = stress_parameters(cfg, _frozen(live, "ETH", window), AS_OF, monte_carlo=False,
                               parameters_ref=_REF)
    assert frozen.table.equals(unfrozen.table)
    assert frozen.summary["book"]["frozen_sizing"] == [
        {"asset": "ETH", "published_ltv": 0.0, "sizing_ltv": before, "basis": "admitted_ltv"}]
    collapse = next(s for s in frozen.summary["scenarios"] if s["scenario"] == "ETH_collapse")
    assert collapse["bad_debt_usd"] > 0
    jsonschema.validate(frozen.summary, contract.summary_schema())
    console = Console(record=True, width=200)
    print_stress(frozen, console)
    assert (f"ETH is frozen (LTV 0): its positions were sized at LTV {before:.4f} "
            "(admitted_ltv)") in console.export_text()

    gap = cfg.policy.roles.ltv_gap
    lt = float(live.loc[eth, "lt"].iloc[0])
    expired = stress_parameters(cfg, _frozen(live, "ETH", None), AS_OF, monte_carlo=False,
                               parameters_ref=_REF)
    assert expired.summary["book"]["frozen_sizing"] == [
        {"asset": "ETH", "published_ltv": 0.0, "sizing_ltv": pytest.approx(lt - gap),
         "basis": "lt_minus_gap"}]
    assert lt - gap > before  # so the book owes more than the day before's
    assert expired.summary["book"]["debt_usd"] > unfrozen.summary["book"]["debt_usd"]


def test_found_stress_days_are_replayed_beside_the_listed_episodes(tmp_path: Path) -> None:
    """Five real assets to 2022-11-30 with LUNA and FTX listed: the market-wide stress days
    the rule finds outside them (2021-09-07 among them) are replayed as they were and
    filtered, named by their day; LUNA's 2022-05-11, which the rule finds too, is replayed
    once, as the listed episode."""
    data = write_slice(tmp_path / "data", ["BTC", "ETH", "BNB", "LINK", "LTC"], "2019-01-01",
                       "2022-12-31", macro=())
    cfg = Config().with_overrides({
        "paths.data_dir": str(data), "paths.outputs_dir": str(tmp_path / "outputs"),
        "paths.mlruns_dir": str(tmp_path / "mlruns"),
        "stress.episodes": [{"name": "luna_ust", "start": "2022-05-09", "end": "2022-05-12"},
                            {"name": "ftx", "start": "2022-11-08", "end": "2022-11-10"}],
        "stress.mc_paths": 200, "stress.book.accounts": 200})
    extra = (("BNB", 0.04, 0.14, 1.05), ("LINK", 0.05, 0.18, 1.06), ("LTC", 0.05, 0.16, 1.06))
    publish_partition(_parameters(AS_OF, extra), tmp_path / "outputs" / "forecasts", AS_OF,
                      {"test": True})
    result = run_stress(cfg, AS_OF, publish=False, track=False)
    names = [s["scenario"] for s in result.summary["scenarios"]]
    assert {"found_2021-09-07", "found_2021-09-07_filtered"} <= set(names)
    assert names[:4] == ["luna_ust", "luna_ust_filtered", "ftx", "ftx_filtered"]
    assert not any(n.startswith("found_2022-05-") for n in names)
    found = result.summary["scenarios"][names.index("found_2021-09-07")]
    assert found["kind"] == "historical"
    jsonschema.validate(result.summary, contract.summary_schema())


def test_the_scenarios_do_not_follow_the_sigma_of_the_model_stressed(
        project: tuple[Config, Path]) -> None:
    """A model that halves its σ forecast is stressed on the same scenarios (scaled by the
    EWMA σ of the data, not by the published one): the same moves and the same bad debt
    for the same thresholds, so under-forecasting σ buys no milder stress."""
    cfg, _ = project
    params = _parameters(AS_OF)
    halved = params.assign(sigma_1d=params["sigma_1d"] / 2)
    a = stress_parameters(cfg, params, AS_OF, monte_carlo=True)
    b = stress_parameters(cfg, halved, AS_OF, monte_carlo=True)
    moves = {s.name: s.relative for s in a.scenarios}
    assert {s.name for s in b.scenarios} == set(moves)
    for s in b.scenarios:
        assert np.array_equal(s.relative, moves[s.name], equal_nan=True), s.name
    bad = {s["scenario"]: s["bad_debt_usd"] for s in a.summary["scenarios"]}
    assert {s["scenario"]: s["bad_debt_usd"] for s in b.summary["scenarios"]} == bad
    assert any(v > 0 for v in bad.values())


def test_the_worst_standard_scenario_is_market_wide_and_judged_on_the_debt_it_evaluated(
        project: tuple[Config, Path]) -> None:
    """A −90% collapse of one asset leaves bad debt no margin absorbs: it is read apart
    (``worst_collapse``), and the market-wide worst is the share of the debt the scenario
    could price (an episode before an asset's listing excludes its holders)."""
    cfg, _ = project
    result = stress_parameters(cfg, _parameters(AS_OF), AS_OF, monte_carlo=False,
                               parameters_ref=_REF)
    doc = result.summary
    rows = {s["scenario"]: s for s in doc["scenarios"]}
    collapses = {n: r for n, r in rows.items() if n.endswith("_collapse")}
    wide = {n: r for n, r in rows.items() if n not in collapses}
    assert set(collapses) == {"BTC_collapse", "ETH_collapse"}
    assert doc["worst_collapse"] == max(collapses, key=lambda n: collapses[n]["bad_debt_share"])
    assert doc["worst_collapse_bad_debt_share"] == max(
        r["bad_debt_share"] for r in collapses.values())
    assert doc["worst_collapse_bad_debt_share"] > doc["worst_standard_bad_debt_share"]
    assert not doc["worst_standard"].endswith("_collapse")
    assert doc["worst_standard_bad_debt_share"] == max(
        r["bad_debt_share_evaluated"] for r in wide.values())
    jsonschema.validate(doc, contract.summary_schema())


def test_the_ewma_sigma_of_a_scenario_is_that_of_the_day_after_the_as_of() -> None:
    """:func:`ewma_sigma_after` is :func:`ewma_sigma` (returns up to the day before) read on
    the day after the as-of, and ignores every row after the as-of."""
    from pipelines.stress.scenarios import ewma_sigma

    rng = np.random.default_rng(3)
    days = pd.date_range("2024-01-01", periods=120, freq="D")
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.03, 120))), index=days)
    as_of = days[80].date()
    got = ewma_sigma_after(close, 0.94, as_of)
    assert got == pytest.approx(float(ewma_sigma(close, 0.94).loc[days[81]]), rel=1e-12)
    later = close.copy()
    later.iloc[81:] *= 3.0  # a crash after the as-of changes nothing
    assert ewma_sigma_after(later, 0.94, as_of) == got
    assert got != pytest.approx(float(ewma_sigma(close, 0.94).loc[days[80]]), rel=1e-6)


def test_the_gate_share_is_of_the_debt_a_scenario_could_price(tmp_path: Path,
                                                              market_dir: Path) -> None:
    """LUNA (2022-05) predates NEWE's listing: its holders are excluded, so on the whole
    book's debt that episode reads milder than on the debt it priced. The market-wide worst
    is read on the second (``bad_debt_share_evaluated``)."""
    cfg, _ = _with_newe(tmp_path, market_dir, **{"stress.found_days": False})
    loose = _parameters(AS_OF, (("NEWE", 0.06, 0.2, 1.06),)).assign(lt=0.97, ltv=0.95, lb=1.01)
    doc = stress_parameters(cfg, loose, AS_OF, monte_carlo=False, parameters_ref=_REF).summary
    rows = {s["scenario"]: s for s in doc["scenarios"]}
    luna = rows["luna_ust"]
    assert luna["excluded_accounts"] > 0 and luna["bad_debt_usd"] > 0
    assert luna["bad_debt_share_evaluated"] > luna["bad_debt_share"]
    wide = [r for n, r in rows.items() if not n.endswith("_collapse")]
    assert doc["worst_standard_bad_debt_share"] == max(
        r["bad_debt_share_evaluated"] for r in wide)


def test_the_worst_standard_scenario_is_ranked_on_the_evaluated_share() -> None:
    """By hand: B excluded half the book, so its 8% of the book's debt is 16% of what it
    priced, above A's 10% (no exclusion); a collapse's 30% is read apart."""
    from pipelines.stress.report import TOTAL, summary

    def row(name: str, kind: str, share: float, evaluated: float) -> dict:
        return {"asset": TOTAL, "scenario": name, "kind": kind, "paths": 1,
                "accounts_liquidated": 1, "liquidated_value_usd": 1.0,
                "bad_debt_usd": share * 100, "bad_debt_share": share,
                "bad_debt_share_evaluated": evaluated, "excluded_accounts": int(evaluated > share),
                "excluded_debt_usd": 50.0 if evaluated > share else 0.0}

    rows = [row("A", "hypothetical", 0.10, 0.10), row("B", "historical", 0.08, 0.16),
            row("X_collapse", "hypothetical", 0.30, 0.30)]
    doc = summary(AS_OF, rows, {}, {}, {})
    assert (doc["worst_standard"], doc["worst_standard_bad_debt_share"]) == ("B", 0.16)
    assert (doc["worst_collapse"], doc["worst_collapse_bad_debt_share"]) == ("X_collapse", 0.30)

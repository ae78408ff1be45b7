"""Stress tables: the bad debt shared on the book's debt and on the debt evaluated, the
excluded debt, and the scenarios that were skipped."""

from __future__ import annotations

import datetime as dt
import json

import jsonschema
import numpy as np
import pytest

from pipelines.stress import contract
from pipelines.stress.book import Book
from pipelines.stress.liquidation import Market, liquidate
from pipelines.stress.report import TOTAL, scenario_rows, stress_table, summary, var_es
from pipelines.stress.scenarios import Scenario, Skipped

AS_OF = dt.date(2025, 6, 30)
REF = {"path": f"asof={AS_OF}", "revision": 1, "success_sha256": "0" * 64}


def _run(collateral: list[list[float]], debt: list[float]) -> list[dict]:
    """One crash of X (−30%, then held) with Y's move missing, over the given accounts."""
    book = Book(np.array([f"a{i}" for i in range(len(debt))]), ["X", "Y"],
                np.array(collateral), np.array(debt))
    market = Market(["X", "Y"], np.array([100.0, 100.0]), np.full(2, 0.8), np.full(2, 1.05),
                    np.full(2, 0.05), np.full(2, 79_800.0))
    rel = np.array([[[1.0, np.nan], [0.7, np.nan], [0.7, np.nan]]])
    scn = Scenario("crash", "historical", rel, 1, ["X", "Y"], {"X": "hourly", "Y": "missing"})
    return scenario_rows(AS_OF, scn, liquidate(book, market, rel, 1), float(book.debt_usd.sum()))


def test_var_and_es_of_bad_debt_are_the_worst_share_of_paths() -> None:
    """Known answers: 400 equally likely paths with losses 0..399 (shuffled). At 99% the
    worst 1% is 4 paths: VaR the least of them, 396, ES their mean, 397.5; at 97.5% the
    worst 10: 390 and 394.5. With an atom at zero (no bad debt on most paths), ES is the mean
    of the worst k paths, zeros among them only when fewer than k paths have bad debt."""
    rng = np.random.default_rng(3)
    losses = rng.permutation(np.arange(400.0))
    assert var_es(losses, 0.99) == (396.0, 397.5)
    assert var_es(losses, 0.975) == (390.0, 394.5)
    mostly_zero = np.concatenate([np.zeros(997), [5.0, 7.0, 9.0]])
    assert var_es(mostly_zero, 0.997) == (5.0, 7.0)  # k = 3: the three paths with bad debt
    assert var_es(mostly_zero, 0.99) == (0.0, pytest.approx(2.1))  # k = 10: seven zeros too
    assert var_es(mostly_zero, 0.999) == (9.0, 9.0)  # k = 1: the worst path alone
    assert var_es(np.array([4.0]), 0.99) == (4.0, 4.0)  # one path: k is at least 1


def test_bad_debt_is_shared_on_the_book_and_on_the_debt_evaluated() -> None:
    # a0 (X only, debt 760) is evaluated; a1 holds Y (no move) and is excluded with its 2,000
    rows = _run([[10.0, 0.0], [10.0, 20.0]], [760.0, 2_000.0])
    total = rows[-1]
    assert total["asset"] == TOTAL and total["excluded_accounts"] == 1
    assert total["excluded_debt_usd"] == 2_000.0
    bad = total["bad_debt_usd"]
    assert bad > 0
    assert total["bad_debt_share"] == pytest.approx(bad / 2_760.0)
    assert total["bad_debt_share_evaluated"] == pytest.approx(bad / 760.0)
    x = rows[0]
    assert x["bad_debt_share_evaluated"] == pytest.approx(x["bad_debt_usd"] / 760.0)
    assert "excluded_debt_usd" not in x  # ALL row only (null in the table)


def test_a_scenario_that_evaluated_no_debt_has_no_evaluated_share() -> None:
    """Every account excluded: 0 bad debt of 0 evaluated is not a 0% result: null."""
    rows = _run([[10.0, 5.0], [0.0, 20.0]], [760.0, 2_000.0])
    total = rows[-1]
    assert total["excluded_accounts"] == 2 and total["excluded_debt_usd"] == 2_760.0
    assert total["bad_debt_share"] == 0.0 and total["bad_debt_share_evaluated"] is None
    table = stress_table(rows)
    assert table.column("bad_debt_share_evaluated").null_count == len(rows)
    row_schema = contract.stress_row_schema()
    for row in json.loads(table.to_pandas().to_json(orient="records", date_format="iso")):
        row["as_of"] = row["as_of"][:10]
        jsonschema.validate(row, row_schema)


def test_the_summary_publishes_the_new_columns_and_the_skipped_scenarios() -> None:
    rows = _run([[10.0, 0.0], [10.0, 20.0]], [760.0, 2_000.0])
    details = {"crash": {"note": "", "missing_assets": ["Y"], "daily_assets": [],
                         "top_accounts": [], "top_assets": [], "hhi_accounts": 0.0}}
    book = {"source": "book.csv", "accounts": 2, "debt_usd": 2_760.0,
            "collateral_usd": 4_000.0, "unhealthy_at_start": 0, "frozen_sizing": []}
    skipped = [Skipped("BTC_drop30_corr1", "hypothetical", "shock asset BTC is unusable")]
    doc = summary(AS_OF, rows, details, book, REF, skipped)
    item = doc["scenarios"][0]
    assert item["excluded_debt_usd"] == 2_000.0
    assert item["bad_debt_share_evaluated"] == pytest.approx(item["bad_debt_usd"] / 760.0)
    assert doc["skipped_scenarios"] == [{"scenario": "BTC_drop30_corr1",
                                         "kind": "hypothetical",
                                         "reason": "shock asset BTC is unusable"}]
    jsonschema.validate(doc, contract.summary_schema())


def test_a_publication_sweeps_the_staging_of_killed_stress_runs_only(tmp_path):
    """A stress run killed between its staging directory and the rename leaves
    ``.staging-rev=<n>-<pid>-<hex>``; the next publication of that day removes it when the
    pid is gone, never a live writer's staging nor anything it did not name."""
    import datetime as dt
    import os
    import subprocess

    import pyarrow as pa

    from pipelines.stress.publish import list_stress, publish_stress, stress_dir

    day = dt.date(2025, 6, 30)
    base = stress_dir(tmp_path, day, 1).parent
    base.mkdir(parents=True)
    done = subprocess.Popen(["true"])
    done.wait()  # its pid is gone
    dead = base / f".staging-rev=1-{done.pid}-00ff00ff00ff00ff"
    live = base / f".staging-rev=1-{os.getpid()}-0123456789abcdef"
    foreign = base / ".staging-rev=1-not-ours"
    impossible = base / ".staging-rev=1-99999999999999999999-ab"  # no such pid can exist
    for d in (dead, live, foreign, impossible):
        d.mkdir()
        (d / "stress.parquet").write_bytes(b"partial")
    table = pa.table({"scenario": ["ftx"], "bad_debt_usd": [1.0]})
    path, created = publish_stress(table, {"scenarios": []}, tmp_path, day)
    assert created and list(list_stress(tmp_path, day)) == [1] and path.name == "rev=1"
    assert not dead.exists() and not impossible.exists()
    assert live.is_dir() and foreign.is_dir()
    assert not [p for p in base.iterdir() if p.name.startswith(f".staging-rev=1-{os.getpid()}")
                and p != live]  # its own staging renamed into place, none left behind


def test_a_joint_scenario_that_priced_no_account_has_no_tail_not_a_zero_one() -> None:
    """Every holder excluded from the joint FHS scenario (its paths unusable, e.g. overflowed
    on an absurd σ): the summary's Monte Carlo figures are null, not $0 and P = 0%; its row
    says how many accounts it excluded."""
    book = Book(np.array(["a0", "a1"]), ["X", "Y"], np.array([[10.0, 5.0], [0.0, 20.0]]),
                np.array([760.0, 2_000.0]))
    market = Market(["X", "Y"], np.array([100.0, 100.0]), np.full(2, 0.8), np.full(2, 1.05),
                    np.full(2, 0.05), np.full(2, 79_800.0))
    rel = np.tile(np.array([[1.0, np.nan], [0.7, np.nan]]), (4, 1, 1))  # 4 paths, Y unusable
    scn = Scenario("fhs_joint", "monte_carlo", rel, 0, ["X", "Y"], {"X": "fhs", "Y": "fhs"})
    rows = scenario_rows(AS_OF, scn, liquidate(book, market, rel, 0), 2_760.0)
    assert rows[-1]["excluded_accounts"] == 2
    info = {"source": "book.csv", "accounts": 2, "debt_usd": 2_760.0,
            "collateral_usd": 4_000.0, "unhealthy_at_start": 0, "frozen_sizing": []}
    details = {"fhs_joint": {"note": "", "missing_assets": ["Y"], "daily_assets": [],
                             "top_accounts": [], "top_assets": [], "hhi_accounts": 0.0}}
    doc = summary(AS_OF, rows, details, info, REF)
    mc = doc["monte_carlo"]
    assert mc["paths"] == 4 and mc["prob_bad_debt"] is None and mc["bad_debt_es99"] is None
    jsonschema.validate(doc, contract.summary_schema())
    # one account priced: its tail is the scenario's
    priced = summary(AS_OF, _run_mc_one_priced(), {}, info, REF)["monte_carlo"]
    assert priced["prob_bad_debt"] is not None


def _run_mc_one_priced() -> list[dict]:
    book = Book(np.array(["a0", "a1"]), ["X", "Y"], np.array([[10.0, 0.0], [0.0, 20.0]]),
                np.array([760.0, 2_000.0]))
    market = Market(["X", "Y"], np.array([100.0, 100.0]), np.full(2, 0.8), np.full(2, 1.05),
                    np.full(2, 0.05), np.full(2, 79_800.0))
    rel = np.tile(np.array([[1.0, np.nan], [0.7, np.nan]]), (4, 1, 1))
    scn = Scenario("fhs_joint", "monte_carlo", rel, 0, ["X", "Y"], {"X": "fhs", "Y": "fhs"})
    return scenario_rows(AS_OF, scn, liquidate(book, market, rel, 0), 2_760.0)

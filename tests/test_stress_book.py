"""Book schema: bad input fails naming file, row and rule; the synthetic book follows its
documented distributions and opens every account healthy."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.schema import StressBookConfig
from pipelines.stress.book import (
    BOOK_COLUMNS,
    BookValidationError,
    load_book,
    sizing_ltv,
    stable_mix,
    synthetic_book,
    validate_book,
)
from pipelines.stress.liquidation import health_factor

ASSETS = ["BTC", "ETH", "SOL"]
STABLE = ["USDC", "USDT", "DAI"]


def _book() -> pd.DataFrame:
    return pd.DataFrame([
        ("a1", "BTC", 1.0, "USDC", 40_000.0, 0.6),
        ("a1", "ETH", 5.0, "USDC", 40_000.0, 0.6),
        ("a2", "SOL", 100.0, "USDT", 5_000.0, None),
    ], columns=BOOK_COLUMNS)


def test_valid_book_becomes_an_accounts_by_assets_matrix(tmp_path: Path) -> None:
    path = tmp_path / "book.csv"
    _book().to_csv(path, index=False)
    book = load_book(path, ASSETS, STABLE)
    assert book.accounts.tolist() == ["a1", "a2"] and book.assets == ASSETS
    assert book.collateral.tolist() == [[1.0, 5.0, 0.0], [0.0, 0.0, 100.0]]
    assert book.debt_usd.tolist() == [40_000.0, 5_000.0]


@pytest.mark.parametrize(("edit", "rule", "line"), [
    (lambda f: f.assign(collateral_asset=["BTC", "DOGE", "SOL"]), "unknown_asset", 3),
    (lambda f: f.assign(collateral_amount=[1.0, -5.0, 100.0]), "negative_amount", 3),
    (lambda f: f.assign(debt_amount=[40_000.0, 40_000.0, -1.0]), "negative_amount", 4),
    (lambda f: f.assign(collateral_amount=[1.0, 5.0, 0.0]), "debt_without_collateral", 4),
    (lambda f: f.assign(debt_asset=["USDC", "ETH", "USDT"]), "unknown_debt_asset", 3),
    (lambda f: f.assign(debt_amount=[40_000.0, 39_000.0, 5_000.0]), "inconsistent_debt", 3),
    (lambda f: f.assign(collateral_asset=["BTC", "BTC", "SOL"]), "duplicate_collateral", 3),
    (lambda f: f.assign(opened_ltv=[0.6, 0.6, 1.2]), "opened_ltv_range", 4),
    (lambda f: f.assign(collateral_amount=["1", "x", "100"]), "not_a_number", 3),
    (lambda f: f.drop(columns="debt_asset"), "missing_column", None),
    # a blank or whitespace account id is no account: neither merged with a nameless group
    # nor a crash inside the grouping
    (lambda f: f.assign(account=["a1", None, "a2"]), "empty_account", 3),
    (lambda f: f.assign(account=[None, None, None]), "empty_account", 2),
    (lambda f: f.assign(account=["a1", "a1", "  "]), "empty_account", 4),
    # 'a1 ' would be a second account owing a1's debt again
    (lambda f: f.assign(account=["a1", "a1 ", "a2"]), "account_whitespace", 3),
])
def test_bad_book_names_file_row_and_rule(tmp_path: Path, edit, rule: str,
                                          line: int | None) -> None:
    path = tmp_path / "book.csv"
    edit(_book()).to_csv(path, index=False)
    with pytest.raises(BookValidationError) as err:
        load_book(path, ASSETS, STABLE)
    assert err.value.rule == rule and err.value.row == line
    assert str(path) in str(err.value) and f"rule {rule}" in str(err.value)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_csv_errors_name_the_physical_line_across_blank_lines(tmp_path: Path,
                                                              suffix: str) -> None:
    """Blank (and whitespace-only) lines are skipped but counted, and a quoted field that
    spans two lines counts both: the line reported is the one an editor shows."""
    text = ("account,collateral_asset,collateral_amount,debt_asset,debt_amount,opened_ltv\n"
            "\n"                                 # line 2
            'a1,BTC,1.0,USDC,40000,"0.6"\n'       # line 3
            "   \n"                              # line 4
            '"a\n2",ETH,5.0,USDC,100,0.1\n'      # lines 5-6: one record
            "\n"                                 # line 7
            "a3,DOGE,5.0,USDC,100,0.1\n")         # line 8
    path = tmp_path / f"book{suffix}"
    if suffix.endswith(".gz"):
        with gzip.open(path, "wt", newline="") as handle:
            handle.write(text)
    else:
        path.write_text(text, newline="")
    with pytest.raises(BookValidationError) as err:
        load_book(path, ASSETS, STABLE)
    assert err.value.rule == "unknown_asset" and err.value.row == 8
    assert f"{path}, row 8: rule unknown_asset" in str(err.value)
    fixed = tmp_path / "fixed.csv"
    fixed.write_text(text.replace("DOGE", "SOL"), newline="")
    book = load_book(fixed, ASSETS, STABLE)  # the blank lines lose no row
    assert sorted(book.accounts.tolist()) == sorted(["a1", "a\n2", "a3"])


def test_unreadable_csv_names_the_file_line_and_rule(tmp_path: Path) -> None:
    """An empty file, or a row with one field too many (pandas would silently take its first
    field as an index and shift the others), is refused by rule, not read."""
    path = tmp_path / "book.csv"
    header = ",".join(BOOK_COLUMNS) + "\n"
    for text, where, rule in (("", "", "empty_book"), ("\n  \n", "", "empty_book"),
                              (header + "\na1,BTC,1,USDC,1,0.5,7\n", ", row 3", "field_count"),
                              (header + "a1,BTC,1,USDC\n", ", row 2", "field_count")):
        path.write_text(text)
        with pytest.raises(BookValidationError, match=rf"book.csv{where}: rule {rule} failed"):
            load_book(path, ASSETS, STABLE)


def test_parquet_rows_are_reported_by_index(tmp_path: Path) -> None:
    path = tmp_path / "book.parquet"
    _book().assign(collateral_asset=["BTC", "ETH", "XRP"]).to_parquet(path)
    with pytest.raises(BookValidationError, match=r"row 2: rule unknown_asset"):
        load_book(path, ASSETS, STABLE)


def test_synthetic_book_is_seeded_documented_and_opens_healthy() -> None:
    prices = pd.Series([60_000.0, 3_000.0, 150.0], ASSETS)
    ltv = pd.Series([0.75, 0.70, 0.55], ASSETS)
    lt = np.array([0.82, 0.78, 0.65])
    adv = pd.Series([2e10, 1e10, 2e9], ASSETS)
    cfg = StressBookConfig(accounts=4_000, seed=5)
    frame = synthetic_book(prices, ltv, adv, cfg)
    assert frame.equals(synthetic_book(prices, ltv, adv, cfg))
    book = validate_book(frame, ASSETS, STABLE)
    value = book.collateral @ prices.to_numpy()
    # lognormal value: median and log-sd as configured, within 4 standard errors of 4,000
    # draws (log median: 1.2533·σ/√n = 0.03; log sd: σ/√(2n) = 0.017)
    assert abs(np.log(np.median(value) / cfg.median_usd)) < 0.12
    assert np.log(value).std() == pytest.approx(cfg.sigma_log, abs=0.07)
    counts = (book.collateral > 0).sum(axis=1)
    assert np.bincount(counts, minlength=4)[1:] / len(counts) == pytest.approx(
        cfg.collaterals_p, abs=0.03)
    share = frame.groupby("account")["opened_ltv"].first().to_numpy() / (
        (book.collateral * prices.to_numpy() * ltv.to_numpy()).sum(axis=1) / value)
    assert share.mean() == pytest.approx(5 / 7, abs=0.02)  # Beta(5, 2)
    assert (health_factor(book.collateral, prices.to_numpy(), lt, book.debt_usd) > 1).all()
    assert set(frame["debt_asset"]) <= set(STABLE)


def _published(**frozen_eth: object) -> pd.DataFrame:
    rows = pd.DataFrame({"asset": ASSETS, "ltv": [0.75, 0.70, 0.55], "lt": [0.82, 0.78, 0.65],
                         "flag_fallback": False, "admitted_ltv": [None, None, None]})
    eth = rows["asset"] == "ETH"
    for column, value in frozen_eth.items():
        rows[column] = rows[column].astype(object)
        rows.loc[eth, column] = value
    return rows


def test_an_asset_without_adv_is_never_drawn_even_for_a_three_asset_account() -> None:
    """Accounts draw up to three collateral assets; with two of four assets liquid, the
    third draw must not fall on an asset without ADV (a −∞ key, never a sample)."""
    assets = ["A", "B", "C", "D"]
    prices = pd.Series(100.0, assets)
    ltv = pd.Series(0.7, assets)
    adv = pd.Series([1e9, 1e9, 0.0, np.nan], assets)
    cfg = StressBookConfig(accounts=2_000, seed=3, collaterals_p=[0.2, 0.3, 0.5])
    frame = synthetic_book(prices, ltv, adv, cfg)
    assert set(frame["collateral_asset"]) == {"A", "B"}
    per_account = frame.groupby("account")["collateral_asset"].nunique()
    # the counts' law cut at two assets: P(2) = 0.3 / (0.2 + 0.3), within 4 s.e. of 2,000
    assert per_account.max() == 2 and abs((per_account == 2).mean() - 0.6) < 0.045
    # no ADV anywhere: every asset is drawn alike, three to an account as configured
    flat = synthetic_book(prices, ltv, pd.Series(0.0, assets), cfg)
    assert set(flat["collateral_asset"]) == set(assets)
    assert flat.groupby("account")["collateral_asset"].nunique().max() == 3


def test_the_synthetic_book_borrows_only_the_configured_stablecoins() -> None:
    assert stable_mix(["USDC", "USDT", "DAI"]) == {"USDC": 0.6, "USDT": 0.3, "DAI": 0.1}
    assert stable_mix(["USDC", "USDT"]) == pytest.approx({"USDC": 2 / 3, "USDT": 1 / 3})
    assert stable_mix(["FRAX", "LUSD"]) == {"FRAX": 0.5, "LUSD": 0.5}
    with pytest.raises(ValueError, match=r"stress\.stablecoins is empty"):
        stable_mix([])
    prices = pd.Series([60_000.0, 3_000.0, 150.0], ASSETS)
    ltv = pd.Series([0.75, 0.70, 0.55], ASSETS)
    adv = pd.Series([2e10, 1e10, 2e9], ASSETS)
    cfg = StressBookConfig(accounts=1_000, seed=5)
    two = ["USDC", "USDT"]
    frame = synthetic_book(prices, ltv, adv, cfg, two)
    assert set(frame["debt_asset"]) == set(two)
    validate_book(frame, ASSETS, two)  # a book the configured validation accepts
    # the default list draws what the book always drew (same seed, same rows)
    assert synthetic_book(prices, ltv, adv, cfg, STABLE).equals(
        synthetic_book(prices, ltv, adv, cfg))


def test_a_frozen_asset_is_sized_at_the_ltv_admitted_before_the_freeze() -> None:
    window = json.dumps([["2025-06-27", 0.70], ["2025-06-28", 0.72], ["2025-06-29", 0.0]])
    ltv, frozen = sizing_ltv(_published(ltv=0.0, flag_fallback=True, admitted_ltv=window),
                             0.01)
    assert ltv.to_dict() == {"BTC": 0.75, "ETH": 0.72, "SOL": 0.55}
    assert frozen == [{"asset": "ETH", "published_ltv": 0.0, "sizing_ltv": 0.72,
                       "basis": "admitted_ltv"}]
    # no admitted LTV left in the window: LT minus the roles' gap
    ltv, frozen = sizing_ltv(_published(ltv=0.0, flag_fallback=True), 0.01)
    assert ltv["ETH"] == pytest.approx(0.77) and frozen[0]["basis"] == "lt_minus_gap"
    # an unusable asset is never given to anyone: left as published, not reported
    ltv, frozen = sizing_ltv(_published(ltv=0.0, flag_fallback=True), 0.01, skip=["ETH"])
    assert ltv["ETH"] == 0.0 and frozen == []
    # LTV 0 without the fail-safe flag, or the fail-safe flag with LTV > 0: not a freeze
    for edit in ({"ltv": 0.0}, {"flag_fallback": True}):
        ltv, frozen = sizing_ltv(_published(**edit), 0.01)
        assert ltv.equals(_published(**edit).set_index("asset")["ltv"].astype(float))
        assert frozen == []
    with pytest.raises(ValueError, match="admitted_ltv of ETH is not a JSON list"):
        sizing_ltv(_published(ltv=0.0, flag_fallback=True, admitted_ltv="[0.7"), 0.01)


def test_frozen_sizing_gives_the_frozen_asset_its_positions_back() -> None:
    """A book sized at the published LTV 0 carries no debt on the frozen asset's own
    accounts; sized by :func:`sizing_ltv` it is the book of the day before the freeze."""
    prices = pd.Series([60_000.0, 3_000.0, 150.0], ASSETS)
    adv = pd.Series([2e10, 1e10, 2e9], ASSETS)
    cfg = StressBookConfig(accounts=2_000, seed=3)
    window = json.dumps([["2025-06-28", 0.70]])
    published = _published(ltv=0.0, flag_fallback=True, admitted_ltv=window)
    ltv, _ = sizing_ltv(published, 0.01)
    frozen = validate_book(synthetic_book(prices, ltv, adv, cfg), ASSETS, STABLE)
    before = validate_book(synthetic_book(prices, _published().set_index("asset")["ltv"], adv,
                                          cfg), ASSETS, STABLE)
    at_zero = validate_book(synthetic_book(prices, published.set_index("asset")["ltv"]
                                           .astype(float), adv, cfg), ASSETS, STABLE)
    eth_only = ((frozen.collateral > 0).sum(axis=1) == 1) & (frozen.collateral[:, 1] > 0)
    assert eth_only.sum() > 100
    assert (at_zero.debt_usd[eth_only] == 0).all()  # the defect: no debt, no risk
    assert np.array_equal(frozen.debt_usd, before.debt_usd)


def test_account_ids_of_mixed_types_are_refused() -> None:
    """In a Parquet book 1 and '1' are two values that would become one account once written
    as text (the matrix keys ids as strings): refused, naming the row."""
    frame = _book().assign(account=[1, "1", 2])
    with pytest.raises(BookValidationError) as err:
        validate_book(frame, ASSETS, STABLE, "book.parquet", 0)
    assert err.value.rule == "account_mixed_types" and err.value.row == 1
    assert validate_book(_book().assign(account=[1, 1, 2]), ASSETS, STABLE, "b.parquet",
                         0).accounts.tolist() == ["1", "2"]

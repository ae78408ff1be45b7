"""A book of lending positions: the documented schema, its validation, a seeded synthetic book.

**Schema** (CSV or Parquet, one row per account × collateral asset)::

    account            string   account id; an account's rows share its debt columns
    collateral_asset   string   symbol of a collateral asset in the published parameters
    collateral_amount  float    units of the collateral asset, >= 0
    debt_asset         string   stablecoin borrowed (``stress.stablecoins``), priced at 1 USD
    debt_amount        float    units of the debt asset, >= 0
    opened_ltv         float    LTV when the position was opened, in [0, 1); empty if unknown

Validation names the file, the row (CSV: the physical line number as an editor shows it,
header = line 1, blank lines skipped but counted, a quoted field spanning lines counts them
all, the record reported by its first line; Parquet: the 0-based row index) and the rule:
``field_count`` (a CSV row with more or fewer fields than the header), ``csv_parse`` (not a
CSV pandas can read), ``csv_records`` (a CSV whose records pandas and the csv module split
differently: its lines cannot be numbered),
``missing_column``, ``empty_book``, ``empty_account`` (blank or whitespace-only id),
``account_whitespace`` (an id with leading or trailing whitespace: another account than the
same id without it), ``account_mixed_types`` (ids of several types, e.g. 1 and '1' in Parquet),
``not_a_number``, ``non_finite``, ``negative_amount``, ``unknown_asset``,
``unknown_debt_asset``, ``duplicate_collateral``, ``inconsistent_debt``,
``debt_without_collateral``, ``opened_ltv_range``. Nothing is filled, dropped or rounded
(a blank line holds no row).

**Synthetic book** (:func:`synthetic_book`), every draw from one seeded generator:

- collateral value per account ~ lognormal(ln median, sigma_log) USD at today's prices;
- number of collateral assets 1, 2, 3 with probabilities ``collaterals_p``, assets drawn
  without replacement with weights ∝ each asset's ADV (big books sit in liquid assets);
  an asset without ADV is never drawn;
- the value split across them ~ Dirichlet(1, ..., 1);
- opening LTV = s × (value-weighted max LTV), s ~ Beta(a, b), so every account opens healthy;
- debt in one stablecoin (USDC 60%, USDT 30%, DAI 10%).

The max LTV per asset is today's published one, except for a **frozen** asset
(:func:`sizing_ltv`): the fail-safe publishes LTV 0 (no new borrowing) but holds LT and LB
for the positions opened before the freeze, which still exist; sized at LTV 0 they would
carry no debt and the stress would show no risk on the day the asset is most suspect.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import StressBookConfig
from serving.roles import parse_admitted

BOOK_COLUMNS = ["account", "collateral_asset", "collateral_amount", "debt_asset",
                "debt_amount", "opened_ltv"]
_NUMERIC = ["collateral_amount", "debt_amount", "opened_ltv"]
_STABLE_MIX = {"USDC": 0.6, "USDT": 0.3, "DAI": 0.1}


class BookValidationError(ValueError):
    """A book file breaks a rule; the message names the file, row and rule."""

    def __init__(self, source: str, row: int | None, rule: str, detail: str) -> None:
        where = f"{source}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: rule {rule} failed: {detail}. Nothing was stressed or "
                         "published; fix the book and rerun.")
        self.source, self.row, self.rule = source, row, rule


@dataclass(frozen=True)
class Book:
    """A validated book in matrix form.

    Attributes
    ----------
    accounts : np.ndarray
        Account ids, shape (A,).
    assets : list of str
        Collateral assets, the columns of ``collateral``.
    collateral : np.ndarray
        Units of each collateral asset per account, shape (A, K).
    debt_usd : np.ndarray
        Debt per account in USD (stablecoins at 1), shape (A,).
    """

    accounts: np.ndarray
    assets: list[str]
    collateral: np.ndarray
    debt_usd: np.ndarray


_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def read_book(path: Path | str) -> pd.DataFrame:
    """Read a book file (``.csv``, ``.csv.gz``/``.bz2``/``.xz``, ``.parquet``) as a frame of
    :data:`BOOK_COLUMNS` whose index is the row number errors report (:func:`csv_records`)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path).reset_index(drop=True)
    with _OPENERS.get(path.suffix, open)(path, "rt", encoding="utf-8-sig", newline="") as fh:
        text = fh.read()
    blank, lines, fields = csv_records(text)
    if blank.all():
        raise BookValidationError(str(path), None, "empty_book", "the file is empty")
    header = int(np.argmin(blank))  # leading blank lines are one record each
    width = fields[header]
    wrong = np.flatnonzero(~blank & (fields != width))
    if len(wrong):  # pandas would take an extra first field as an index and shift the row
        i = int(wrong[0])
        raise BookValidationError(str(path), int(lines[i]), "field_count", f"{fields[i]} "
                                  f"fields where the header (line {lines[header]}) has {width}")
    try:
        frame = pd.read_csv(io.StringIO(text), skiprows=header, skip_blank_lines=False,
                            dtype={"account": str, "collateral_asset": str, "debt_asset": str})
    except pd.errors.ParserError as exc:  # pandas' text names the line
        raise BookValidationError(str(path), None, "csv_parse", str(exc).strip()) from None
    blank, lines = blank[header + 1:], lines[header + 1:]
    if len(frame) != len(lines):  # both parsers follow RFC 4180; a file they split differently
        raise BookValidationError(  # would get wrong line numbers: refused, not guessed
            str(path), None, "csv_records", f"pandas reads {len(frame)} records below the "
            f"header where the csv module reads {len(lines)}: check the quoting")
    return frame[~blank].set_axis(pd.Index(lines[~blank], name="line"))


def csv_records(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per CSV record of ``text``: whether it is a blank line (empty or whitespace only, as
    pandas skips them), its first physical line (1-based; a quoted field may span lines) and
    its number of fields.

    pandas numbers only the records it keeps, so ``index + 2`` drifts by one per blank line
    above the row: the physical line is counted here, by the csv module, on the same text.
    """
    reader = csv.reader(io.StringIO(text))
    blank, first, fields, end = [], [], [], 0
    for record in reader:
        first.append(end + 1)
        fields.append(len(record))
        blank.append(not record or (len(record) == 1 and not record[0].strip()
                                    and reader.line_num == end + 1))
        end = reader.line_num
    return np.array(blank, bool), np.array(first, np.int64), np.array(fields, np.int64)


def validate_book(frame: pd.DataFrame, known_assets: list[str], stablecoins: list[str],
                  source: str = "<book>", line_offset: int = 2,
                  rows: np.ndarray | None = None) -> Book:
    """Check every rule of the module docstring and return the book in matrix form.

    Parameters
    ----------
    frame : pd.DataFrame
        Rows in the documented schema.
    known_assets : list of str
        Assets with published parameters; any other collateral asset is refused.
    stablecoins : list of str
        Admitted debt assets.
    source : str
        File name used in error messages.
    line_offset : int
        Added to the 0-based row position in messages (0 for Parquet rows) when ``rows`` is
        not given.
    rows : np.ndarray, optional
        The number to report for each row (a CSV's physical lines, :func:`read_book`).

    Raises
    ------
    BookValidationError
        On the first rule broken, naming the file, row and rule.
    """
    def fail(i: int | None, rule: str, detail: str) -> None:
        row = None if i is None else int(rows[i]) if rows is not None else int(i) + line_offset
        raise BookValidationError(source, row, rule, detail)

    missing = [c for c in BOOK_COLUMNS if c not in frame.columns]
    if missing:
        fail(None, "missing_column", f"columns {missing} are missing (schema: {BOOK_COLUMNS})")
    if frame.empty:
        fail(None, "empty_book", "the book has no rows")
    frame = frame.reset_index(drop=True)
    account = frame["account"]
    blank = account.isna() | account.astype(str).str.strip().eq("")
    if blank.any():
        i = int(np.flatnonzero(blank)[0])
        fail(i, "empty_account", "the account id is empty or whitespace: every row names the "
             "account it belongs to")
    text = account.astype(str)
    padded = text.ne(text.str.strip())
    if padded.any():  # 'a1 ' would be another account than 'a1', owing its debt again
        i = int(np.flatnonzero(padded)[0])
        fail(i, "account_whitespace", f"the account id {text.iloc[i]!r} starts or ends with "
             "whitespace: it would be another account than the same id without it")
    names = account.map(lambda x: type(x).__name__)
    kinds = set(names)
    if len(kinds) > 1:  # 1 and '1' would be one account once written as text
        i = int(np.flatnonzero(names.ne(names.iloc[0]))[0])
        fail(i, "account_mixed_types", f"account ids mix types ({', '.join(sorted(kinds))}): "
             f"{account.iloc[i]!r} here; write every id as text")
    values = {}
    for column in _NUMERIC:
        raw = frame[column]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & raw.notna()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            fail(i, "not_a_number", f"{column} = {raw.iloc[i]!r} is not a number")
        values[column] = num.to_numpy(float)
    for column in ("collateral_amount", "debt_amount"):
        x = values[column]
        for rule, bad in (("non_finite", ~np.isfinite(x)), ("negative_amount", x < 0)):
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                fail(i, rule, f"{column} = {float(x[i])!r} must be a finite amount >= 0")
    ltv = values["opened_ltv"]
    bad = np.isfinite(ltv) & ((ltv < 0) | (ltv >= 1)) | np.isinf(ltv)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        fail(i, "opened_ltv_range", f"opened_ltv = {float(ltv[i])!r} must be in [0, 1) or empty")
    known = set(known_assets)
    unknown = ~frame["collateral_asset"].isin(known)
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        fail(i, "unknown_asset", f"collateral_asset {frame['collateral_asset'].iloc[i]!r} has "
             f"no published parameters (known: {', '.join(sorted(known))})")
    not_stable = ~frame["debt_asset"].isin(stablecoins)
    if not_stable.any():
        i = int(np.flatnonzero(not_stable)[0])
        fail(i, "unknown_debt_asset", f"debt_asset {frame['debt_asset'].iloc[i]!r} is not an "
             f"admitted stablecoin ({', '.join(stablecoins)})")
    dup = frame.duplicated(["account", "collateral_asset"])
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        fail(i, "duplicate_collateral", f"account {frame['account'].iloc[i]!r} lists "
             f"{frame['collateral_asset'].iloc[i]} twice")
    debt_cols = frame[["account", "debt_asset"]].assign(debt_amount=values["debt_amount"])
    first = debt_cols.groupby("account", sort=False).transform("first")
    differs = (first["debt_asset"] != debt_cols["debt_asset"]) | (
        first["debt_amount"] != debt_cols["debt_amount"])
    if differs.any():
        i = int(np.flatnonzero(differs)[0])
        fail(i, "inconsistent_debt", f"account {frame['account'].iloc[i]!r} has rows with "
             "different debt_asset / debt_amount")
    owner = frame["account"].to_numpy()
    total = pd.Series(values["collateral_amount"]).groupby(owner).transform("sum")
    orphan = (values["debt_amount"] > 0) & (total.to_numpy() <= 0)
    if orphan.any():
        i = int(np.flatnonzero(orphan)[0])
        fail(i, "debt_without_collateral", f"account {frame['account'].iloc[i]!r} owes "
             f"{float(values['debt_amount'][i])!r} but holds no collateral")
    return _to_matrix(frame["account"].to_numpy(), frame["collateral_asset"].to_numpy(),
                      values["collateral_amount"], values["debt_amount"], sorted(known))


def _to_matrix(account: np.ndarray, asset: np.ndarray, amount: np.ndarray, debt: np.ndarray,
               assets: list[str]) -> Book:
    ids, row = np.unique(account.astype(str), return_inverse=True)
    col = pd.Index(assets).get_indexer(asset)
    collateral = np.zeros((len(ids), len(assets)))  # (A, K)
    np.add.at(collateral, (row, col), amount)
    debt_usd = np.zeros(len(ids))
    debt_usd[row] = debt  # identical within an account (checked)
    return Book(ids, list(assets), collateral, debt_usd)


def load_book(path: Path | str, known_assets: list[str], stablecoins: list[str]) -> Book:
    """Read and validate a real book; CSV rows are reported by physical line number."""
    frame = read_book(path)
    return validate_book(frame, known_assets, stablecoins, str(path),
                         rows=frame.index.to_numpy())


def sizing_ltv(params: pd.DataFrame, ltv_gap: float, skip: list[str] | tuple[str, ...] = ()
               ) -> tuple[pd.Series, list[dict[str, Any]]]:
    """The max LTV each asset's synthetic positions are opened at, and the frozen assets.

    An asset is **frozen** when its published row is the fail-safe (``flag_fallback``) with
    LTV 0: no new borrowing, LT and LB held for the positions opened before the freeze
    (:func:`serving.roles.freeze`). Those positions are sized at the highest LTV of the
    row's ``admitted_ltv`` (a JSON list of [date, ltv], basis ``admitted_ltv``): the LTVs
    admitted in the protection window before the freeze, which a freeze keeps however long it
    lasts (the positions opened then do not go away when the window has passed); the roles
    keep LT >= each of them + ``roles.ltv_gap``, so they open healthy under the held LT.
    With no admitted LTV (a partition without the column, or none admitted before the
    freeze) they are sized at ``LT - roles.ltv_gap`` (basis ``lt_minus_gap``), the highest
    LTV the roles could have admitted under the held LT: the conservative side for a stress.
    Every other asset keeps its published LTV.

    Parameters
    ----------
    params : pd.DataFrame
        Published rows: ``asset``, ``ltv``, ``lt``, ``flag_fallback`` and optionally
        ``admitted_ltv``.
    ltv_gap : float
        ``policy.roles.ltv_gap``.
    skip : list of str
        Assets nobody is given (unusable: stale or no forecast); their LTV is left as
        published and they are not reported, since no synthetic position is sized on it.

    Returns
    -------
    (pd.Series, list of dict)
        LTV per asset (sorted index) and, per frozen asset, ``asset``, ``published_ltv``,
        ``sizing_ltv`` and ``basis``.
    """
    p = params.set_index("asset").sort_index()
    ltv = p["ltv"].astype(float).copy()
    frozen = p["flag_fallback"].astype(bool) & (ltv == 0.0) & ~p.index.isin(list(skip))
    admitted = p["admitted_ltv"] if "admitted_ltv" in p else pd.Series(None, p.index)
    report = []
    for asset in p.index[frozen]:
        window = _admitted(admitted[asset], asset)
        basis = "admitted_ltv" if window else "lt_minus_gap"
        ltv[asset] = max(window) if window else float(p.at[asset, "lt"]) - ltv_gap
        report.append({"asset": str(asset), "published_ltv": 0.0,
                       "sizing_ltv": float(ltv[asset]), "basis": basis})
    return ltv, report


def _admitted(raw: Any, asset: str) -> list[float]:
    """The positive LTVs of a published ``admitted_ltv`` (JSON [[date, ltv], ...]; null → [])."""
    try:
        values = [v for _, v in parse_admitted(raw)]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"admitted_ltv of {asset} is not a JSON list of [date, ltv]: "
                         f"{raw!r} ({exc})") from None
    return [v for v in values if np.isfinite(v) and v > 0]


def stable_mix(stablecoins: list[str] | tuple[str, ...]) -> dict[str, float]:
    """The synthetic book's debt assets: the configured stablecoins, weighted by the default
    mix where it names them (USDC 0.6, USDT 0.3, DAI 0.1, renormalized), equally where it
    names none of them. Debt is never drawn in a coin the book's validation would refuse."""
    coins = list(dict.fromkeys(stablecoins))
    if not coins:
        raise ValueError("stress.stablecoins is empty: the synthetic book has no debt asset")
    known = [_STABLE_MIX.get(c, 0.0) for c in coins]
    total = sum(known)
    if math.isclose(total, 1.0):  # the whole default mix: its weights as they are
        return dict(zip(coins, known, strict=True))
    return {c: (w / total if total > 0 else 1 / len(coins)) for c, w in zip(coins, known,
                                                                            strict=True)}


def synthetic_book(prices: pd.Series, ltv: pd.Series, adv_usd: pd.Series,
                   cfg: StressBookConfig,
                   stablecoins: list[str] | tuple[str, ...] = tuple(_STABLE_MIX)) -> pd.DataFrame:
    """A seeded synthetic book in the documented schema (distributions: module docstring).

    Parameters
    ----------
    prices, ltv, adv_usd : pd.Series
        Today's price, max LTV (published, or :func:`sizing_ltv` for a frozen asset) and ADV
        per asset (same index). An asset with no ADV (0 or missing) is never drawn, unless
        none has any: then every asset is drawn alike.
    cfg : StressBookConfig
        Size, seed and distribution parameters.
    stablecoins
        The debt assets (``stress.stablecoins``), weighted by :func:`stable_mix`.
    """
    rng = np.random.default_rng(cfg.seed)
    assets = list(prices.index)
    n = cfg.accounts
    weight = adv_usd.reindex(assets).fillna(0.0).to_numpy(float)
    weight = weight / weight.sum() if weight.sum() > 0 else np.full(len(assets), 1 / len(assets))
    p_count = np.asarray(cfg.collaterals_p, float)
    # an account holds no more assets than have ADV: its k-th draw would be a −∞ key
    k_max = min(len(p_count), int((weight > 0).sum()))
    p_count = p_count[:k_max] / p_count[:k_max].sum()
    mix = stable_mix(stablecoins)
    value = np.exp(np.log(cfg.median_usd) + cfg.sigma_log * rng.standard_normal(n))  # (n,)
    counts = rng.choice(np.arange(1, k_max + 1), size=n, p=p_count)
    share = rng.beta(cfg.ltv_share_a, cfg.ltv_share_b, size=n)
    stable = rng.choice(list(mix), size=n, p=list(mix.values()))
    # Weighted draws without replacement, all accounts at once: the top-k of log w + Gumbel
    # noise is a sample of k items without replacement with probabilities ∝ w.
    with np.errstate(divide="ignore"):
        keys = np.log(weight) + rng.gumbel(size=(n, len(assets)))  # (n, K)
    order = np.argsort(-keys, axis=1)[:, :k_max]  # (n, k_max)
    taken = np.arange(k_max) < counts[:, None]  # (n, k_max)
    split = np.where(taken, rng.standard_exponential((n, k_max)), 0.0)  # Dirichlet(1) ...
    split /= split.sum(axis=1, keepdims=True)  # ... as normalized exponentials
    max_ltv = (split * ltv.to_numpy(float)[order]).sum(axis=1)  # value-weighted, (n,)
    opened = share * max_ltv
    acc, slot = np.nonzero(taken)
    asset_idx = order[acc, slot]
    usd = value[acc] * split[acc, slot]
    return pd.DataFrame({
        "account": np.char.add("acct", np.char.zfill(acc.astype(str), 6)),
        "collateral_asset": np.asarray(assets, dtype=object)[asset_idx],
        "collateral_amount": usd / prices.to_numpy(float)[asset_idx],
        "debt_asset": stable[acc], "debt_amount": (opened * value)[acc],
        "opened_ltv": opened[acc]}, columns=BOOK_COLUMNS)

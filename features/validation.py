"""Validation rules for raw market files, written as pandera schemas.

Every rule has a short id (``positive_prices``, ``sorted_timestamps``, ...). pandera runs the
checks lazily so that *all* failures are collected; :func:`validate_frame` then picks the one
on the earliest line of the file and raises :class:`DataValidationError` naming the file, the
line, the rule and the offending values. Nothing is ever repaired: a file passes or nothing
is loaded ("validate: clear error or quarantine, never silent", DESIGN.md).

Line numbers count the header as line 1, so data row ``i`` (0-based) is line ``i + 2``.

Timestamps must be written exactly as the data README documents them (:func:`parse_timestamps`):
``YYYY-MM-DDTHH:MM:SSZ`` (ISO 8601 UTC) everywhere, and for the daily kinds (crypto daily,
DVOL, macro) also the bare date ``YYYY-MM-DD``. A stamp that parses but is written otherwise
(no ``T``/``Z``, an offset such as ``+02:00``, a date in an hourly file) breaks rule
``timestamp_format``: guessing its zone would shift candles by hours without a word.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV = (*PRICE_COLUMNS, "volume")

# Tie-break when several rules fail on the same line: structural problems first, because
# they make the value rules meaningless (a duplicate stamp is reported before "unsorted").
RULE_ORDER = (
    "required_columns",
    "numeric_values",
    "timestamp_format",
    "parseable_timestamp",
    "finite_values",
    "unique_timestamps",
    "sorted_timestamps",
    "day_grid",
    "hour_grid",
    "positive_prices",
    "percent_units",
    "non_negative_volume",
    "high_ge_low",
    "high_ge_open_close",
    "low_le_open_close",
    "value_equals_close",
)
# A DVOL or macro file carrying both ``value`` (what the features read) and ``close`` states
# them equal (the data README's convention): a file where they differ (an adjusted close) is
# refused rather than read through one column. Relative tolerance of a CSV round trip.
VALUE_CLOSE_RTOL = 1e-9
TIMESTAMP_RULES = frozenset(
    {"timestamp_format", "parseable_timestamp", "unique_timestamps", "sorted_timestamps",
     "day_grid", "hour_grid"}
)


class DataValidationError(ValueError):
    """A raw market file broke a validation rule; nothing from it was loaded.

    Attributes
    ----------
    path : Path
        The offending file.
    row : int or None
        1-based line number in the file (header = line 1, first data row = line 2);
        ``None`` when the problem is not tied to a line (e.g. a missing file).
    rule : str
        Short rule id, one of :data:`RULE_ORDER`, ``asset_missing``,
        ``hourly_daily_consistency`` (:mod:`features.consistency`), ``only_future_rows``
        (:func:`features.loaders.load_market` without ``as_of``) or a file-level rule of
        :mod:`features.rawfiles` (``broken_link``, ``not_a_file``, ``duplicate_source``,
        ``file_too_large``, ``empty_file``, ``file_unreadable``, ``csv_format``,
        ``duplicate_columns``, ``reserved_name``, ``case_duplicate``).
    """

    def __init__(self, path: Path | str, row: int | None, rule: str, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.row = row
        self.rule = rule


ISO_UTC = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"
DATE_ONLY = r"\d{4}-\d{2}-\d{2}"


@dataclass(frozen=True)
class FileSpec:
    """Columns, timestamp grid and timestamp format expected of one kind of raw file."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    grid: str  # rule id of the timestamp grid: "day_grid" or "hour_grid"
    stamp_pattern: str = f"{ISO_UTC}|{DATE_ONLY}"  # regex the raw string must match in full
    stamp_format: str = "YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD (UTC)"
    # ``value`` in percent, at least this (rule percent_units): DVOL delivered as a decimal
    # (0.475 for 47.5%) passes every other rule and gives an implied variance 10^4 times too
    # small. Real DVOL has stayed within 20-200; a single appended value far above it (x100)
    # is the ingest's plausibility screen's, which holds it and keeps the rows before.
    percent_min: float | None = None


SPECS: dict[str, FileSpec] = {
    "daily": FileSpec(required=OHLCV, optional=(), grid="day_grid"),
    "hourly": FileSpec(required=OHLCV, optional=(), grid="hour_grid", stamp_pattern=ISO_UTC,
                       stamp_format="YYYY-MM-DDTHH:MM:SSZ (ISO 8601 UTC)"),
    "dvol": FileSpec(required=("value",), optional=PRICE_COLUMNS, grid="day_grid",
                     percent_min=1.0),
    "macro": FileSpec(required=("value",), optional=OHLCV, grid="day_grid"),
}


def parse_timestamps(raw: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    """Raw ``timestamp`` column to tz-naive UTC ``datetime64[ns]``, and where its format is wrong.

    Parameters
    ----------
    raw : Series
        Strings as read from CSV/Parquet, or datetimes (Parquet): a tz-aware datetime is an
        exact instant and is converted to UTC; a naive one is taken as UTC.
    kind : {"daily", "hourly", "dvol", "macro"}
        Selects the accepted string format (:attr:`FileSpec.stamp_pattern`).

    Returns
    -------
    parsed : Series
        NaT where the string is not in the accepted format or is not a valid date.
    wrong_format : Series of bool
        True where the string is a valid ISO 8601 date/time but not in the accepted format
        (rule ``timestamp_format``); rows that do not parse at all are left to rule
        ``parseable_timestamp``.
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw.dt.tz_convert("UTC").dt.tz_localize(None) if raw.dt.tz else raw
        return parsed.astype("datetime64[ns]"), pd.Series(False, index=raw.index)
    text = raw.astype("str").where(raw.notna())
    shape = text.str.fullmatch(SPECS[kind].stamp_pattern).fillna(False).astype(bool)
    lenient = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    parsed = lenient.where(shape).dt.tz_localize(None).astype("datetime64[ns]")
    return parsed, ~shape & lenient.notna()


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    # Wide checks also run when a column failed to coerce; compare numbers, not strings.
    return pd.to_numeric(frame[column], errors="coerce")


def _sorted(ts: pd.Series) -> pd.Series:
    prev = ts.shift()
    return (ts >= prev) | prev.isna()


def _unique(ts: pd.Series) -> pd.Series:
    return ~ts.duplicated() | ts.isna()


def _wide_check(name: str, test: Callable[[pd.DataFrame], pd.Series]) -> pa.Check:
    # Tests are written as "not (high < low)" so that a NaN passes here and is reported
    # once, by finite_values, instead of also as a range violation.
    return pa.Check(lambda frame: test(frame).fillna(True).astype(bool), name=name)


def _high_ge_open_close(cols: list[str]) -> Callable[[pd.DataFrame], pd.Series]:
    def test(frame: pd.DataFrame) -> pd.Series:
        top = pd.concat([_numeric(frame, c) for c in cols], axis=1).max(axis=1)
        return ~(_numeric(frame, "high") < top)

    return test


def _low_le_open_close(cols: list[str]) -> Callable[[pd.DataFrame], pd.Series]:
    def test(frame: pd.DataFrame) -> pd.Series:
        bottom = pd.concat([_numeric(frame, c) for c in cols], axis=1).min(axis=1)
        return ~(_numeric(frame, "low") > bottom)

    return test


def build_schema(
    spec: FileSpec, present: set[str], prices_positive: bool,
    wrong_format: pd.Series | None = None,
) -> pa.DataFrameSchema:
    """pandera schema for one file, given the columns its header actually has.

    Cross-column checks are added only when their columns exist, so a file without OHLC
    (e.g. a close-only macro series) is checked on ``value`` alone. ``wrong_format`` (from
    :func:`parse_timestamps`) adds rule ``timestamp_format``.
    """
    grid = (
        (lambda s: s == s.dt.normalize())
        if spec.grid == "day_grid"
        else (lambda s: s == s.dt.floor("h"))
    )
    columns = {
        "timestamp": pa.Column(
            nullable=False,  # NaT here means the string did not parse
            checks=[
                pa.Check(_unique, name="unique_timestamps"),
                pa.Check(_sorted, name="sorted_timestamps"),
                pa.Check(grid, name=spec.grid),
            ],
        )
    }
    for name in (*spec.required, *spec.optional):
        checks = [pa.Check(np.isfinite, name="finite_values")]
        if name == "volume":
            checks.append(pa.Check(lambda s: s >= 0, name="non_negative_volume"))
        elif prices_positive:
            checks.append(pa.Check(lambda s: s > 0, name="positive_prices"))
        if name == "value" and spec.percent_min is not None:
            checks.append(pa.Check(lambda s, lo=spec.percent_min: ~((s > 0) & (s < lo)),
                                   name="percent_units"))
        columns[name] = pa.Column(
            "float64", coerce=True, nullable=False, required=name in spec.required, checks=checks
        )
    frame_checks = []
    if wrong_format is not None:
        frame_checks.append(pa.Check(lambda f: ~wrong_format.reindex(f.index, fill_value=False),
                                     name="timestamp_format"))
    if {"high", "low"} <= present:
        frame_checks.append(
            _wide_check("high_ge_low", lambda f: ~(_numeric(f, "high") < _numeric(f, "low")))
        )
    open_close = [c for c in ("open", "close") if c in present]
    if open_close and "high" in present:
        frame_checks.append(_wide_check("high_ge_open_close", _high_ge_open_close(open_close)))
    if open_close and "low" in present:
        frame_checks.append(_wide_check("low_le_open_close", _low_le_open_close(open_close)))
    if {"value", "close"} <= present:
        frame_checks.append(_wide_check("value_equals_close", lambda f: ~value_differs(
            _numeric(f, "value"), _numeric(f, "close"))))
    return pa.DataFrameSchema(columns, checks=frame_checks, strict=False)


def value_differs(value: Any, close: Any) -> Any:
    """Where ``value`` and ``close`` differ beyond :data:`VALUE_CLOSE_RTOL` (False on NaN:
    reported once, by finite_values)."""
    return abs(value - close) > VALUE_CLOSE_RTOL * np.maximum(abs(close), 1.0)


def _rule_of(check: str, column: object) -> str:
    if check == "column_in_dataframe":
        return "required_columns"
    if check.startswith(("coerce_dtype", "dtype(")):
        return "numeric_values"
    if check == "not_nullable":
        return "parseable_timestamp" if column == "timestamp" else "finite_values"
    return check


def _first_failure(cases: pd.DataFrame) -> tuple[int | None, str, object]:
    """(line, rule, column) of the earliest failure; ties broken by :data:`RULE_ORDER`."""
    candidates = []
    for check, column, index in zip(cases["check"], cases["column"], cases["index"], strict=True):
        rule = _rule_of(str(check), column)
        if rule == "required_columns":
            line = 1
        elif index is None or pd.isna(index):
            continue  # a whole-frame error caused by another failure (e.g. a string column)
        else:
            line = int(index) + 2
        order = RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER)
        candidates.append((line, order, rule, column))
    if not candidates:
        first = cases.iloc[0]
        return None, str(first["check"]), first["column"]
    line, _, rule, column = min(candidates, key=lambda c: (c[0], c[1]))
    return line, rule, column


def _describe(
    rule: str, column: object, raw: pd.DataFrame, ts: pd.Series, i: int, spec: FileSpec
) -> str:
    """Human-readable account of why data row ``i`` broke ``rule``."""

    def val(name: str) -> object:
        return raw[name].iloc[i] if name in raw.columns else None

    stamp = val("timestamp")
    prev = raw["timestamp"].iloc[i - 1] if i > 0 and "timestamp" in raw.columns else None
    details: dict[str, Callable[[], str]] = {
        "numeric_values": lambda: f"{column} {val(str(column))!r} is not a number",
        "timestamp_format": lambda: (
            f"timestamp {stamp!r} is not written as {spec.stamp_format}; offsets, missing T/Z "
            "and other spellings are refused so that no stamp is read in the wrong zone"
        ),
        "parseable_timestamp": lambda: (
            f"timestamp {stamp!r} is not ISO 8601 UTC (expected e.g. 2017-08-17T00:00:00Z)"
        ),
        "finite_values": lambda: f"{column} {val(str(column))} is not a finite number",
        "unique_timestamps": lambda: (
            f"timestamp {stamp} already on line "
            f"{int(np.flatnonzero(ts.to_numpy() == ts.iloc[i])[0]) + 2}"
        ),
        "sorted_timestamps": lambda: (
            f"timestamp {stamp} is earlier than {prev} "
            f"on line {i + 1}; rows must be in ascending time order"
        ),
        "day_grid": lambda: f"timestamp {stamp} is not at 00:00:00 UTC",
        "hour_grid": lambda: f"timestamp {stamp} is not on the hour",
        "positive_prices": lambda: f"{column} {val(str(column))} <= 0",
        "percent_units": lambda: (
            f"{column} {val(str(column))} is not an annualised volatility in percent (DVOL is "
            f"quoted in %, e.g. 47.5; below {spec.percent_min:g} it is a decimal: multiply "
            "the file by 100)"),
        "non_negative_volume": lambda: f"volume {val('volume')} < 0",
        "high_ge_low": lambda: f"high {val('high')} < low {val('low')}",
        "high_ge_open_close": lambda: (
            f"high {val('high')} < max(open {val('open')}, close {val('close')})"
        ),
        "low_le_open_close": lambda: (
            f"low {val('low')} > min(open {val('open')}, close {val('close')})"
        ),
    }
    detail = details.get(rule, lambda: f"check {rule} on column {column}")()
    if rule in TIMESTAMP_RULES:  # the detail already quotes the stamp
        return detail
    return f"{detail} (timestamp {stamp})"


def validate_frame(
    frame: pd.DataFrame, raw: pd.DataFrame, path: Path, kind: str, prices_positive: bool = True,
    wrong_format: pd.Series | None = None,
) -> pd.DataFrame:
    """Validate a parsed raw file; return it with numeric columns as float64.

    Parameters
    ----------
    frame : DataFrame
        The file as read, with ``timestamp`` already parsed (NaT where it did not parse).
    raw : DataFrame
        The file as read, unparsed: used only to quote offending values.
    path : Path
        Source file, named in the error.
    kind : {"daily", "hourly", "dvol", "macro"}
        Which :data:`SPECS` entry applies.
    prices_positive : bool
        False for series that are not prices (a yield may be <= 0).
    wrong_format : Series of bool, optional
        Rows whose timestamp is in the wrong format (:func:`parse_timestamps`).

    Raises
    ------
    DataValidationError
        On the earliest failing line, with the rule id and offending values.
    """
    schema = build_schema(SPECS[kind], set(frame.columns), prices_positive, wrong_format)
    try:
        return schema.validate(frame, lazy=True)
    except SchemaErrors as err:
        line, rule, column = _first_failure(err.failure_cases)
    if rule == "required_columns":
        missing = [c for c in ("timestamp", *SPECS[kind].required) if c not in frame.columns]
        detail = f"missing column(s) {', '.join(missing)}; header is {', '.join(raw.columns)}"
        action = "Add the column(s) to the source file"
    elif line is None:
        detail, action = f"check {rule} on column {column} could not run", "Fix the source file"
    else:
        detail = _describe(rule, column, raw, frame["timestamp"], line - 2, SPECS[kind])
        action = "Fix or remove the row in the source file"
    where = f"line {line}" if line is not None else "file"
    message = f"{path} {where}: rule {rule} failed: {detail}. {action}; nothing was loaded."
    raise DataValidationError(path, line, rule, message)

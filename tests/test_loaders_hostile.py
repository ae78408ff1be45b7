"""Hostile data directories: every broken file is an error (or a flagged warning) naming it.

Each test builds a small slice of the real data (``write_slice``) and breaks one file the way
files break in practice: a header-only download, a dangling or looping symlink, stamps in
another spelling or zone, hours shifted against the days, a sparse multi-GB file, rows from the
future, an exception deep inside a reader.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

import features.loaders as loaders
import features.rawfiles as rawfiles
from features.freshness import freshness_report, stale_lines
from features.loaders import DataValidationError, discover_assets, load_market
from tests.conftest import MACRO, write_slice

START, END = "2022-01-01", "2022-03-31"  # 90 days, 2160 hours
OTHER_MACRO = sorted(set(MACRO) - {"SPX"})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_slice(tmp_path / "market", ["BTC", "ETH"], START, END)


def read(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt") as fh:
        return [line.rstrip("\n").split(",") for line in fh]


def write(path: Path, rows: list[list[str]]) -> None:
    with gzip.open(path, "wt") as fh:
        fh.write("".join(",".join(r) + "\n" for r in rows))


def header_only(path: Path) -> None:
    write(path, read(path)[:1])


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def dangling_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "moved-away" / path.name)


def link_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)  # points at itself


def directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


BREAKS: dict[str, tuple[Callable[[Path], None], str]] = {
    "header_only": (header_only, "empty_file"),
    "zero_bytes": (zero_bytes, "empty_file"),
    "dangling_link": (dangling_link, "broken_link"),
    "link_loop": (link_loop, "broken_link"),
    "directory": (directory, "not_a_file"),
}


# ---------------------------------------------------------------- the baseline is clean


def test_clean_slice_has_no_problem_or_warning(root: Path) -> None:
    market = load_market(root)
    assert sorted(market.daily) == sorted(market.hourly) == ["BTC", "ETH"]
    assert market.hourly_problems == {} and market.warnings == [] and market.failures == {}
    assert market.future_rows == {}
    assert len(market.hourly["BTC"]) == 90 * 24


def test_an_asset_that_never_had_hourly_data_is_not_a_problem(root: Path) -> None:
    (root / "crypto/hourly/ETH.csv.gz").unlink()
    market = load_market(root)
    assert "ETH" in market.daily and "ETH" not in market.hourly
    assert market.hourly_problems == {} and market.warnings == []


def test_an_hourly_file_without_daily_file_is_reported(root: Path) -> None:
    (root / "crypto/daily/ETH.csv.gz").unlink()
    market = load_market(root)
    assert sorted(market.daily) == ["BTC"] and sorted(market.hourly) == ["BTC"]
    assert len(market.warnings) == 1 and "hourly series ETH has no daily file" in market.warnings[0]
    assert load_market(root, assets=["BTC"]).warnings == []  # a requested subset: expected


def test_a_broken_dvol_link_fails_its_asset(root: Path) -> None:
    dangling_link(root / "iv/DVOL_ETH.csv.gz")
    with pytest.raises(DataValidationError, match="broken_link"):
        load_market(root)
    market = load_market(root, keep_going=True)
    assert sorted(market.daily) == ["BTC"] and sorted(market.dvol) == ["BTC"]
    assert "asset ETH not built" in market.failures["iv/DVOL_ETH.csv.gz"]


@pytest.mark.parametrize(("folder", "name", "failed"), [
    ("crypto/hourly", "BTC.csv.GZ", "crypto/hourly/BTC.csv.GZ"),  # else: BTC on the proxy
    ("crypto/daily", "ETH.CSV.gz", "crypto/daily/ETH.CSV.gz"),    # else: ETH gone
    ("iv", "dvol_ETH.csv.gz", "iv/dvol_ETH.csv.gz"),              # else: ETH on BTC's DVOL
    ("crypto/daily", "ETH.csv.bz2", "crypto/daily/ETH.csv.bz2"),  # a format not read
])
def test_a_data_file_the_loader_would_not_read_is_an_error_not_a_skip(
        root: Path, folder: str, name: str, failed: str) -> None:
    original = {"crypto/hourly": "BTC.csv.gz", "crypto/daily": "ETH.csv.gz",
                "iv": "DVOL_ETH.csv.gz"}[folder]
    source, path = root / folder / original, root / folder / name
    source.rename(path)
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert (exc.value.rule, exc.value.path) == ("unknown_format", path)
    assert f"{path} file: rule unknown_format failed: named like a data file" in str(exc.value)
    market = load_market(root, keep_going=True)
    asset = "BTC" if folder == "crypto/hourly" else "ETH"
    assert asset not in market.daily and "unknown_format" in market.failures[failed]
    # notes, archives and JSON beside the data are not data: never an error
    path.rename(source)
    (root / folder / "NOTES.md").write_text("provenance")
    (root / folder / "BTC.csv.gz.swp").write_bytes(b"")
    (root / folder / "meta.json").write_text("{}")
    (root / folder / "backup.tar.gz").write_bytes(b"")
    assert load_market(root).failures == {}


def test_a_copy_in_another_format_beside_a_data_file_is_two_sources(root: Path) -> None:
    """BTC.csv.bz2 beside BTC.csv.gz: the series has two sources whichever sorts first, and
    the readable one is not loaded as if the other were not there."""
    source = root / "crypto/daily/BTC.csv.gz"
    (root / "crypto/daily/BTC.tsv").write_bytes(b"")
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert exc.value.rule == "duplicate_source" and "BTC.csv.gz and BTC.tsv" in str(exc.value)
    market = load_market(root, keep_going=True)
    assert "BTC" not in market.daily and "ETH" in market.daily
    assert source.exists()  # nothing is moved or removed


# ---------------------------------------------------------------- daily: an error


@pytest.mark.parametrize("kind", list(BREAKS))
def test_broken_daily_file_is_an_error_naming_path_and_rule(root: Path, kind: str) -> None:
    breaker, rule = BREAKS[kind]
    path = root / "crypto/daily/ETH.csv.gz"
    breaker(path)
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert exc.value.rule == rule and exc.value.path == path
    assert f"{path} file: rule {rule} failed" in str(exc.value)
    market = load_market(root, keep_going=True)
    assert sorted(market.daily) == ["BTC"]
    message = market.failures["crypto/daily/ETH.csv.gz"]
    assert rule in message and "asset ETH not built" in message


@pytest.mark.parametrize("kind", ["dangling_link", "link_loop", "directory"])
def test_discover_assets_refuses_a_broken_daily_entry(root: Path, kind: str) -> None:
    breaker, rule = BREAKS[kind]
    breaker(root / "crypto/daily/ETH.csv.gz")
    with pytest.raises(DataValidationError, match=rule):
        discover_assets(root)


def test_a_link_loop_says_so(root: Path) -> None:
    link_loop(root / "crypto/daily/ETH.csv.gz")
    with pytest.raises(DataValidationError, match="is a symlink loop"):
        load_market(root)


# ---------------------------------------------------------------- hourly: a flagged warning


@pytest.mark.parametrize("keep_going", [False, True])
@pytest.mark.parametrize("kind", list(BREAKS))
def test_lost_hourly_file_is_flagged_not_silent(root: Path, kind: str, keep_going: bool) -> None:
    breaker, rule = BREAKS[kind]
    path = root / "crypto/hourly/BTC.csv.gz"
    breaker(path)
    market = load_market(root, keep_going=keep_going)
    # BTC is built (on the daily-range proxy), and says why its hourly data is missing.
    assert sorted(market.daily) == ["BTC", "ETH"] and sorted(market.hourly) == ["ETH"]
    assert list(market.hourly_problems) == ["BTC"]
    assert str(path) in market.hourly_problems["BTC"] and rule in market.hourly_problems["BTC"]
    assert len(market.warnings) == 1 and "Asset BTC falls back" in market.warnings[0]
    assert market.failures == {}
    report = freshness_report(market)
    flagged = report[report["problem"] != ""]
    assert flagged[["kind", "name", "stale"]].values.tolist() == [["hourly", "BTC", True]]
    assert rule in flagged["problem"].iloc[0]
    assert stale_lines(report) == []  # the loader's warning above says it, once


def test_corrupt_hourly_file_still_fails_its_asset(root: Path) -> None:
    path = root / "crypto/hourly/ETH.csv.gz"
    path.write_bytes(path.read_bytes()[:3000])  # truncated gzip: data present but unreadable
    with pytest.raises(DataValidationError, match="file_unreadable"):
        load_market(root)
    market = load_market(root, keep_going=True)
    assert sorted(market.daily) == ["BTC"]
    assert "file_unreadable" in market.hourly_problems["ETH"]


# ---------------------------------------------------------------- timestamp format


@pytest.mark.parametrize(
    "stamp",
    ["2022-01-01 05:00:00", "2022-01-01T05:00:00", "2022-01-01T07:00:00+02:00",
     "2022-01-01T05:00:00.000Z", "2022-01-01"],
)
def test_hourly_stamps_must_be_iso_utc(root: Path, stamp: str) -> None:
    path = root / "crypto/hourly/BTC.csv.gz"
    rows = read(path)
    rows[6][0] = stamp  # line 7; several of these mean 05:00 UTC and would fit the grid
    write(path, rows)
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert (exc.value.rule, exc.value.row, exc.value.path) == ("timestamp_format", 7, path)
    assert f"{path} line 7: rule timestamp_format failed: timestamp '{stamp}'" in str(exc.value)


def test_daily_files_may_give_dates(root: Path) -> None:
    path = root / "crypto/daily/BTC.csv.gz"
    before = load_market(root).daily["BTC"]
    rows = read(path)
    write(path, rows[:1] + [[r[0][:10], *r[1:]] for r in rows[1:]])
    pd.testing.assert_frame_equal(load_market(root).daily["BTC"], before)


@pytest.mark.parametrize("stamp", ["2022-01-05T00:00:00+00:00", "2022-01-05 00:00:00"])
def test_daily_stamps_in_another_spelling_are_refused(root: Path, stamp: str) -> None:
    path = root / "crypto/daily/BTC.csv.gz"
    rows = read(path)
    assert rows[5][0] == "2022-01-05T00:00:00Z"
    rows[5][0] = stamp
    write(path, rows)
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert (exc.value.rule, exc.value.row) == ("timestamp_format", 6)


# ---------------------------------------------------------------- hourly vs daily


def shift_hours(path: Path, hours: int) -> None:
    rows = read(path)
    stamps = pd.to_datetime([r[0] for r in rows[1:]]) + pd.Timedelta(hours=hours)
    write(path, rows[:1] + [[s, *r[1:]] for s, r in
                            zip(stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), rows[1:], strict=True)])


def test_hourly_file_shifted_by_three_hours_is_an_error(root: Path) -> None:
    path = root / "crypto/hourly/BTC.csv.gz"
    original = read(path)
    shift_hours(path, 3)
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert (exc.value.rule, exc.value.path) == ("hourly_daily_consistency", path)
    # First day: the 23:00 candle is really 20:00's, so its close is 20:00's close.
    close_2000 = float(original[21][4])
    assert original[21][0] == "2022-01-01T20:00:00Z"
    daily_close = float(read(root / "crypto/daily/BTC.csv.gz")[1][4])
    message = str(exc.value)
    assert "first 2022-01-01 (line 2): close" in message
    assert f"close {close_2000:g} from the hours vs {daily_close:g} daily" in message
    days = int(message.split(" of 90 UTC days")[0].rsplit(" ", 1)[1])
    assert days > 80  # systematic, not noise
    market = load_market(root, keep_going=True)
    assert sorted(market.daily) == ["ETH"]
    assert "hourly_daily_consistency" in market.failures["crypto/hourly/BTC.csv.gz"]


def test_one_glitch_day_is_a_warning_and_the_data_is_kept(root: Path) -> None:
    path = root / "crypto/hourly/ETH.csv.gz"
    rows = read(path)
    line = 24 * 40 + 13 + 2  # 2022-02-10T13:00 (header is line 1)
    assert rows[line - 1][0] == "2022-02-10T13:00:00Z"
    high = float(rows[line - 1][2]) * 1.02  # above the day's high
    rows[line - 1][2] = f"{high:.2f}"
    write(path, rows)
    market = load_market(root)
    assert market.hourly["ETH"].loc["2022-02-10 13:00", "high"] == float(f"{high:.2f}")
    assert market.hourly_problems == {} and len(market.warnings) == 1
    assert "1 of 90 UTC days" in market.warnings[0]
    assert "first 2022-02-10 (line 962): high" in market.warnings[0]


def _raise_high(rows: list[list[str]], stamp: str) -> int:
    """Lift the high of the candle stamped ``stamp`` 2% over the day's: one failing day.
    Returns its line (the header is line 1)."""
    line = next(i for i, r in enumerate(rows) if r[0] == stamp) + 1
    rows[line - 1][2] = f"{float(rows[line - 1][2]) * 1.02:.2f}"
    return line


def test_a_feed_gone_wrong_at_its_end_is_an_error_though_under_five_percent(
        root: Path) -> None:
    """Two failing days among the last 30 are an error although 2 of 90 days is 2.2% of the
    file (appended days are the ones a serve reads); one is a warning that names it as the
    latest failing day beside the first."""
    path = root / "crypto/hourly/ETH.csv.gz"
    rows = read(path)
    last = rows[-1][0][:10]
    _raise_high(rows, "2022-02-10T13:00:00Z")
    line = _raise_high(rows, f"{last}T05:00:00Z")
    write(path, rows)
    market = load_market(root)
    assert len(market.warnings) == 1 and "2 of 90 UTC days" in market.warnings[0]
    assert "first 2022-02-10 (line 962): high" in market.warnings[0]
    assert f"latest {last} (line {line - 5}): high" in market.warnings[0]
    earlier = (pd.Timestamp(last) - pd.Timedelta(days=10)).strftime("%Y-%m-%d")
    _raise_high(rows, f"{earlier}T09:00:00Z")
    write(path, rows)
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert (exc.value.rule, exc.value.path) == ("hourly_daily_consistency", path)
    assert f"2 of the last 30 days (from {earlier}" in str(exc.value)
    market = load_market(root, keep_going=True)
    assert "hourly_daily_consistency" in market.failures["crypto/hourly/ETH.csv.gz"]


# ---------------------------------------------------------------- size guard


def test_sparse_5gb_file_is_refused_before_reading(root: Path) -> None:
    (root / "crypto/daily/ETH.csv.gz").unlink()
    big = root / "crypto/daily/ETH.csv"
    with open(big, "wb") as fh:
        fh.truncate(5 * 1024**3)  # sparse: 5 GB apparent size, nothing written
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert (exc.value.rule, exc.value.path) == ("file_too_large", big)
    assert "5,368.7 MB on disk exceeds data.max_file_mb = 100 MB" in str(exc.value)
    market = load_market(root, keep_going=True)
    assert sorted(market.daily) == ["BTC"]
    assert "file_too_large" in market.failures["crypto/daily/ETH.csv"]


def test_size_guard_also_caps_decompressed_size(root: Path) -> None:
    path = root / "crypto/hourly/BTC.csv.gz"
    assert path.stat().st_size < 60_000  # 2160 rows: under 0.06 MB compressed, over 0.1 MB raw
    with pytest.raises(DataValidationError) as exc:
        load_market(root, max_file_mb=0.1)
    assert (exc.value.rule, exc.value.path) == ("file_too_large", path)
    assert "decompressed" in str(exc.value)
    assert sorted(load_market(root, max_file_mb=1).hourly) == ["BTC", "ETH"]


def test_size_guard_reads_parquet_metadata(root: Path) -> None:
    source = root / "crypto/hourly/BTC.csv.gz"
    frame = pd.read_csv(source)
    source.unlink()
    path = source.with_name("BTC.parquet")
    frame.to_parquet(path)
    assert path.stat().st_size < 100_000  # compressed on disk, ~0.2 MB as columns
    with pytest.raises(DataValidationError) as exc:
        load_market(root, max_file_mb=0.1)
    assert (exc.value.rule, exc.value.path) == ("file_too_large", path)
    assert "uncompressed" in str(exc.value)
    assert len(load_market(root).hourly["BTC"]) == 90 * 24


# ---------------------------------------------------------------- future rows


def test_rows_after_now_are_ignored_with_a_warning(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loaders, "_utcnow", lambda: pd.Timestamp("2022-02-15 12:30"))
    market = load_market(root)
    # without an as-of, the UTC days complete now: 2022-02-15's candles are still open (its
    # daily row a partial range), so they are cut as an as-of of 02-14 would cut them
    assert market.daily["BTC"].index[-1] == pd.Timestamp("2022-02-14")
    assert market.hourly["BTC"].index[-1] == pd.Timestamp("2022-02-14 23:00")
    assert market.macro["SPX"].index[-1] <= pd.Timestamp("2022-02-14")
    same = load_market(root, as_of=pd.Timestamp("2022-02-14").date())
    assert market.daily["BTC"].equals(same.daily["BTC"])
    assert market.hourly["BTC"].equals(same.hourly["BTC"])
    assert market.future_rows["crypto/hourly/BTC.csv.gz"] == pd.Timestamp("2022-02-15 13:00")
    hourly = [w for w in market.warnings if "crypto/hourly/BTC.csv.gz" in w]
    assert len(hourly) == 1
    # 2022-02-15T13:00 is data row 45 * 24 + 13 = 1093 (line 1095); 2160 - 1093 rows dropped.
    assert "line 1095: 1067 row(s) dated after now (2022-02-15T12:30:00Z UTC)" in hourly[0]
    assert "first stamped 2022-02-15T13:00:00Z" in hourly[0]
    # An explicit as_of is a point-in-time cut: no "future" from the clock.
    cut = load_market(root, as_of=pd.Timestamp("2022-03-01").date())
    assert cut.future_rows == {} and cut.warnings == []
    assert cut.daily["BTC"].index[-1] == pd.Timestamp("2022-03-01")


def test_rows_dated_far_ahead_are_never_used(root: Path) -> None:
    path = root / "crypto/daily/BTC.csv.gz"
    rows = read(path)
    write(path, [*rows, ["2100-01-01T00:00:00Z", *rows[-1][1:]]])
    market = load_market(root)
    assert market.daily["BTC"].index[-1] == pd.Timestamp(END)
    assert market.future_rows == {"crypto/daily/BTC.csv.gz": pd.Timestamp("2100-01-01")}
    assert "2100-01-01T00:00:00Z" in market.warnings[0]


def test_a_file_with_only_future_rows_is_lost(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaders, "_utcnow", lambda: pd.Timestamp("2022-04-01"))
    shift_hours(root / "crypto/hourly/ETH.csv.gz", 24 * 100)  # 2022-04-11 onwards
    market = load_market(root)
    assert sorted(market.daily) == ["BTC", "ETH"] and sorted(market.hourly) == ["BTC"]
    assert "only_future_rows" in market.hourly_problems["ETH"]
    assert "2022-04-11T00:00:00Z" in market.hourly_problems["ETH"]
    shift_hours(root / "crypto/daily/ETH.csv.gz", 24 * 100)
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert (exc.value.rule, exc.value.row) == ("only_future_rows", 2)


# ---------------------------------------------------------------- low-level errors


@pytest.mark.parametrize("error", [MemoryError(), OSError(5, "Input/output error")])
def test_an_error_while_reading_one_file_is_that_files_error(
    root: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    real = rawfiles.gzip.open

    def flaky(source: Path, *args: object, **kwargs: object) -> object:
        if Path(source).name == "ETH.csv.gz" and Path(source).parent.name == "daily":
            raise error
        return real(source, *args, **kwargs)

    monkeypatch.setattr(rawfiles.gzip, "open", flaky)
    with pytest.raises(DataValidationError) as exc:
        load_market(root)
    assert exc.value.rule == "file_unreadable" and "ETH" in exc.value.path.name
    assert type(error).__name__ in str(exc.value)
    market = load_market(root, keep_going=True)
    assert sorted(market.daily) == ["BTC"]
    assert "MemoryError" in str(market.failures) or "OSError" in str(market.failures)


def test_memory_error_while_validating_is_that_files_error(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = loaders.validate_frame

    def exhausted(frame, raw, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if path.name == "SPX.csv.gz":
            raise MemoryError
        return real(frame, raw, path, *args, **kwargs)

    monkeypatch.setattr(loaders, "validate_frame", exhausted)
    market = load_market(root, keep_going=True)
    assert sorted(market.daily) == ["BTC", "ETH"] and sorted(market.macro) == OTHER_MACRO
    assert "MemoryError" in market.failures["macro/SPX.csv.gz"]


def test_undecodable_bytes_name_the_file(root: Path) -> None:
    path = root / "macro/SPX.csv"
    (root / "macro/SPX.csv.gz").unlink()
    path.write_bytes(b"timestamp,value\n2022-01-03,4796.56\n2022-01-04,\xff\xfe\n")
    market = load_market(root, keep_going=True)
    assert "macro/SPX.csv" in market.failures and sorted(market.macro) == OTHER_MACRO
    assert os.path.basename(str(path)) in market.failures["macro/SPX.csv"]

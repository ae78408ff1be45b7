"""The rows appended to many cached files are parsed in one call, with the same answer as file
by file: a bad file only loses the batch for itself, and a file changed after the batch was
parsed is decided again (:meth:`features.candle_cache.CandleCache.prepare`)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_slice

from features import candle_tail, loaders
from features.candle_cache import CandleCache
from features.loaders import DataValidationError, load_market

CUT = "2021-05-01"


def _text(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BTC and ETH (daily, hourly, DVOL) and SPX, spring 2021, as plain CSV (a feed appends)."""
    root = write_slice(tmp_path_factory.mktemp("src"), ["BTC", "ETH"], "2021-03-24",
                       "2021-05-15", macro=("SPX",))
    for gz in list(root.rglob("*.csv.gz")):
        gz.with_name(gz.name[:-3]).write_bytes(_text(gz))
        gz.unlink()
    return root


def _held_back(src: Path, dest: Path) -> dict[Path, bytes]:
    """``src`` copied to ``dest`` with the rows stamped from :data:`CUT` on held back."""
    rest = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dest / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_bytes().splitlines(keepends=True)
        keep = [lines[0]] + [x for x in lines[1:] if x[:19].decode() < CUT]
        out.write_bytes(b"".join(keep))
        rest[out] = b"".join(lines[len(keep):])
    return rest


def _add(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def _hourly(source: Path) -> tuple[bytes, list[pd.DataFrame], list[bytes]]:
    """Header, cached part and 30 new lines of BTC's and ETH's hourly files."""
    cached, tails = [], []
    for asset in ("BTC", "ETH"):
        lines = (source / "crypto" / "hourly" / f"{asset}.csv").read_bytes().splitlines(
            keepends=True)
        cached.append(loaders.load_hourly(source / "crypto" / "hourly" / f"{asset}.csv").iloc[
            :len(lines) - 31])
        tails.append(b"".join(lines[-30:]))
    return lines[0], cached, tails


def _blocks(header: bytes, cached: list[pd.DataFrame], tails: list[bytes]
            ) -> list[np.ndarray | None]:
    return candle_tail.appended_blocks(
        header, tails, [int(c.index[-1].value) for c in cached],
        [str(c) for c in cached[0].columns], "hourly", True)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the CSV parses of :func:`features.candle_tail.appended_blocks`."""
    calls: list[int] = []
    real = candle_tail._checked

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(candle_tail, "_checked", counted)
    return calls


def _alone(header: bytes, cached: pd.DataFrame, tail: bytes) -> pd.DataFrame | None:
    return candle_tail.appended_rows(header, tail, cached, "hourly", True)


def test_one_parse_of_several_files_equals_each_file_alone(source: Path,
                                                           parses: list[int]) -> None:
    header, cached, tails = _hourly(source)
    # ETH's new hours start before BTC's last cached one would allow: the boundary rule is
    # each file's own last cached stamp
    cached[0] = cached[0].iloc[:-200]
    tails[0] = tails[0].rstrip(b"\n")  # a last line without its newline
    blocks = _blocks(header, cached, tails)
    assert len(parses) == 1
    for block, c, tail in zip(blocks, cached, tails, strict=True):
        alone = _alone(header, c, tail)
        assert block is not None and alone is not None and block.shape == (6, 30)
        assert np.array_equal(block[0], alone.index.asi8)
        assert np.array_equal(block[1:].view("float64"), alone.to_numpy().T)


@pytest.mark.parametrize("defect", [
    lambda t: t.replace(b"T", b" ", 1),  # timestamp_format
    lambda t: t.replace(b",", b",-", 1),  # positive_prices
    lambda t: b"\n" + t,  # an empty line
    lambda t: t.splitlines(keepends=True)[1] + t,  # sorted_timestamps
    lambda t: t + t.splitlines(keepends=True)[-1],  # unique_timestamps
])
def test_a_bad_file_fails_alone_in_the_joined_parse(source: Path, defect,  # type: ignore[no-untyped-def]
                                                    parses: list[int]) -> None:
    header, cached, tails = _hourly(source)
    for bad in (0, 1):
        edited = [defect(t) if i == bad else t for i, t in enumerate(tails)]
        parses.clear()
        blocks = _blocks(header, cached, edited)
        assert len(parses) == 1  # the other file was not parsed again
        assert blocks[bad] is None and _alone(header, cached[bad], edited[bad]) is None
        good = blocks[1 - bad]
        assert good is not None and np.array_equal(
            good[0], _alone(header, cached[1 - bad], tails[1 - bad]).index.asi8)  # type: ignore[union-attr]


def test_lines_that_cannot_be_split_apart_are_parsed_alone(source: Path,
                                                           parses: list[int]) -> None:
    header, cached, tails = _hourly(source)
    quoted = [b'"' + t[:19] + b'"' + t[19:] for t in tails]  # a quoted stamp: legal CSV
    ragged = [tails[0], tails[1].replace(b"\n", b",1\n", 1)]  # a row with a field too many
    for edited, calls in ((quoted, 2), (ragged, 3)):  # ragged: the joined parse fails first
        parses.clear()
        blocks = _blocks(header, cached, edited)
        assert len(parses) == calls
        for block, c, tail in zip(blocks, cached, edited, strict=True):
            alone = _alone(header, c, tail)
            assert (block is None) == (alone is None)
            assert block is None or np.array_equal(block[0], alone.index.asi8)  # type: ignore[union-attr]
    assert _blocks(header, cached, ragged)[0] is not None  # the other file still passes


def test_a_daily_append_is_parsed_in_one_go_and_equals_the_uncached_load(
        source: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    rest = _held_back(source, data)
    load_market(data, cache=tmp_path / "cache")
    for path, lines in rest.items():
        _add(path, lines)
    cache = CandleCache(tmp_path / "cache")
    got = load_market(data, cache=cache)
    plain = load_market(data)
    for kind in ("daily", "hourly", "dvol", "macro"):
        assert list(getattr(got, kind)) == list(getattr(plain, kind))
        for name, frame in getattr(got, kind).items():
            assert frame.equals(getattr(plain, kind)[name])
    assert got.warnings == plain.warnings
    assert cache.stats["prepared"] == cache.stats["append"] == 7


def test_a_file_changed_after_the_joined_parse_is_decided_again(source: Path,
                                                                tmp_path: Path) -> None:
    data = tmp_path / "data"
    rest = _held_back(source, data)
    load_market(data, cache=tmp_path / "cache")
    for path, lines in rest.items():
        _add(path, lines)
    path = data / "crypto" / "hourly" / "ETH.csv"
    cache = CandleCache(tmp_path / "cache")
    prepare = cache.prepare

    def then_spoil(files, max_file_mb, receipts):  # type: ignore[no-untyped-def]
        prepare(files, max_file_mb, receipts)  # ETH parsed clean; now a bad row arrives
        _add(path, b"2021-05-20T01:00:00Z,1,1,2,1,1\n")  # high under low

    cache.prepare = then_spoil  # type: ignore[method-assign]
    with pytest.raises(DataValidationError) as cached:
        load_market(data, cache=cache)
    with pytest.raises(DataValidationError) as plain:
        load_market(data)
    assert cached.value.rule == plain.value.rule
    assert plain.value.rule in ("high_ge_low", "low_le_open_close")
    assert str(cached.value) == str(plain.value)
    assert (cached.value.path, cached.value.row) == (path, plain.value.row)
    # the files loaded before it (2 DVOL, BTC daily and hourly, ETH daily) used the joined
    # parse; ETH's hourly rows, parsed there too, were not used: the file had changed since
    assert cache.stats["prepared"] == cache.stats["append"] == 5

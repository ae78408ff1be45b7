"""Shared fixtures: small slices of the real embedded data, and isolated output dirs."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from configs.schema import Config
from features.loaders import MarketData, load_market
from features.macro import MACRO_SERIES

REPO = Path(__file__).resolve().parents[1]
MARKET = REPO / "data" / "market"
MACRO = MACRO_SERIES  # every macro series the features read


def write_slice(
    dest: Path,
    assets: list[str],
    start: str,
    end: str,
    macro: tuple[str, ...] = MACRO,
) -> Path:
    """Copy the embedded data for ``assets`` (+ DVOL and ``macro``) between two dates to ``dest``.

    Rows are only selected by date, never altered, so the slice is real data. By default every
    macro series the features read: a complete directory, which loads without a warning.
    """

    def copy(src: Path) -> None:
        frame = pd.read_csv(src, dtype={"timestamp": str})
        stamp = frame["timestamp"].str.slice(0, 10)
        frame = frame[(stamp >= start) & (stamp <= end)]
        out = dest / src.relative_to(MARKET)
        out.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(out, "wt") as fh:
            frame.to_csv(fh, index=False)

    for asset in assets:
        for kind in ("daily", "hourly"):
            src = MARKET / "crypto" / kind / f"{asset}.csv.gz"
            if src.exists():
                copy(src)
        iv = MARKET / "iv" / f"DVOL_{asset}.csv.gz"
        if iv.exists():
            copy(iv)
    for name in macro:
        copy(MARKET / "macro" / f"{name}.csv.gz")
    return dest


@pytest.fixture(scope="session")
def embedded_market() -> MarketData:
    """The full embedded dataset, loaded once per session."""
    return load_market(MARKET)


@pytest.fixture
def isolated_config(tmp_path: Path) -> Config:
    """Default config with outputs and MLflow store under ``tmp_path``."""
    return Config().with_overrides({
        "paths.outputs_dir": str(tmp_path / "outputs"),
        "paths.mlruns_dir": str(tmp_path / "mlruns"),
    })


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch):
    """The local fake providers (Binance, Deribit, FRED) the ingestion tests talk to; a module
    that needs more (TLS, endpoint variables) defines its own ``api``."""
    from tests.replay.harness import serving  # the harness imports this module

    with serving(monkeypatch) as apis:
        yield apis

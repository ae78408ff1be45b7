"""Feature store: the panel as Parquet under ``outputs/features/``, keyed by a fingerprint.

The fingerprint hashes everything the panel depends on: every input file's bytes (with its
path relative to the data directory), the feature config, the feature code's source and the
as-of date. Same fingerprint ⇒ same panel, so a rerun with unchanged inputs reads the stored
file instead of rebuilding. Writes go to a temporary file that is renamed into place, so a
reader never sees half a panel.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from features.build import build_panel
from features.loaders import MarketData
from pipelines.config import FeaturesConfig

_FEATURE_CODE = sorted(Path(__file__).parent.glob("*.py"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(market: MarketData, cfg: FeaturesConfig, as_of: dt.date | None) -> str:
    """sha256 over input files, feature config, feature code and as-of date."""
    digest = hashlib.sha256()
    for path in sorted(market.files):
        rel = Path(path).resolve().relative_to(Path(market.data_dir).resolve())
        digest.update(f"{rel}:{_sha256(Path(path))}\n".encode())
    digest.update(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode())
    for src in _FEATURE_CODE:
        digest.update(f"{src.name}:{_sha256(src)}\n".encode())
    digest.update(f"as_of={as_of}".encode())
    return digest.hexdigest()


def load_or_build(
    market: MarketData, cfg: FeaturesConfig, root: Path, as_of: dt.date | None = None
) -> tuple[pd.DataFrame, str, bool]:
    """The panel for ``market`` (read from the store when present). Returns (panel, fp, reused)."""
    fp = fingerprint(market, cfg, as_of)
    path = Path(root) / f"panel-{fp[:16]}.parquet"
    if path.is_file():
        return pd.read_parquet(path), fp, True
    panel = build_panel(market, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    panel.to_parquet(tmp)
    os.replace(tmp, path)
    meta = {"fingerprint": fp, "rows": len(panel), "assets": sorted(market.daily),
            "as_of": str(as_of) if as_of else None, "columns": list(panel.columns)}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return panel, fp, False

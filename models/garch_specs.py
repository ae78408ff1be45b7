"""The GARCH family's specifications, one per alias: without importing ``arch``, so that the
model registry (:mod:`models.registry`) lists the aliases and a serve of a non-GARCH champion
never pays arch's imports (~0.6 s of a fresh ``volmargin serve``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GARCH_SPECS", "GarchSpec"]


@dataclass(frozen=True)
class GarchSpec:
    vol: Literal["GARCH", "EGARCH"]
    p: int
    o: int
    q: int
    dist: Literal["normal", "t", "skewt"]


GARCH_SPECS: dict[str, GarchSpec] = {
    "garch11_t": GarchSpec("GARCH", 1, 0, 1, "t"),
    "garch11_skewt": GarchSpec("GARCH", 1, 0, 1, "skewt"),
    "gjr_t": GarchSpec("GARCH", 1, 1, 1, "t"),
    "gjr_skewt": GarchSpec("GARCH", 1, 1, 1, "skewt"),
    "egarch_t": GarchSpec("EGARCH", 1, 1, 1, "t"),
}

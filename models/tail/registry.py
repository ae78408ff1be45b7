"""The one registry of tail forecasters: alias → factory(tail config, update interval,
forecaster settings).

Each alias reads its own section of :class:`configs.schema.TailConfig` (same name); a model
wrapping a variance forecaster (FHS, EVT, ``tail_nn``'s scale) builds it from the run's
``models`` settings (:class:`configs.schema.ModelsConfig`; defaults where none is given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from configs.schema import ModelsConfig, TailConfig
from models.tail.base import TailForecaster
from models.tail.classical import EvtTail, FhsTail, HsTail

TailFactory = Callable[[TailConfig, int, ModelsConfig | None], TailForecaster]


def _qr_har(cfg: TailConfig, interval_days: int, _: ModelsConfig | None) -> TailForecaster:
    from models.tail.quantile import QuantileTail  # statsmodels only when asked for

    return QuantileTail(cfg.qr_har, "qr_har", interval_days)


def _caviar(cfg: TailConfig, interval_days: int, _: ModelsConfig | None) -> TailForecaster:
    from models.tail.caviar import CaviarTail

    return CaviarTail(cfg.caviar, "caviar", interval_days)


def _tail_nn(cfg: TailConfig, interval_days: int, models: ModelsConfig | None
             ) -> TailForecaster:
    from models.tail.network import TailNetForecaster  # torch only when asked for

    return TailNetForecaster(cfg.tail_nn, "tail_nn", interval_days,
                             getattr(cfg, cfg.tail_nn.scale_model), models)


TAIL_REGISTRY: dict[str, TailFactory] = {
    "fhs_ewma": lambda cfg, u, m: FhsTail(cfg.fhs_ewma, "fhs_ewma", u, m),
    "fhs_garch": lambda cfg, u, m: FhsTail(cfg.fhs_garch, "fhs_garch", u, m),
    "evt_garch": lambda cfg, u, m: EvtTail(cfg.evt_garch, "evt_garch", u, m),
    "hs": lambda cfg, u, _: HsTail(cfg.hs, "hs", u),
    "qr_har": _qr_har,
    "caviar": _caviar,
    "tail_nn": _tail_nn,
}


def build_tail_forecaster(alias: str, cfg: TailConfig, interval_days: int = 1,
                          models: ModelsConfig | None = None) -> TailForecaster:
    try:
        factory = TAIL_REGISTRY[alias]
    except KeyError:
        raise KeyError(f"unknown tail forecaster {alias!r} in tail.enabled; registered: "
                       f"{sorted(TAIL_REGISTRY)}") from None
    return factory(cfg, int(interval_days), models)


def tail_forecaster_from_state(state: dict[str, Any]) -> TailForecaster:
    """Rebuild a fitted tail forecaster from its JSON state (no pickle)."""
    alias = state["alias"]
    if alias not in TAIL_REGISTRY:
        raise KeyError(f"state names unknown tail forecaster {alias!r}; registered: "
                       f"{sorted(TAIL_REGISTRY)}")
    model = build_tail_forecaster(alias, TailConfig(), state.get("interval_days", 1))
    return type(model).from_state(state)

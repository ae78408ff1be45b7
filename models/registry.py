"""The one registry of forecasters: alias → factory(config, horizons). The CLI and the pipeline
build models only through :func:`build_forecaster` / :func:`forecaster_from_state`.

Each alias reads its own section of :class:`configs.schema.ModelsConfig` (same name); the
GARCH family is expanded from its spec table, one entry per row of ``GARCH_SPECS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from configs.schema import ModelsConfig
from models.base import Forecaster
from models.garch_specs import GARCH_SPECS
from models.har import HAR_SPECS, HarForecaster

Factory = Callable[[ModelsConfig, Sequence[int]], Forecaster]

# Each model's module is imported when that model is built: a serve builds only its champion,
# and arch (GARCH) and scipy.signal (EWMA) took ~1.1 s of a fresh serve's imports. A served
# EWMA or symmetric GARCH imports neither any more (models.ewma, models.garch_filter); GJR,
# EGARCH and every fit still import arch when they run.


def _garch(alias: str) -> Factory:
    def build(cfg: ModelsConfig, horizons: Sequence[int]) -> Forecaster:
        from models.garch import GarchForecaster

        return GarchForecaster(getattr(cfg, alias), alias=alias)

    return build


def _har(alias: str) -> Factory:
    return lambda cfg, horizons: HarForecaster(getattr(cfg, alias), horizons, alias=alias)


def _ewma94(cfg: ModelsConfig, horizons: Sequence[int]) -> Forecaster:
    from models.ewma import EwmaForecaster

    return EwmaForecaster(cfg.ewma94, alias="ewma94")


def _gbm_sklearn(cfg: ModelsConfig, horizons: Sequence[int]) -> Forecaster:
    from models.gbm import GbmForecaster  # scikit-learn's ensemble only when asked for

    return GbmForecaster(cfg.gbm_sklearn, horizons)


def _mlp_har(cfg: ModelsConfig, horizons: Sequence[int]) -> Forecaster:
    from models.mlp_har import MlpHarForecaster  # torch is imported only when asked for

    return MlpHarForecaster(cfg.mlp_har, horizons=horizons)


def _harx_mlp(cfg: ModelsConfig, horizons: Sequence[int]) -> Forecaster:
    from models.harx_mlp import HarxMlpForecaster  # torch is imported only when asked for

    return HarxMlpForecaster(cfg.harx_mlp, horizons=horizons)


REGISTRY: dict[str, Factory] = {
    **{alias: _garch(alias) for alias in GARCH_SPECS},
    "ewma94": _ewma94,
    **{alias: _har(alias) for alias in HAR_SPECS},
    "gbm_sklearn": _gbm_sklearn,
    "mlp_har": _mlp_har,
    "harx_mlp": _harx_mlp,
}


def fits_per_asset(alias: str) -> bool:
    """The built forecaster's ``per_asset`` (each asset fitted on its own: the walk-forward
    may run its assets apart), known without building it. Building a neural forecaster
    imports torch and Lightning (~7 s of CPU), which a process that only hands the fits to a
    cluster's workers never needs. A test holds this to every registered model's attribute."""
    if alias not in REGISTRY:
        build_forecaster(alias, ModelsConfig(), [1])  # the registry's own error
    if alias in HAR_SPECS:
        return not HAR_SPECS[alias].pooled
    return alias in GARCH_SPECS or alias == "ewma94"


def build_forecaster(alias: str, cfg: ModelsConfig, horizons: Sequence[int]) -> Forecaster:
    try:
        factory = REGISTRY[alias]
    except KeyError:
        raise KeyError(
            f"unknown forecaster {alias!r} in models.enabled; registered: {sorted(REGISTRY)}"
        ) from None
    return factory(cfg, horizons)


def forecaster_from_state(state: dict[str, Any]) -> Forecaster:
    """Rebuild a fitted forecaster from its JSON state (no pickle)."""
    alias = state["alias"]
    if alias not in REGISTRY:
        raise KeyError(f"state names unknown forecaster {alias!r}; registered: {sorted(REGISTRY)}")
    model = build_forecaster(alias, ModelsConfig(), horizons=state.get("horizons", [1]))
    return type(model).from_state(state)

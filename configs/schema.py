"""Configuration: YAML in ``configs/`` validated by pydantic with ``extra="forbid"``.

The config says *what* (windows, levels, schedules); the code says *how*. Every leaf can be
overridden from the environment as ``VOLMARGIN__<SECTION>__<KEY>=value`` (YAML syntax for the
value, so ``[1, 7]`` and ``null`` work). A wrong key or type fails with a message naming the
key path and the file it came from.

The sections live beside this module — ``data.py`` (paths, data, features), ``forecasting.py``
(walk-forward, forecasters, selection), ``policy.py`` (policy, gate, registry, serving),
``risk.py`` (evaluation protocol, stress, tail models, ingestion) — and every section class is
importable from here; this module composes them into :class:`Config`, reads YAML (duplicate
keys refused) and environment overrides, and checks the rules that span sections.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from configs.base import ConfigError, _Strict
from configs.data import (
    DataConfig,
    FeaturesConfig,
    PathsConfig,
)
from configs.forecasting import (
    BacktestConfig,
    EwmaConfig,
    GarchConfig,
    GbmConfig,
    HarConfig,
    HarxMlpConfig,
    MlpHarConfig,
    ModelsConfig,
    PlausibilityConfig,
    SelectionConfig,
)
from configs.policy import (
    ApcConfig,
    FailsafeConfig,
    GateConfig,
    LiquidityConfig,
    PolicyConfig,
    RegistryConfig,
    RolesConfig,
    ServingConfig,
)
from configs.risk import (
    EvaluationConfig,
    IngestConfig,
    IngestPlausibilityConfig,
    StressBookConfig,
    StressConfig,
    StressEpisode,
    TailCaviarConfig,
    TailConfig,
    TailEvtConfig,
    TailFhsConfig,
    TailHsConfig,
    TailNnConfig,
    TailQrConfig,
)

ENV_PREFIX = "VOLMARGIN__"
DEFAULT_CONFIG = Path("configs/default.yaml")

__all__ = [
    "DEFAULT_CONFIG",
    "ENV_PREFIX",
    "ApcConfig",
    "BacktestConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "EwmaConfig",
    "FailsafeConfig",
    "FeaturesConfig",
    "GarchConfig",
    "GateConfig",
    "GbmConfig",
    "HarConfig",
    "HarxMlpConfig",
    "IngestConfig",
    "IngestPlausibilityConfig",
    "LiquidityConfig",
    "MlpHarConfig",
    "ModelsConfig",
    "PathsConfig",
    "PlausibilityConfig",
    "PolicyConfig",
    "RegistryConfig",
    "RolesConfig",
    "SelectionConfig",
    "ServingConfig",
    "StressBookConfig",
    "StressConfig",
    "StressEpisode",
    "TailCaviarConfig",
    "TailConfig",
    "TailEvtConfig",
    "TailFhsConfig",
    "TailHsConfig",
    "TailNnConfig",
    "TailQrConfig",
    "load_config",
]


class Config(_Strict):
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    features: FeaturesConfig = FeaturesConfig()
    backtest: BacktestConfig = BacktestConfig()
    models: ModelsConfig = ModelsConfig()
    selection: SelectionConfig = SelectionConfig()
    policy: PolicyConfig = PolicyConfig()
    registry: RegistryConfig = RegistryConfig()
    serving: ServingConfig = ServingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    stress: StressConfig = StressConfig()
    tail: TailConfig = TailConfig()
    ingest: IngestConfig = IngestConfig()

    def resolved(self) -> dict[str, Any]:
        """JSON-able dict of the whole config, as logged to every MLflow run."""
        return self.model_dump(mode="json")

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted-key overrides applied (``{"backtest.refit_every": 30}``)."""
        raw = self.resolved()
        for dotted, value in overrides.items():
            _set_dotted(raw, dotted.split("."), value)
        return _validate(raw, "<overrides>")


def _set_dotted(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {key} is not a section")
    node[keys[-1]] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML keeps the
    last one silently, so a pasted second ``policy:`` block would replace the first unseen."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode,
                    deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_yaml(text: str, source: str) -> Any:
    """YAML ``text`` with duplicate keys refused; a syntax error names ``source`` and the line.

    Raises
    ------
    ConfigError
        Malformed YAML or a duplicate key, with ``source`` (file or variable) and position.
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no tags
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, text in environ.items():
        if name.startswith(ENV_PREFIX):
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            out[dotted] = parse_yaml(text, f"environment variable {name}")
    return out


# (smaller, larger, why): pairs whose order no per-field bound can check. A rule whose keys a
# schema change removed is skipped here; tests/test_config.py asserts every rule still fires.
ORDERED_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("policy.mmf_floor", "policy.mmf_cap", "the MMF floor may not exceed its cap"),
    ("policy.lb_min", "policy.lb_max", "the LB lower bound may not exceed its upper bound"),
    ("policy.fhs_min_obs", "policy.fhs_window",
     "FHS needs fhs_min_obs standardized losses out of a window of fhs_window"),
    ("backtest.plausibility.min_ratio", "backtest.plausibility.max_ratio",
     "the plausible forecast / realized-variance band would be empty"),
    ("backtest.plausibility.min_obs", "backtest.plausibility.window_days",
     "more realized-variance days than the trailing window holds"),
    ("evaluation.stress_days.min_history", "evaluation.stress_days.window_days",
     "a stress-day threshold needs more losses than its window has days: no day could be "
     "judged"),
    ("evaluation.selection_start", "evaluation.selection_end",
     "the selection period would be empty"),
    ("evaluation.evaluation_start", "evaluation.evaluation_end",
     "the evaluation period would be empty"),
)


_MISSING = object()


def _leaf(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for key in dotted.split("."):
        node = getattr(node, key, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node



def cross_field_errors(cfg: Config) -> list[str]:
    """Relations between fields that per-field bounds cannot express, one line per violation.

    Ordered pairs (``ORDERED_PAIRS``: ``a <= b``), windows counted in fixed 30-day feature
    windows (``features.corr_min_obs``, ``features.liquidity_min_obs`` <= 30), and the
    horizons the policy and the selection read must be backtested
    (``features.update_interval_days`` and ``selection.horizon`` in ``backtest.horizons``),
    and the update interval is one day (what the policy backtest and serving support).
    """
    errors = []
    for small, large, why in ORDERED_PAIRS:
        a, b = _leaf(cfg, small), _leaf(cfg, large)
        if any(v is _MISSING or v is None for v in (a, b)):  # None: open end (to the data's)
            continue
        if a > b:
            errors.append(f"  {small} = {a!r} > {large} = {b!r}: {why}")
    for key in ("features.corr_min_obs", "features.liquidity_min_obs"):
        value = _leaf(cfg, key)
        if value is not _MISSING and value > 30:
            errors.append(f"  {key} = {value!r} > 30: more valid days than its 30-day window "
                          "holds, the feature would always be NaN")
    interval = _leaf(cfg, "features.update_interval_days")
    if interval is not _MISSING and interval != 1:
        # the policy backtest replays a daily publication (every daily cutoff, the stress
        # days and budgets counted per day) and the liquidation bonus reads a one-day σ:
        # another interval would give overlapping losses and a σ √U too large, not an error
        errors.append(f"  features.update_interval_days = {interval!r}: only 1 (a daily "
                      "update) is supported by the policy backtest and serving; the features "
                      "take any U, the replays and the liquidation bonus do not yet")
    horizons = _leaf(cfg, "backtest.horizons")
    for key in ("features.update_interval_days", "selection.horizon"):
        value = _leaf(cfg, key)
        if horizons is not _MISSING and value is not _MISSING and value not in horizons:
            errors.append(f"  {key} = {value!r} is not in backtest.horizons = {horizons!r}: "
                          "no forecast of that horizon would exist")
    return errors


def _validate(raw: dict[str, Any], source: str) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        ]
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(lines)) from None
    errors = cross_field_errors(cfg)
    if errors:
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(errors))
    return cfg


def load_config(
    path: Path | str | None = None, environ: dict[str, str] | None = None
) -> Config:
    """Read a YAML config, apply ``VOLMARGIN__*`` environment overrides, validate.

    Parameters
    ----------
    path : YAML file; ``configs/default.yaml`` when None.
    environ : mapping to read overrides from; ``os.environ`` when None.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    overrides = _env_overrides(dict(os.environ if environ is None else environ))
    for dotted, value in overrides.items():
        _set_dotted(raw, dotted.split("."), value)
    source = str(path) + (f" (+ env {', '.join(sorted(overrides))})" if overrides else "")
    return _validate(raw, source)

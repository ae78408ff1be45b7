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

import itertools
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
# Pairs checked when a config is loaded (load_config: a file and the environment), not by
# with_overrides: code that only walks forward (tests, benchmarks) builds configs with a later
# oos_start and leaves the protocol's periods at their defaults, which it never reads.
LOAD_ORDERED_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("backtest.oos_start", "evaluation.selection_start",
     "the first out-of-sample forecast is made at backtest.oos_start: the selection period's "
     "days before it would have no forecast, and the candidates would be chosen on fewer days "
     "than the period names"),
)


def _sections(model: type[_Strict]) -> tuple[str, ...]:
    """The fields of ``model`` that are sections of their own: one per registered alias."""
    return tuple(name for name, field in model.model_fields.items()
                 if isinstance(field.annotation, type) and issubclass(field.annotation, _Strict))


# The aliases ``models.enabled`` and ``tail.enabled`` may name: one section each, named as
# the keys of models.registry.REGISTRY and models.tail.registry.TAIL_REGISTRY, which configs
# may not import (tests/test_import_direction.py); tests/test_config.py holds them equal.
FORECASTERS: tuple[str, ...] = _sections(ModelsConfig)
TAIL_MODELS: tuple[str, ...] = _sections(TailConfig)
# The level the tail step scores, tests and reports every tail model at (HEADLINE_LEVEL of
# pipelines/evaluation/tail_compare.py and pipelines/tail_step.py; a test holds them equal).
TAIL_HEADLINE_LEVEL = 0.99


_MISSING = object()


def _leaf(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for key in dotted.split("."):
        node = getattr(node, key, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node



def cross_field_errors(cfg: Config) -> list[str]:
    """The rules beyond the schema's per-field bounds, one line per violation.

    Ordered pairs (``ORDERED_PAIRS``: ``a <= b``), windows counted in fixed 30-day feature
    windows (``features.corr_min_obs``, ``features.liquidity_min_obs`` <= 30), and the
    horizons the policy and the selection read must be backtested
    (``features.update_interval_days`` and ``selection.horizon`` in ``backtest.horizons``),
    and the update interval is one day (what the policy backtest and serving support).
    What the run would refuse deep inside it is refused here too: enabled models that are
    not registered or are listed twice, tail levels the tail step cannot read, a
    ``backtest.n_jobs`` of 0, a scheduler the local engine would ignore, and every
    ``evaluation.grid`` point and ``evaluation.frontier_knobs`` value that would make an
    invalid config when the protocol applies it (:func:`_sweep_errors`).

    These rules run when a config is loaded or overridden, not when a registered version's
    bundled config is read (serving validates it with the schema alone), so a rule added here
    refuses new configs without making an already registered version unreadable.
    """
    errors = _rules(cfg)
    return errors + _sweep_errors(cfg, errors)


def _rules(cfg: Config) -> list[str]:
    """:func:`cross_field_errors` but the sweeps' (checked on each config a sweep makes)."""
    errors = []
    for small, large, why in ORDERED_PAIRS:
        errors += _ordered(cfg, small, large, why)
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
    errors += _enabled_errors("models.enabled", cfg.models.enabled, FORECASTERS, "forecaster")
    errors += _enabled_errors("tail.enabled", cfg.tail.enabled, TAIL_MODELS, "tail model")
    if not cfg.tail.enabled:
        # read only by the tail step, which with no model fails after the panel is built
        # ("no asset was eligible"); the step is left out of `volmargin run` by tail.in_run
        errors.append("  tail.enabled = []: the tail step (`volmargin tail`, or `volmargin "
                      "run` with tail.in_run) would have no model to walk forward; "
                      "tail.in_run: false leaves it out of the run")
    errors += _level_errors(cfg.tail.levels)
    if cfg.backtest.n_jobs == 0:
        errors.append("  backtest.n_jobs = 0: no process would replay anything (joblib "
                      "refuses 0); 1 replays in process, n > 1 in n processes, -1 on every "
                      "core, -2 on all but one")
    if cfg.backtest.scheduler and cfg.backtest.engine == "local":
        errors.append(f"  backtest.scheduler = {cfg.backtest.scheduler!r} with backtest.engine "
                      "= 'local': only the dask engine joins a scheduler, the local one would "
                      "ignore it; set backtest.engine: dask, or backtest.scheduler: null")
    return errors


def _ordered(cfg: Config, small: str, large: str, why: str) -> list[str]:
    a, b = _leaf(cfg, small), _leaf(cfg, large)
    if any(v is _MISSING or v is None for v in (a, b)):  # None: open end (to the data's)
        return []
    return [f"  {small} = {a!r} > {large} = {b!r}: {why}"] if a > b else []


def _enabled_errors(key: str, names: list[str], known: tuple[str, ...], kind: str) -> list[str]:
    """Each name of ``key`` registered (a section of its own) and listed once."""
    errors, seen = [], set()
    for name in names:
        if name in seen:
            errors.append(f"  {key} = {names!r}: {name!r} is listed twice: each enabled "
                          f"{kind} is walked forward once, by name")
        elif name not in known:
            errors.append(f"  {key} = {names!r}: {name!r} is not a registered {kind} "
                          f"(registered: {', '.join(sorted(known))})")
        seen.add(name)
    return errors


def _level_errors(levels: list[float]) -> list[str]:
    """``tail.levels``: each in (0.5, 1) (models/tail/base.py check_levels), listed once, and
    the headline level among them."""
    errors, seen = [], set()
    for q in levels:
        if not 0.5 < q < 1:
            errors.append(f"  tail.levels = {levels!r}: {q!r} is not in (0.5, 1): a level is "
                          "the confidence of a VaR/ES forecast (and of its policy.confidence)")
        elif q in seen:
            errors.append(f"  tail.levels = {levels!r}: {q!r} is listed twice")
        seen.add(q)
    if TAIL_HEADLINE_LEVEL not in levels:
        errors.append(f"  tail.levels = {levels!r} lacks {TAIL_HEADLINE_LEVEL}: the tail step "
                      f"scores, tests and reports every tail model at {TAIL_HEADLINE_LEVEL:.0%} "
                      "(its headline level)")
    return errors


MAX_SWEEP_LINES = 3  # per sweep: one bad value can spoil every point of a product grid


def _sweep_errors(cfg: Config, known: list[str]) -> list[str]:
    """Each config the protocol makes from ``cfg`` is valid: every point of
    ``evaluation.grid`` (the product of its values, applied together: pipelines/policy_eval/
    compare.py), and every ``evaluation.frontier_knobs`` value applied alone on the configured
    policy (the tail-driven candidate's variants) and on every grid point (the variance-driven
    one's). Checked as ``with_overrides`` would, by the schema and :func:`_rules`, when the
    config loads rather than after the walk-forward. A knob's values must be numbers: each is
    a point of the frontier. ``known``: ``cfg``'s own errors, not repeated for each config."""
    ev = cfg.evaluation
    errors = _listed_once("evaluation.grid", ev.grid) + _listed_once(
        "evaluation.frontier_knobs", ev.frontier_knobs)
    for key, values in ev.frontier_knobs.items():
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float)]
        if bad:
            errors.append(f"  evaluation.frontier_knobs[{key!r}] = {values!r}: {bad[0]!r} is "
                          "not a number: each value is a point of the frontier")
    if errors:
        return errors
    raw = cfg.resolved()
    keys = list(ev.grid)
    points = [dict(zip(keys, values, strict=True))
              for values in itertools.product(*(ev.grid[k] for k in keys))]
    found = []
    for point in points:
        if point and (why := _applied(raw, point, known)):
            found.append(f"  evaluation.grid point {point!r} would be replayed with an "
                         f"invalid config: {why}")
    errors += _capped(found, "grid points")
    if found:
        return errors
    found = []
    for key, values in ev.frontier_knobs.items():
        for value in values:
            for point in ([{}] + [p for p in points if p]):
                if why := _applied(raw, {**point, key: value}, known):
                    where = (f"at evaluation.grid point {point!r}" if point
                             else "on the configured policy")
                    found.append(f"  evaluation.frontier_knobs[{key!r}] = {value!r} would be "
                                 f"replayed with an invalid config ({where}): {why}")
                    break
    return errors + _capped(found, "knob values")


def _listed_once(section: str, sweep: dict[str, list[Any]]) -> list[str]:
    errors = []
    for key, values in sweep.items():
        twice = sorted({repr(v) for v in values if values.count(v) > 1})
        if twice:
            errors.append(f"  {section}[{key!r}] = {values!r}: {', '.join(twice)} listed twice: "
                          "each value is one replay")
    return errors


def _capped(lines: list[str], what: str) -> list[str]:
    if len(lines) <= MAX_SWEEP_LINES:
        return lines
    return [*lines[:MAX_SWEEP_LINES], f"  ... and {len(lines) - MAX_SWEEP_LINES} more {what}"]


def _applied(raw: dict[str, Any], overrides: dict[str, Any], known: list[str]) -> str:
    """Why ``raw`` (a resolved config) with the dotted ``overrides`` is not a valid config, as
    ``Config.with_overrides`` would refuse it, but the ``known`` errors of ``raw`` itself;
    empty when there is no other."""
    tree = raw
    try:
        for dotted, value in overrides.items():
            tree = _replaced(tree, dotted.split("."), value)
        lines = _rules(Config.model_validate(tree))
    except ValidationError as exc:
        lines = _pydantic_lines(exc)
    except ConfigError as exc:
        lines = [str(exc)]
    return "; ".join(line.strip() for line in lines if line not in known)


def _replaced(tree: dict[str, Any], keys: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``tree`` with ``keys`` set to ``value`` (:func:`_set_dotted` on a copy of the
    path only: the rest is shared, never written)."""
    out = dict(tree)
    node = out
    for key in keys[:-1]:
        child = node.get(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {key} is not a section")
        node[key] = dict(child)
        node = node[key]
    node[keys[-1]] = value
    return out


def _pydantic_lines(exc: ValidationError) -> list[str]:
    return [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()]


def _validate(raw: dict[str, Any], source: str, loading: bool = False) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        lines = _pydantic_lines(exc)
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(lines)) from None
    errors = cross_field_errors(cfg)
    if loading:
        for small, large, why in LOAD_ORDERED_PAIRS:
            errors += _ordered(cfg, small, large, why)
    if errors:
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(errors))
    return cfg


def load_config(
    path: Path | str | None = None, environ: dict[str, str] | None = None
) -> Config:
    """Read a YAML config, apply ``VOLMARGIN__*`` environment overrides, validate (the
    schema, :func:`cross_field_errors` and ``LOAD_ORDERED_PAIRS``).

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
    return _validate(raw, source, loading=True)

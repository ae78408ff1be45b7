"""Configuration: YAML in ``configs/`` validated by pydantic with ``extra="forbid"``.

The config says *what* (windows, levels, schedules); the code says *how*. Every leaf can be
overridden from the environment as ``VOLMARGIN__<SECTION>__<KEY>=value`` (YAML syntax for the
value, so ``[1, 7]`` and ``null`` work). A wrong key or type fails with a message naming the
key path and the file it came from.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "VOLMARGIN__"
DEFAULT_CONFIG = Path("configs/default.yaml")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names key and source."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Strict):
    data_dir: Path = Path("data/market")
    outputs_dir: Path = Path("outputs")
    mlruns_dir: Path = Path("mlruns")


class DataConfig(_Strict):
    assets: list[str] | None = None
    stale_after_days: int = Field(3, ge=0)


class FeaturesConfig(_Strict):
    """Thresholds of the feature panel. Windows that appear in column names (``corr_spx_90d``,
    ``amihud_30d``) are fixed in ``features/`` so that a name never lies about its window;
    ``har_windows`` names its columns and must match the schema (``har_rv_{1,7,30}d``)."""

    har_windows: list[int] = [1, 7, 30]
    corr_min_obs: int = Field(15, ge=3)  # valid pairs per 30 days of a corr/beta window, else NaN
    macro_lag_days: int = Field(1, ge=0)  # macro closes print ~20-22 UTC: usable the next day
    macro_max_carry_days: int = Field(7, ge=0)  # a macro value older than this is stale → NaN
    vix_regime_level: float = Field(25.0, gt=0)  # vix_regime: lagged VIX close above this
    liquidity_min_obs: int = Field(20, ge=2)  # valid days in a 30-day volume / Amihud window
    min_hours_for_rv: int = Field(20, ge=1, le=24)
    liquidation_delay_hours: int = Field(1, ge=1, le=24)  # H: time to liquidate a position
    update_interval_days: int = Field(1, ge=1)            # U: parameters hold this long


class BacktestConfig(_Strict):
    oos_start: dt.date = dt.date(2021, 1, 1)
    refit_every: int = Field(91, ge=1)
    min_train_days: int = Field(365, ge=30)
    horizons: list[int] = [1, 7]
    n_jobs: int = -1  # processes for per-forecaster policy replays (-1: all cores)

    @field_validator("horizons")
    @classmethod
    def _positive_sorted(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError("horizons must be a non-empty list of positive day counts")
        return sorted(set(v))


class GarchConfig(_Strict):
    """Settings of one arch GARCH-family alias; the model itself (volatility process, lag
    orders, innovation distribution) is fixed by the alias in ``models.garch.GARCH_SPECS``."""

    min_obs: int = Field(250, ge=50)  # fewer daily returns: the t likelihood is too flat to fit


class EwmaConfig(_Strict):
    decay: float = Field(0.94, gt=0, lt=1)  # λ; RiskMetrics (1996) daily value
    init_obs: int = Field(30, ge=1)  # first σ² = mean r² of the first init_obs returns


class HarConfig(_Strict):
    min_obs: int = Field(250, ge=20)  # fewer (inputs, target) rows per regression → not fitted


class GbmConfig(_Strict):
    """scikit-learn HistGradientBoostingRegressor, one per horizon, pooled over assets."""

    learning_rate: float = Field(0.05, gt=0, le=1)
    max_iter: int = Field(300, ge=1)  # upper bound; early stopping on a purged time split
    max_leaf_nodes: int = Field(15, ge=2)
    min_samples_leaf: int = Field(100, ge=1)  # ~20k training rows: leaves of >= 0.5%
    l2_regularization: float = Field(1.0, ge=0)
    n_iter_no_change: int = Field(20, ge=1)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)  # last dates, for early stopping only
    seed: int = 7


class MlpHarConfig(_Strict):
    hidden: int = Field(32, ge=1)
    embed_dim: int = Field(4, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(512, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(4, ge=1)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    seed: int = 7


class HarxMlpConfig(_Strict):
    """``harx_mlp``: pooled log-HARX by OLS + a residual MLP on log-MSE (models/harx_mlp.py)."""

    hidden: int = Field(16, ge=1)  # one hidden layer; the linear HARX carries the signal
    embed_dim: int = Field(2, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    batch_size: int = Field(512, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(5, ge=1)  # the zero correction counts as the first candidate
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    seeds: list[int] = Field(default_factory=lambda: [7], min_length=1)  # corrections averaged


class ModelsConfig(_Strict):
    """One section per registered alias (``models.registry.REGISTRY``); a test keeps them equal."""

    # Walk-forward, evaluated and policy-replayed by every `run`. garch11_skewt, gjr_t and
    # gjr_skewt are registered but off: within 0.003 QLIKE of garch11_t, ~15 s of run each.
    enabled: list[str] = [
        "garch11_t", "egarch_t", "ewma94", "har_rv", "harx_iv", "har_rv_pooled", "gbm_sklearn",
        "harx_mlp", "mlp_har",
    ]
    garch11_t: GarchConfig = GarchConfig()
    garch11_skewt: GarchConfig = GarchConfig()
    gjr_t: GarchConfig = GarchConfig()
    gjr_skewt: GarchConfig = GarchConfig()
    egarch_t: GarchConfig = GarchConfig()
    ewma94: EwmaConfig = EwmaConfig()
    har_rv: HarConfig = HarConfig()
    harx_iv: HarConfig = HarConfig()
    har_rv_pooled: HarConfig = HarConfig()
    gbm_sklearn: GbmConfig = GbmConfig()
    mlp_har: MlpHarConfig = MlpHarConfig()
    harx_mlp: HarxMlpConfig = HarxMlpConfig()


class SelectionConfig(_Strict):
    """Which forecaster drives the published policy (see pipelines/select.py)."""

    metric: Literal["qlike"] = "qlike"
    horizon: int = Field(1, ge=1)
    rule: Literal["policy", "forecast"] = "policy"  # final criterion after the screen
    min_mcs_share: float = Field(0.0, ge=0, le=1)    # in the 90% MCS on this share of assets
    min_var_share: float = Field(0.0, ge=0, le=1)    # VaR99 backtests pass on this share


class ApcConfig(_Strict):
    """Anti-procyclicality tools in the style of EMIR Art. 28 (RTS 153/2013); each switchable.

    The initial margin is the largest of the enabled terms (and never below MMF)."""

    buffer_enabled: bool = True
    buffer: float = Field(0.25, ge=0)            # IMF >= MMF × (1 + buffer)
    stress_enabled: bool = True
    stress_weight: float = Field(0.25, ge=0, le=1)  # IMF >= (1-w)·MMF + w·MMF(σ_stress)
    stress_quantile: float = Field(0.95, gt=0, le=1)  # σ_stress: this quantile of past σ
    floor_enabled: bool = True                   # IMF >= MMF(σ_long), σ_long = RMS of past σ


class GuardrailConfig(_Strict):
    """Rate limits on loosening (tightening is immediate), after Aave's risk stewards."""

    enabled: bool = True
    loosen_abs_step: float = Field(0.005, gt=0)  # MMF/IMF may fall at most 0.5 pp per update
    loosen_rel_step: float = Field(0.10, gt=0)   # ... and at most 10% of the previous value
    loosen_min_days: int = Field(3, ge=0)        # days between two loosenings
    deadband: float = Field(0.0025, ge=0)        # smaller changes are not published


class FailsafeConfig(_Strict):
    jump_ratio: float = Field(3.0, gt=1)   # σ_t/σ_{t-1} above this ...
    jump_price_z: float = Field(3.0, gt=0)  # ... without |r_t| > z·σ_{t-1} is implausible
    action: Literal["keep_previous", "conservative"] = "keep_previous"
    conservative_mmf: float = Field(0.50, gt=0, lt=1)  # static set when nothing can be trusted


class LiquidityConfig(_Strict):
    """Slippage of liquidating a reference size, square-root impact law (Tóth et al. 2011)."""

    enabled: bool = True
    reference_size_usd: float = Field(5e6, gt=0)
    impact_coef: float = Field(1.0, ge=0)   # slippage = c · σ_1d · sqrt(Q / ADV)
    adv_window: int = Field(30, ge=1)       # days of dollar volume in the ADV
    max_addon: float = Field(0.10, ge=0)    # cap: beyond this the asset is not collateral


class PolicyConfig(_Strict):
    loss: Literal["worst_window", "close_to_close"] = "worst_window"  # the loss MMF covers
    # ES at 97.5% is the Basel FRTB replacement of VaR at 99% (similar level, tail-aware)
    confidence: float = Field(0.975, gt=0.5, lt=1)
    measure: Literal["es", "var"] = "es"
    coverage_level: float = Field(0.99, gt=0.5, lt=1)  # VaR level breaches are tested at
    tail: Literal["fhs", "student_t"] = "fhs"  # empirical FHS tail, or a fitted Student-t
    fhs_window: int = Field(500, ge=20)
    fhs_min_obs: int = Field(100, ge=10)
    mmf_floor: float = Field(0.02, gt=0, lt=1)
    mmf_cap: float = Field(0.60, gt=0, lt=1)
    # CCP-style floor: MMF >= w × the worst realized covered loss of the last N intervals
    # (N=1 lifts GARCH-FHS coverage from 7 to 9 of 12 assets for +1% capital; 0 = off)
    recent_loss_days: int = Field(1, ge=0, le=10)
    recent_loss_weight: float = Field(1.0, ge=0)
    lb_k: float = Field(2.33, ge=0)          # LB = 1 + clamp(k·σ_H + slippage): 99% of an H move
    lb_min: float = Field(1.02, ge=1)
    lb_max: float = Field(1.15, ge=1)
    apc: ApcConfig = ApcConfig()
    guardrails: GuardrailConfig = GuardrailConfig()
    failsafe: FailsafeConfig = FailsafeConfig()
    liquidity: LiquidityConfig = LiquidityConfig()


class GateConfig(_Strict):
    """What a challenger must show on the policy backtest to become @champion."""

    require_coverage: bool = True      # Kupiec p > 0.05 and Christoffersen LRcc < 5.99, all assets
    max_red_windows: int = Field(0, ge=0)  # Basel red 250-day windows allowed, summed over assets
    max_capital_increase: float = Field(0.05, ge=0)  # mean MMF at most 5% above the champion's
    promote_first: bool = True         # with no champion yet, promote and record the gate result


class RegistryConfig(_Strict):
    model_name: str = "volmargin-policy"
    experiment: str = "volmargin"
    gate: GateConfig = GateConfig()


class ServingConfig(_Strict):
    as_of: dt.date | None = None
    # Stale assets are always published with conservative fallback parameters (a risk engine
    # must get them); "fail" then exits 3 so the scheduler alerts, "warn" only logs.
    on_stale: Literal["warn", "fail"] = "warn"


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
    (``features.update_interval_days`` and ``selection.horizon`` in ``backtest.horizons``).
    """
    errors = []
    for small, large, why in ORDERED_PAIRS:
        a, b = _leaf(cfg, small), _leaf(cfg, large)
        if a is _MISSING or b is _MISSING:
            continue
        if a > b:
            errors.append(f"  {small} = {a!r} > {large} = {b!r}: {why}")
    for key in ("features.corr_min_obs", "features.liquidity_min_obs"):
        value = _leaf(cfg, key)
        if value is not _MISSING and value > 30:
            errors.append(f"  {key} = {value!r} > 30: more valid days than its 30-day window "
                          "holds, the feature would always be NaN")
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

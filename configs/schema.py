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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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
    max_file_mb: float = Field(100.0, gt=0)  # larger data files (on disk or decompressed) are
                                             # refused unread; largest real one: 4.5 MB raw


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
    # Retention of outputs/features/: one full-history panel per as-of otherwise piles up
    # (~420 MB a day at 1,000 assets); the latest few cover a rerun and a retrain + serve.
    store_keep_latest: int = Field(3, ge=1)


class PlausibilityConfig(_Strict):
    """Bounds every forecast must meet to be scored, selected or published
    (``models.plausibility.implausibility``): finite, positive, a daily vol of at least
    ``min_vol_1d``, and forecast / (h × trailing ``window_days`` mean realized variance) in
    [``min_ratio``, ``max_ratio``]."""

    enabled: bool = True
    window_days: int = Field(30, ge=1)       # trailing realized variance the ratio is taken to
    min_obs: int = Field(15, ge=1)           # rv days needed in that window, else implausible
    min_ratio: float = Field(0.01, gt=0)     # a vol 10x below trailing realized vol (a spike
                                             # leaves the trailing mean high for 30 days) ...
    max_ratio: float = Field(50.0, gt=1)     # ... or 7x above it is a fault: healthy forecasts
                                             # on the embedded data stay in [0.07, 22]
    min_vol_1d: float = Field(1e-3, ge=0)    # 0.1%/day: below, a peg or a dead feed, not a vol


class BacktestConfig(_Strict):
    oos_start: dt.date = dt.date(2021, 1, 1)
    refit_every: int = Field(91, ge=1)
    min_train_days: int = Field(365, ge=30)
    horizons: list[int] = [1, 7]
    n_jobs: int = -1  # processes for per-forecaster policy replays (-1: all cores)
    plausibility: PlausibilityConfig = PlausibilityConfig()
    # Where the fan-out runs (pipelines/engine.py): "local" (joblib, n_jobs) or "dask"
    # (dask.distributed: a LocalCluster of dask_workers, or the cluster at `scheduler`).
    engine: Literal["local", "dask"] = "local"
    scheduler: str | None = None   # tcp://HOST:PORT of an existing Dask scheduler
    dask_workers: int | None = Field(None, ge=1)  # LocalCluster size; None: one per core

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
    # Own-DVOL head: rows with the asset's own DVOL (BTC/ETH from 2021-03-24) get their own
    # slopes on the HAR terms and the implied inputs, plus an indicator (0 elsewhere).
    own_dvol_slopes: bool = False
    own_dvol_min_obs: int = Field(250, ge=20)  # own-DVOL rows with a target before the head
    # Recency weights 2^(-age/half_life) by row age within each training window; None: equal.
    half_life_days: float | None = Field(None, gt=0)
    # Inputs of the OLS part: every input, or only the HAR cascade + DVOL (+ flags) of harx_iv.
    linear_inputs: Literal["all", "har_iv"] = "all"
    # DVOL inputs enter once the training window has this many dates with DVOL and every
    # target (250: harx_iv's min_obs); before, they are 0 (the no-DVOL model). 0: always.
    # 250 chosen on the selection period by benchmarks/variance_study.py.
    dvol_min_days: int = Field(250, ge=0)
    # one-hot weekday of day t+1 in the OLS part (quiet weekends); on, as dvol_min_days 250,
    # by the selection-period choice of benchmarks/variance_study.py
    weekday_terms: bool = True


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


class RolesConfig(_Strict):
    """Parameter roles: LTV and IMF (new borrowing) move at every update; LT and LB (existing
    positions, hence MMF = 1 - LT·LB) change only by an *announced* change that takes effect
    after a notice and is rate-limited both ways (after Aave's risk stewards: LT ±0.25 pp,
    LB ±0.5 pp per update, 3-day delay). LT never falls below an LTV admitted during the last
    ``protect_days`` (>= ``notice_days``) plus ``ltv_gap``: a position opened at the maximum
    LTV is not liquidated by a parameter change alone within that window. ``enabled: false``
    publishes the risk-based targets at once."""

    enabled: bool = True
    # Loosening (LT up, LB down) takes effect this many days after it is announced (the Aave
    # stewards' 3-day delay).
    notice_days: int = Field(3, ge=1, le=30)
    # LT never falls below an LTV admitted in the last `protect_days` (+ ltv_gap): a borrower
    # at the maximum LTV has a week to react to any tightening (>= notice_days). Longer means
    # slower tightening after a crash, while new borrowing is cut at once through LTV.
    protect_days: int = Field(7, ge=1, le=60)
    # Tightening (LT down) takes effect at the next update: the margin protects the lender, and
    # the admitted-LTV bound already protects recent borrowers.
    tighten_notice_days: int = Field(1, ge=1, le=30)
    # Per change. Loosening at the old guardrail's 0.5 pp per 3 days (twice Aave's 0.25 pp:
    # a daily policy must be able to release a crash margin within months, not a year);
    # tightening 10x faster: in a crash the risk-based LT can fall tens of pp in a day.
    lt_up_step: float = Field(0.005, gt=0, lt=1)
    lt_down_step: float = Field(0.05, gt=0, lt=1)
    lb_step: float = Field(0.005, gt=0, lt=1)     # LB ±0.5 pp per change, both ways (Aave)
    # LT >= admitted LTV + gap: two 0.5% oracle deviation thresholds, so a price update at the
    # threshold cannot make a position opened at the maximum LTV liquidatable.
    ltv_gap: float = Field(0.01, gt=0, lt=0.5)
    deadband: float = Field(0.0025, ge=0)         # smaller LT/LB/LTV changes are not published

    @model_validator(mode="after")
    def _tighten_not_slower(self) -> RolesConfig:
        if self.tighten_notice_days > self.notice_days:
            raise ValueError("roles.tighten_notice_days must be <= roles.notice_days")
        if self.protect_days < self.notice_days:
            raise ValueError("roles.protect_days must be >= roles.notice_days")
        return self


class FailsafeConfig(_Strict):
    jump_ratio: float = Field(3.0, gt=1)   # σ_t/σ_{t-1} above this ...
    jump_price_z: float = Field(3.0, gt=0)  # ... without |r_t| > z·σ_{t-1} is implausible
    # The action is always a freeze (serving/roles.py): LTV 0, LT and LB held, never lower LT.
    conservative_mmf: float = Field(0.50, gt=0, lt=1)  # static set when nothing was published


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
    # MMF = max(tail, stress floor, memory) within [mmf_floor, mmf_cap]:
    # stress floor = weight × ES (at `confidence`) of the realized covered loss in the worst
    # `stress_window_obs`-interval window (highest mean loss) of the last `stress_lookback_days`,
    # from losses realized before the decision (Eurex Prisma / CME SPAN 2 stress component).
    # Weight 0.5: on data before 2023-07 the stressed ES (BTC 9.1%, ETH 11.7%) exceeds the
    # unconditional 99% quantile of the daily covered loss (BTC 7.5%): at full weight the floor
    # would set the margin on most days instead of flooring calm ones. 0 = off.
    stress_floor_weight: float = Field(0.5, ge=0, le=2)
    stress_window_obs: int = Field(250, ge=5)           # a 12-month stress period (Basel 2.5)
    stress_lookback_days: int = Field(3650, ge=30)      # ten years (EMIR RTS 153/2013 Art. 28)
    # memory = weight × max_s (1 - e^{-L_s}) · 2^{-age_s / half_life}: a high-water mark of the
    # realized covered losses that decays slowly (a crash day is covered the next day and
    # released gradually). Half-life 11 days = that of a variance shock under EWMA λ=0.94
    # (ln 2 / -ln 0.94), the clearing-house standard. Weight 0 = off.
    memory_weight: float = Field(1.0, ge=0, le=2)
    memory_half_life_days: float = Field(11.0, gt=0, le=365)
    lb_k: float = Field(2.33, ge=0)          # LB = 1 + clamp(k·σ_H + slippage): 99% of an H move
    lb_min: float = Field(1.02, ge=1)
    lb_max: float = Field(1.15, ge=1)
    apc: ApcConfig = ApcConfig()
    roles: RolesConfig = RolesConfig()
    failsafe: FailsafeConfig = FailsafeConfig()
    liquidity: LiquidityConfig = LiquidityConfig()


class GateConfig(_Strict):
    """What a challenger must show on the policy backtest to become @champion."""

    require_coverage: bool = True      # acceptable on every asset (policy_eval/acceptance.py)
    max_red_windows: int = Field(0, ge=0)  # Basel red 250-day windows allowed, summed over assets
    max_capital_increase: float = Field(0.05, ge=0)  # capital mean(1-LTV) <= champion's +5%
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


class StressEpisode(_Strict):
    """A documented market stress, replayed jointly from hourly data (days inclusive, UTC)."""

    name: str
    start: dt.date
    end: dt.date

    @field_validator("end")
    @classmethod
    def _ordered(cls, end: dt.date, info: Any) -> dt.date:
        start = info.data.get("start")
        if start is not None and end < start:
            raise ValueError(f"episode end {end} is before its start {start}")
        return end


_EPISODES = [("covid_crash", "2020-03-12", "2020-03-13"), ("china_ban", "2021-05-19", "2021-05-19"),
             ("luna_ust", "2022-05-09", "2022-05-12"), ("celsius_3ac", "2022-06-13", "2022-06-14"),
             ("ftx", "2022-11-08", "2022-11-10"), ("aug_2023_flush", "2023-08-17", "2023-08-17"),
             ("yen_carry", "2024-08-05", "2024-08-05"), ("tariffs_feb", "2025-02-03", "2025-02-03"),
             ("tariffs_apr", "2025-04-07", "2025-04-07")]


class StressBookConfig(_Strict):
    """Seeded synthetic book (pipelines/stress/book.py documents the distributions)."""

    accounts: int = Field(10_000, ge=1)
    seed: int = 11
    median_usd: float = Field(20_000.0, gt=0)   # lognormal collateral value, median
    sigma_log: float = Field(1.5, gt=0)          # ... and s.d. of its log (heavy right tail)
    ltv_share_a: float = Field(5.0, gt=0)        # opening LTV / max LTV ~ Beta(a, b)
    ltv_share_b: float = Field(2.0, gt=0)
    collaterals_p: list[float] = [0.6, 0.3, 0.1]  # P(1, 2, 3 collateral assets)


class StressConfig(_Strict):
    """Stress testing of today's parameters over a book of positions (pipelines/stress/)."""

    episodes: list[StressEpisode] = [StressEpisode(name=n, start=s, end=e) for n, s, e in _EPISODES]
    shock_asset: str = "BTC"
    shock_move: float = Field(-0.30, gt=-1, lt=0)   # simple return of shock_asset in one hour
    beta_window_days: int = Field(365, ge=30)       # daily returns in the beta to shock_asset
    vol_multiplier: float = Field(3.0, ge=1)        # volatility shock: σ × m ...
    vol_z: float = Field(2.33, gt=0)                # ... and every asset falls z·m·σ_1d
    collapse_assets: list[str] | None = None        # −90% one at a time; None: every book asset
    collapse_move: float = Field(-0.90, gt=-1, lt=0)
    mc_paths: int = Field(10_000, ge=100)
    mc_horizon_days: int = Field(1, ge=1, le=30)    # resampled days per Monte Carlo path
    mc_seed: int = 7
    t_copula_dof: float | None = Field(None, gt=2)  # also a t-copula Monte Carlo (None: off)
    ewma_decay: float = Field(0.94, gt=0, lt=1)     # σ that filters history (RiskMetrics)
    stablecoins: list[str] = ["USDC", "USDT", "DAI"]  # debt assets, priced at 1 USD
    slippage_cap: float = Field(0.99, gt=0, lt=1)   # impact can exceed the policy cap, not 100%
    top_n: int = Field(10, ge=1)                    # accounts / assets in the concentration table
    max_bad_debt_share: float | None = Field(None, ge=0)  # gate: worst standard scenario / debt
    after_run: bool = True  # `volmargin run` stresses the partition it published
    book: StressBookConfig = StressBookConfig()


_EVAL_EPISODES = {  # days of the *loss* (UTC, inclusive); the policy held is the day before's
    "2021-05-19 China mining ban": ("2021-05-19", "2021-05-19"),
    "2022-05 LUNA/UST": ("2022-05-09", "2022-05-12"),
    "2022-06-13 Celsius/3AC": ("2022-06-13", "2022-06-13"),
    "2022-11 FTX": ("2022-11-08", "2022-11-10"),
    "2023-08-17 leverage flush": ("2023-08-17", "2023-08-17"),
    "2024-08-05 yen carry unwind": ("2024-08-05", "2024-08-05"),
    "2025-02-03 tariffs": ("2025-02-03", "2025-02-03"),
    "2025-04-07 tariffs": ("2025-04-07", "2025-04-07"),
}


class EvaluationConfig(_Strict):
    """The policy evaluation protocol (pipelines/policy_eval/protocol.py): every setting in
    ``grid`` × forecaster is chosen by code on the selection period, frozen, and the headline
    figures come from the evaluation period only."""

    selection_start: dt.date = dt.date(2021, 1, 1)
    selection_end: dt.date = dt.date(2023, 6, 30)
    evaluation_start: dt.date = dt.date(2023, 7, 1)
    evaluation_end: dt.date | None = dt.date(2025, 6, 30)  # None: to the end of the data
    test_size: float = Field(0.05, gt=0, lt=0.5)  # Kupiec (one-sided), independence, DQ
    dq_lags: int = Field(4, ge=1)                 # lagged breaches in the DQ regression
    budget: Literal["comparators", "none"] = "comparators"  # stress bad debt <= Aave / static
    comparison_lb: float = Field(1.05, ge=1)      # LB held here when compared with Aave v3
    aave_launch: dt.date = dt.date(2023, 1, 27)   # Aave v3 Ethereum market went live
    co_breach_min_assets: int = Field(3, ge=2)    # a "joint breach day": this many assets at once
    # policy settings swept (with every enabled forecaster) on the selection period
    grid: dict[str, list[float | int | str]] = {"policy.confidence": [0.95, 0.975, 0.99]}
    # swept one at a time on the frozen candidate, for the frontier only (not chosen)
    frontier_knobs: dict[str, list[float | int | str]] = {
        "policy.stress_floor_weight": [0.0, 0.25, 1.0]}
    episodes: dict[str, tuple[dt.date, dt.date]] = {
        k: (dt.date.fromisoformat(a), dt.date.fromisoformat(b))
        for k, (a, b) in _EVAL_EPISODES.items()}

    @field_validator("evaluation_start")
    @classmethod
    def _after_selection(cls, start: dt.date, info: Any) -> dt.date:
        end = info.data.get("selection_end")
        if end is not None and start <= end:
            raise ValueError(f"evaluation_start {start} must be after selection_end {end}")
        return start

    @field_validator("grid", "frontier_knobs")
    @classmethod
    def _policy_keys(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        bad = [k for k, v in grid.items() if not k.startswith("policy.") or not v]
        if bad:
            raise ValueError(f"grid keys must be non-empty policy.* settings, got {bad}")
        return grid


class TailFhsConfig(_Strict):
    """FHS tail on a variance forecaster (``models/tail/classical.py``)."""

    variance_model: str = "ewma94"  # alias in models.registry; σ of the U-day interval
    loss_variant: Literal["close", "intrabar"] = "close"  # as the policy's worst_window loss
    window: int = Field(500, ge=20)   # standardized losses, as policy.fhs_window
    min_obs: int = Field(100, ge=10)  # fewer: no forecast for that asset and date


class TailEvtConfig(_Strict):
    """McNeil-Frey peaks over threshold on standardized losses (``models/tail/classical.py``)."""

    variance_model: str = "garch11_t"
    loss_variant: Literal["close", "intrabar"] = "close"
    window: int = Field(1000, ge=100)   # last standardized losses the GPD is fitted to
    min_obs: int = Field(250, ge=50)    # >= 25 excesses at the default tail_fraction
    tail_fraction: float = Field(0.10, gt=0, lt=0.5)  # top 10%: ~100 excesses (McNeil-Frey)


class TailQrConfig(_Strict):
    """Linear quantile regression on HAR and DVOL inputs (``models/tail/quantile.py``)."""

    loss_variant: Literal["close", "intrabar"] = "close"
    max_iter: int = Field(5000, ge=100)


class TailCaviarConfig(_Strict):
    """Symmetric absolute value CAViaR per asset and side (``models/tail/caviar.py``)."""

    loss_variant: Literal["close", "intrabar"] = "close"
    init_obs: int = Field(300, ge=50)   # first training targets whose quantile starts VaR
    min_obs: int = Field(500, ge=100)   # training targets per asset and side, else no model
    max_iter: int = Field(1000, ge=100)  # Nelder-Mead iterations per start


class TailNnConfig(_Strict):
    """Pooled FZ0-trained tail network (``models/tail/network.py``); HP chosen per window."""

    loss_variant: Literal["close", "intrabar"] = "close"
    # classical tail whose 99% VaR scales the network (selection period: evt_garch FZ0 -2.151,
    # fhs_ewma -2.074; pipelines.evaluation.tail_compare.select_scale_model)
    scale_model: Literal["fhs_ewma", "fhs_garch", "evt_garch"] = "evt_garch"
    hidden: int = Field(16, ge=1)       # one hidden layer: ~20k rows, a few hundred tail events
    embed_dim: int = Field(2, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decays: list[float] = Field(default_factory=lambda: [1e-4, 1e-2], min_length=1)
    batch_size: int = Field(512, ge=1)
    max_epochs: int = Field(40, ge=1)
    patience: int = Field(5, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=0.5)  # last dates of the window, purged by U
    seed: int = 7


class TailConfig(_Strict):
    """Direct VaR/ES forecasts of the covered loss (``models/tail``), scored by FZ0."""

    enabled: list[str] = ["fhs_ewma", "fhs_garch", "evt_garch", "qr_har", "caviar", "tail_nn"]
    # volmargin run includes the tail step (pipelines/tail_step.py) only when asked: the six
    # walk-forwards take minutes on 2 cores; `volmargin tail` runs it on its own.
    in_run: bool = False
    levels: list[float] = [0.975, 0.99, 0.995]
    refit_every: int = Field(91, ge=1)  # quarterly refits in the walk-forward
    min_train_days: int = Field(365, ge=30)
    fhs_ewma: TailFhsConfig = TailFhsConfig()
    fhs_garch: TailFhsConfig = TailFhsConfig(variance_model="garch11_t")
    evt_garch: TailEvtConfig = TailEvtConfig()
    qr_har: TailQrConfig = TailQrConfig()
    caviar: TailCaviarConfig = TailCaviarConfig()
    tail_nn: TailNnConfig = TailNnConfig()


class IngestPlausibilityConfig(_Strict):
    """Screen holding back implausible new rows (``pipelines/ingest/plausibility.py``): a move
    above k x the trailing median range (or change). Each k is twice the largest ratio seen on
    the selection period (crypto and macro before 2021, DVOL before 2022), rounded up; no row
    of the embedded data, whole history included, exceeds it."""

    enabled: bool = True
    window: int = Field(30, ge=5)          # previous rows whose median range is the scale
    min_history: int = Field(10, ge=2)     # fewer previous rows: only finite/positive checked
    k_daily: float = Field(25.0, gt=1)     # 2 x 11.0 (BTC close, 2020-03-12), rounded up
    k_hourly: float = Field(100.0, gt=1)   # 2 x 40.3 (BTC high, 2018-10-15), rounded up
    k_dvol: float = Field(25.0, gt=1)      # 2 x 6.6 (ETH DVOL high, 2021), as daily candles
    k_macro: float = Field(60.0, gt=1)     # 2 x 25.6 (VIX, 2018-02-05), rounded up


class IngestConfig(_Strict):
    """``volmargin ingest`` transport bounds (``pipelines/ingest/http.py``) and plausibility.
    HTTPS only: plain HTTP cannot be enabled from a config (loopback test servers opt in from
    code or ``VOLMARGIN_INGEST_ALLOW_HTTP_LOOPBACK=1``, and to loopback hosts only)."""

    timeout_s: float = Field(15.0, gt=0)          # per socket wait (connect, headers, a read)
    max_attempts: int = Field(5, ge=1)            # first try included
    min_interval_s: float = Field(0.25, ge=0)     # between request starts (rate limit)
    deadline_s: float = Field(600.0, gt=0)        # wall clock per request, body included
    max_retry_after_s: float = Field(120.0, ge=0)  # a longer Retry-After gives up at once
    max_response_mb: float = Field(50.0, gt=0)    # MiB; the largest real answer is ~10 MB
    plausibility: IngestPlausibilityConfig = IngestPlausibilityConfig()


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
    (``features.update_interval_days`` and ``selection.horizon`` in ``backtest.horizons``).
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

"""Forecasting settings: plausibility bounds, walk-forward, every forecaster, selection."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from configs.base import Accelerator, GpuPrecision, _Strict


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
    # A per-asset model's walk-forward goes this many assets to a task (models/backtest.py):
    # one task per asset spent more on a task's fixed cost than on EWMA/HAR fits at 1,000
    # assets; 50 still gives a 16-worker cluster 20 tasks per refit at 1,000 assets. The
    # policy replays are cut the same way, each task replaying every candidate on its chunk
    # (locally at most this many, one chunk per process: compare.replay_many).
    chunk_assets: int = Field(50, ge=1)
    horizons: list[int] = [1, 7]
    n_jobs: int = -1  # local processes for the policy replays' asset chunks (-1: all cores)
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
    # One indicator column per asset seen in fit (per-asset levels); off, the trees see only
    # the inputs, whose HAR terms carry the level. Histogram boosting costs rows x columns, so
    # the indicators make a fit grow with the square of the asset count (one fit on simulated
    # panels of 700 days: 1.2 s at 12 assets, 6.9 s at 48, 24.7 s at 96, 170 s at 192).
    # Off by default, chosen on the selection period 2021-01 -> 2023-06 of the embedded data
    # (walk-forward QLIKE at 1 / 7 days: 0.3632 / 0.2660 off, 0.3638 / 0.2671 on); on the
    # evaluation period, not used for the choice, on did better (0.4237 / 0.2850 against
    # 0.4279 / 0.2978). benchmarks/README.md, "Retrain at 1,000 assets".
    asset_onehot: bool = False
    # A fit draws at most this many rows (uniformly, seeded, before the early-stopping split)
    # when the panel has more: histogram boosting costs rows x iterations, and a pooled panel
    # of 1,000 assets (~700k rows) took 75 s a refit. 131,072 = the rows one epoch of the
    # neural models sees (512 x 256 steps, MlpHarConfig.max_steps_per_epoch): the same bound
    # on every pooled learned model. The embedded data (~27k rows) is far below it, so no
    # figure of it moves; the cost at 1,000 assets is measured in benchmarks/README.md. None:
    # every row.
    max_train_rows: int | None = Field(131_072, ge=1_000)
    # Rows whose 30-day realized variance implies a daily volatility below this do not train
    # the pooled trees (they are still forecast, and the plausibility check judges those
    # forecasts). A pegged asset's variance sits ~1,000x below crypto's, and the gamma loss's
    # Newton steps on such rows (hessian y/ŷ ~ 1e-3) throw every asset's raw scores off: a
    # synthetic stablecoin (daily vol ~0.1%) in the pool stopped the trees after 20 iterations
    # instead of 61 and took every other asset's forecasts out of the plausibility band in a
    # full run, so gbm_sklearn failed on all of them. 0.3% a day (4.8% a year) is 3x below the
    # lowest 30-day volatility of any embedded asset (0.89%, TRX), so no embedded row is left
    # out; 0.1% (the plausibility floor) was not enough: the stablecoin's rows sit just above it.
    min_train_vol_1d: float = Field(0.003, ge=0)


class MlpHarConfig(_Strict):
    hidden: int = Field(32, ge=1)
    embed_dim: int = Field(4, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(512, ge=1)
    # An epoch is at most this many optimizer steps: past 512 x 256 = 131,072 training rows
    # the batch grows with the rows (models/neural/module.py: epoch_batch_size). Lightning's
    # per-step cost dominates this small net on a large pooled panel; 12 assets (~30k rows)
    # stay at 512.
    max_steps_per_epoch: int = Field(256, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(4, ge=1)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    seed: int = 7
    accelerator: Accelerator = "auto"
    gpu_precision: GpuPrecision = "32-true"


class HarxMlpConfig(_Strict):
    """``harx_mlp``: pooled log-HARX by OLS + a residual MLP on log-MSE (models/harx_mlp.py)."""

    hidden: int = Field(16, ge=1)  # one hidden layer; the linear HARX carries the signal
    embed_dim: int = Field(2, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    batch_size: int = Field(512, ge=1)
    max_steps_per_epoch: int = Field(256, ge=1)  # as mlp_har's
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
    accelerator: Accelerator = "auto"      # the residual net's (configs/base.py)
    gpu_precision: GpuPrecision = "32-true"


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

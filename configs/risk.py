"""Evaluation and risk studies: stress tests, the honest protocol, tail models, ingestion."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from configs.base import Accelerator, GpuPrecision, _Strict


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


# scenario names the stress test gives its own scenarios (pipelines/stress/job.py)
RESERVED_SCENARIOS = frozenset({"fhs_joint", "t_copula", "found_days"})


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
    # also replay every market-wide stress day found in the data up to the as-of by the rule
    # of evaluation.stress_days (one day each, ``found_YYYY-MM-DD``), unless an episode above
    # covers it: a crash nobody listed is still a scenario
    found_days: bool = True
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
    # the joint Monte Carlo's pool spans at least this share of the longest history (younger
    # assets move by a proxy): pipelines.stress.montecarlo
    pool_min_history_share: float = Field(0.8, gt=0, le=1)
    stablecoins: list[str] = ["USDC", "USDT", "DAI"]  # debt assets, priced at 1 USD
    slippage_cap: float = Field(0.99, gt=0, lt=1)   # impact can exceed the policy cap, not 100%
    top_n: int = Field(10, ge=1)                    # accounts / assets in the concentration table
    max_bad_debt_share: float | None = Field(None, ge=0)  # gate: worst market-wide standard
    #                                                      scenario / the debt it evaluated
    max_collapse_bad_debt_share: float | None = Field(None, ge=0)  # gate: worst single-asset
    #                                                      collapse / book debt (concentration)
    after_run: bool = True  # `volmargin run` stresses the partition it published
    book: StressBookConfig = StressBookConfig()

    @field_validator("episodes")
    @classmethod
    def _names_unique(cls, episodes: list[StressEpisode]) -> list[StressEpisode]:
        """Outcomes are stored by scenario name: a repeated name, or one the stress gives its
        own scenarios, would overwrite another's row, concentration and notes."""
        seen: set[str] = set()
        for ep in episodes:
            name = ep.name
            if name in seen:
                raise ValueError(f"episode name {name!r} is used twice: names must be unique")
            if (name in RESERVED_SCENARIOS or name.endswith(("_filtered", "_collapse"))
                    or re.fullmatch(r"vol_x[\d.]+|\w+_drop\d+_(beta|corr1)", name)):
                raise ValueError(
                    f"episode name {name!r} is the stress's own kind of name (filtered "
                    "replays end in _filtered; shocks are vol_x<m>, <asset>_drop<n>_beta/_corr1, "
                    "<asset>_collapse; "
                    f"{', '.join(sorted(RESERVED_SCENARIOS))}): choose another")
            seen.add(name)
        return episodes


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


class StressDaysConfig(_Strict):
    """Market-wide stress days found by rule (``pipelines/policy_eval/episodes.py``
    ``detect_stress_days``): a loss day on which at least ``min_share`` of the assets with a
    threshold, and at least ``evaluation.co_breach_min_assets``, lost more than ``quantile``
    of their own covered losses over the previous ``window_days`` (a point-in-time threshold:
    the day and later days never enter it). Reported beside the configured episodes and
    named in the run's warnings when the list misses one; never added to the budget."""

    enabled: bool = True
    quantile: float = Field(0.99, gt=0.5, lt=1)   # the coverage level judged: 1-in-100
    window_days: int = Field(1095, ge=30)         # three years of the asset's own losses
    min_history: int = Field(250, ge=20)          # losses in the window, else no threshold
    min_share: float = Field(0.5, gt=0, le=1)     # of the assets with a threshold that day


class EvaluationConfig(_Strict):
    """The policy evaluation protocol (pipelines/policy_eval/protocol.py): every setting in
    ``grid`` × forecaster is chosen by code on the selection period, frozen, and the headline
    figures come from the evaluation period only."""

    selection_start: dt.date = dt.date(2021, 1, 1)
    selection_end: dt.date = dt.date(2023, 6, 30)
    evaluation_start: dt.date = dt.date(2023, 7, 1)
    # None: to the end of the data (2025-06-30 for the embedded data), so data appended later
    # is evaluated with the settings frozen on the selection period, never re-chosen
    evaluation_end: dt.date | None = None
    # the tests' size: the policy's Kupiec (one-sided), independence and DQ; the tail
    # models' Kupiec and independence (their DQ and ES tests are reported, not judged)
    test_size: float = Field(0.05, gt=0, lt=0.5)
    dq_lags: int = Field(4, ge=1)                 # lagged breaches in the DQ regression
    budget: Literal["comparators", "none"] = "comparators"  # stress bad debt <= Aave / static
    comparison_lb: float = Field(1.05, ge=1)      # LB held here when compared with Aave v3
    aave_launch: dt.date = dt.date(2023, 1, 27)   # Aave v3 Ethereum market went live
    co_breach_min_assets: int = Field(3, ge=2)    # a "joint breach day": this many assets at once
    stress_days: StressDaysConfig = StressDaysConfig()  # found by rule, beside ``episodes``
    # policy settings swept (with every enabled forecaster) on the selection period
    grid: dict[str, list[float | int | str]] = {"policy.confidence": [0.95, 0.975, 0.99]}
    # swept one at a time on the frozen candidate: frontier points, and (choose_knobs) judged
    # on the selection period beside it, the best by the same rule frozen
    frontier_knobs: dict[str, list[float | int | str]] = {
        "policy.stress_floor_weight": [0.0, 0.25, 0.75, 1.0]}
    choose_knobs: bool = True  # False: the knobs stay as configured, on the frontier only
    # confidence levels at which the comparators (EWMA-FHS, the static table) are replayed
    # beside the grid, for the frontier only (never candidates): how much capital a
    # comparator needs to be as safe as the frozen policy ("capital at equal-or-better bad
    # debt" read on its sweep, pipelines/policy_eval/frontier.py cheapest_as_safe)
    comparator_levels: list[float] = [0.995, 0.999]
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

    @field_validator("comparator_levels")
    @classmethod
    def _levels(cls, levels: list[float]) -> list[float]:
        bad = [q for q in levels if not 0.5 < q < 1]
        if bad:
            raise ValueError(f"comparator_levels must lie in (0.5, 1), got {bad}")
        return levels

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


# a GPD by maximum likelihood from fewer excesses is set by a handful of days
# (models.tail.classical.gpd_tail refuses the fit)
GPD_MIN_EXCESSES = 20


class TailEvtConfig(_Strict):
    """McNeil-Frey peaks over threshold on standardized losses (``models/tail/classical.py``)."""

    variance_model: str = "garch11_t"
    loss_variant: Literal["close", "intrabar"] = "close"
    window: int = Field(1000, ge=100)   # last standardized losses the GPD is fitted to
    min_obs: int = Field(250, ge=50)    # >= 25 excesses at the default tail_fraction
    tail_fraction: float = Field(0.10, gt=0, lt=0.5)  # top 10%: ~100 excesses (McNeil-Frey)

    @model_validator(mode="after")
    def _enough_excesses(self) -> TailEvtConfig:
        fraction, min_obs = self.tail_fraction, self.min_obs  # defaults included
        if int(fraction * min_obs) < GPD_MIN_EXCESSES:
            raise ValueError(
                f"min_obs {min_obs} x tail_fraction {fraction} gives "
                f"{int(fraction * min_obs)} excesses at the fewest, under the "
                f"{GPD_MIN_EXCESSES} a GPD fit needs: every young asset would be refused; "
                f"raise min_obs to {int(-(-GPD_MIN_EXCESSES // fraction))} or the fraction")
        if self.window < min_obs:
            raise ValueError(f"window {self.window} < min_obs {min_obs}: the GPD is fitted "
                             "to the last `window` losses, so it would never be fitted")
        return self


class TailHsConfig(_Strict):
    """Historical simulation: the empirical tail of the asset's own past covered losses, not
    filtered by any volatility (``models/tail/classical.py`` HsTail): the tail the yearly
    static table is calibrated on, read at every cutoff."""

    loss_variant: Literal["close", "intrabar"] = "close"
    # None: every loss realized before the cutoff (an expanding window, as the static table's
    # calibration); a number: the last that many calendar days
    window: int | None = Field(None, ge=20)
    min_obs: int = Field(250, ge=10)   # a year of losses: at 99.5%, ES averages >= 2 of them


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
    # a level is fitted only where the training rows expect this many exceedances, n(1 - q)
    # (10: 1,000 rows at 99 %, 2,000 at 99.5 %; fewer leave its three parameters to a few days)
    min_exceedances: float = Field(10.0, gt=0)


class TailNnConfig(_Strict):
    """Pooled tail network (``models/tail/network.py``); HP chosen per window."""

    loss_variant: Literal["close", "intrabar"] = "close"
    # training objective: "fz0" learns VaR/ES multipliers by the FZ0 loss (models.tail.net.
    # TailNet); "scale_nll" learns one scale per side from every row by a Gaussian scale
    # likelihood and takes VaR/ES from the empirical tail of y/scale (ScaleTailNet).
    # scale_nll, by the rule fixed before the runs (better on both sides with the ensemble
    # seed, on the long side with seeds 17 and 27): selection-period pooled FZ0 at 99%,
    # long/short, seed 7 -2.2076/-2.2763 vs fz0 -2.1943/-2.2477; seed 17 -2.1969/-2.2943 vs
    # -2.1860/-2.2414; seed 27 -2.2036/-2.2959 vs -2.1868/-2.2458 (benchmarks/tail_variants.py)
    objective: Literal["fz0", "scale_nll"] = "scale_nll"
    # scale_nll: the learned scale stays within this factor of the rescaled classical one,
    # whatever the inputs (a collapse to a millionth of the price sent it to 1e30 unbounded;
    # on the embedded data the learned 99% VaR stays within 0.53-1.93x EVT-GARCH's)
    max_scale_factor: float = Field(4.0, gt=1.0)
    # classical tail whose 99% VaR scales the network (selection period: evt_garch FZ0 -2.151,
    # fhs_ewma -2.074; pipelines.evaluation.tail_compare.select_scale_model)
    scale_model: Literal["fhs_ewma", "fhs_garch", "evt_garch"] = "evt_garch"
    # scale_nll: each asset's tail multipliers blend its own standardized losses' empirical
    # tail with the pooled one by credibility n/(n + asset_tail_prior_rows), n its rows in the
    # window (models.tail.network.asset_tails); 0: the pooled tail for every asset. Several
    # values: candidates, the one whose tails from the training rows give the ensemble the
    # lowest validation FZ0 is chosen per window. A fixed value was not
    # adopted by the rule fixed before the runs (better on both sides with seeds 7, 17, 27):
    # selection-period pooled FZ0 at 99%, long/short, 1000 rows: -2.2082/-2.2879,
    # -2.1985/-2.3034, -2.2021/-2.3039; 250: -2.2068/-2.2910, -2.1977/-2.3052, -2.1998/-2.3051;
    # pooled: -2.2081/-2.2761, -2.1973/-2.2944, -2.2032/-2.2947 (short better, long not)
    asset_tail_prior_rows: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.0], min_length=1)
    hidden: int = Field(16, ge=1)       # one hidden layer: ~20k rows, a few hundred tail events
    embed_dim: int = Field(2, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decays: list[float] = Field(default_factory=lambda: [1e-4, 1e-2], min_length=1)
    batch_size: int = Field(512, ge=1)
    max_epochs: int = Field(40, ge=1)
    # epochs without a better validation FZ0 before a member stops: 10, chosen on the selection
    # period over three ensemble seeds (pooled FZ0 at 99%, long: -2.1679/-2.1729/-2.1685
    # against -2.1674/-2.1640/-2.1648 with 5; benchmarks/tail_variants.py)
    patience: int = Field(10, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=0.5)  # last dates of the window, purged by U
    seed: int = 7
    # recency half-lives (days; 0 = equal weights) of the training loss: candidates of the
    # inner validation beside the weight decays, chosen per window
    recency_half_lives: list[float] = Field(default_factory=lambda: [0.0, 365.0], min_length=1)
    # seed ensemble (seeds seed, seed+1, ...): 5 members keep the walk-forward under ~2x of
    # one network's (the classical scale model is fitted once either way). Selection-period
    # pooled FZ0 at 99% (long): 1 net -2.1507, +recency -2.1587, 5 nets -2.1607, both -2.1674
    ensemble_size: int = Field(5, ge=1)
    # retrain each member on the whole window (validation included) for its early-stopped
    # epochs: off, it raised the selection period's pooled FZ0 at 99% (long) to -2.1459
    refit_on_validation: bool = False
    # groups of intraday measures added to the inputs (models.tail.inputs.EXTRA_INPUTS)
    extra_inputs: list[Literal["semivariance", "jumps", "kurtosis", "dvol_changes"]] = Field(
        default_factory=list)
    accelerator: Accelerator = "auto"      # configs/base.py
    gpu_precision: GpuPrecision = "32-true"


class TailConfig(_Strict):
    """Direct VaR/ES forecasts of the covered loss (``models/tail``), scored by FZ0."""

    enabled: list[str] = ["fhs_ewma", "fhs_garch", "evt_garch", "hs", "qr_har", "caviar",
                          "tail_nn"]
    # volmargin run includes the tail step (pipelines/tail_step.py) only when asked: the
    # seven walk-forwards take minutes on 2 cores; `volmargin tail` runs it on its own. Inside
    # the run the choice spans both kinds: the run registers the tail-driven policy when the
    # choice's rule ranks it above the variance-driven one (pipelines/steps.step_register).
    in_run: bool = False
    # after the walk-forward, replay policies whose MMF is each model's ES at each level and
    # freeze one on the selection period (pipelines/policy_eval/tail_driven.py)
    drive_policy: bool = True
    levels: list[float] = [0.975, 0.99, 0.995]
    refit_every: int = Field(91, ge=1)  # quarterly refits in the walk-forward
    min_train_days: int = Field(365, ge=30)
    fhs_ewma: TailFhsConfig = TailFhsConfig()
    fhs_garch: TailFhsConfig = TailFhsConfig(variance_model="garch11_t")
    evt_garch: TailEvtConfig = TailEvtConfig()
    hs: TailHsConfig = TailHsConfig()
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
    settle_s: float = Field(120.0, ge=0)          # a bar closed this long ago may be appended
    plausibility: IngestPlausibilityConfig = IngestPlausibilityConfig()

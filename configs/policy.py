"""The margin policy and what serves it: APC, roles, fail-safe, liquidity, gate, registry,
serving."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from configs.base import _Strict


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
    # A change that raises LT, or thins the cushion MMF = 1 - LT·LB (a larger LB under a held
    # or even a lower LT), takes effect this many days after it is announced (the Aave
    # stewards' 3-day delay); one that lowers LT without thinning the cushion, or widens it,
    # takes tighten_notice_days.
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
    # smaller LT/LB changes are not announced, smaller LTV rises not published (an LTV above
    # the risk-based one is never kept: a sub-deadband LTV cut is published)
    deadband: float = Field(0.0025, ge=0)

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
    # 0.5 is where the protocol starts: the run sweeps the weight on the candidate it froze
    # (evaluation.frontier_knobs) and freezes the one the selection period prefers
    # (evaluation.choose_knobs); served as configured only where that is off. 0 = off.
    # An asset with fewer than `stress_window_obs` losses in the look-back is young: its ES is
    # at least the largest of the seasoned assets' that day (serving/seasoning.py).
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
    # and judged (not unproven: >= 250 days and a budget) on at least this many: a period too
    # short to judge any asset is no evidence
    min_judged_assets: int = Field(1, ge=1)
    max_red_windows: int = Field(0, ge=0)  # Basel red 250-day windows allowed, summed over assets
    max_capital_increase: float = Field(0.05, ge=0)  # capital mean(1-LTV) <= champion's +5%
    # with no champion yet, promote and record the gate result; a refused first version
    # serves the assets it was not acceptable on frozen (serving.serve.gate_refused)
    promote_first: bool = True


class RegistryConfig(_Strict):
    model_name: str = "volmargin-policy"
    experiment: str = "volmargin"
    gate: GateConfig = GateConfig()


class ServingConfig(_Strict):
    as_of: dt.date | None = None
    # Stale assets are always published with conservative fallback parameters (a risk engine
    # must get them); "fail" then exits 3 so the scheduler alerts, "warn" only logs.
    on_stale: Literal["warn", "fail"] = "warn"
    # Assets delisted on purpose. An asset published before and absent from today's data is
    # otherwise carried, frozen and flagged stale, in every partition (its open positions keep
    # their thresholds); once retired it is no longer published.
    retired_assets: list[str] = []

"""The policy update of many assets at once (:mod:`serving.update`) is the served one-asset
decision row by row: same parameters, same reasons, same state, whatever mix of fail-safes,
fresh starts, announcements and calendars the assets are in on a given day."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.backtest import backtest
from models.base import asset_frame
from models.registry import build_forecaster
from pipelines.policy_eval.backtest import replay, replay_all
from serving.decide import PolicyInputs, decide, failsafe_reason, target_inputs
from serving.inputs import asset_history
from serving.roles import PendingChange
from serving.update import NO_DAY, Book, _free_slot, day_of, update
from tests.conftest import MARKET

CFG = Config().with_overrides({"policy.fhs_min_obs": 40})
P = CFG.policy


def _simulated(seed: int, n_assets: int = 6, days: int = 90) -> list[list[PolicyInputs]]:
    """Seeded inputs of assets with their own calendars (start day, gaps), σ paths with
    calm spells and crashes, bad prints (NaN, a jump with no price move) and direct tails."""
    rng = np.random.default_rng(seed)
    out = []
    for a in range(n_assets):
        start = dt.date(2024, 1, 1) + dt.timedelta(int(rng.integers(0, 20)))
        dates, d = [], start
        for _ in range(days - int(rng.integers(0, 30))):
            dates.append(d)
            d += dt.timedelta(int(rng.choice([1, 1, 1, 1, 2])))  # gaps in the calendar
        log_sigma = math.log(0.03) + np.cumsum(rng.normal(0, 0.15, len(dates)))
        log_sigma[len(dates) // 2:len(dates) // 2 + 5] += 1.2  # a crash
        z = rng.standard_t(4, 400)
        xs, prev = [], math.nan
        for i, day in enumerate(dates):
            var = float(math.exp(log_sigma[i]) ** 2)
            ret = float(rng.normal(0, math.sqrt(var)))
            u = rng.random()
            if u < 0.03:
                var = math.nan  # a broken forecast: freeze
            elif u < 0.06 and math.isfinite(prev):
                var, ret = 16.0 * prev, 0.0  # σ ×4 without a price move: freeze
            n_z = min(i * 2, 300)
            losses = np.abs(rng.normal(0, 0.04, i + 5))
            x = PolicyInputs(
                as_of=day, variance=var, variance_prev=prev, ret_today=ret,
                z_window=z[:n_z], sigma_history=np.exp(log_sigma[:i + 1]),
                adv_usd=float(rng.choice([np.nan, 5e7, 2e9])),
                loss_is_proxy=bool(rng.random() < 0.2), hours=1.0,
                loss_history=losses, loss_age_days=np.arange(len(losses), 0, -1) - 1.0)
            if a % 3 == 2 and rng.random() < 0.7:  # a direct tail forecast, sometimes invalid
                tv = float(rng.uniform(0.01, 0.2))
                x = dataclasses.replace(x, tail_var=tv, tail_es=tv * float(rng.uniform(0.8, 1.5)))
            xs.append(x)
            prev = var if math.isfinite(var) else prev
        out.append(xs)
    return out


def _same(a: object, b: object) -> None:
    """Equal dataclasses, NaN equal to NaN."""
    da, db = a.__dict__, b.__dict__  # type: ignore[attr-defined]
    assert da.keys() == db.keys()
    for k in da:
        va, vb = da[k], db[k]
        if isinstance(va, float) and isinstance(vb, float) and math.isnan(va):
            assert math.isnan(vb), k
        else:
            assert va == vb, (k, va, vb)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_of_all_assets_is_each_assets_served_decision(seed: int) -> None:
    assets = _simulated(seed)
    # each asset alone through the served decision
    alone = []
    for xs in assets:
        state, got = None, []
        for x in xs:
            p, state = decide(x, state, 3, P)
            got.append((p, state))
        alone.append(got)
    # all assets at once, update by update (the k-th update of each asset that has one)
    book = Book.empty(len(assets), P.roles.protect_days + 1)
    width = max(len(xs) for xs in assets)
    reasons = {"freeze": 0, "announce": 0, "in effect": 0, "direct": 0, "student": 0}
    for k in range(width):
        live = np.array([a for a, xs in enumerate(assets) if len(xs) > k])
        xs = [assets[a][k] for a in live]
        why = [failsafe_reason(x, 3, P) for x in xs]
        # the targets read only the trusted inputs; a frozen row gets a placeholder
        ok = [x if w is None else dataclasses.replace(
            x, variance=1.0, z_window=np.empty(0), tail_var=None, tail_es=None)
            for x, w in zip(xs, why, strict=True)]
        sub = book.take(live)
        rows, sub = update(np.array([day_of(x.as_of) for x in xs]), why,
                           target_inputs(ok, P), sub, P)
        book.put(live, sub)
        for j, a in enumerate(live.tolist()):
            p, state = alone[a][k]
            _same(rows.parameters(j), p)
            assert book.state(a) == state or _states_equal(book.state(a), state)
            reasons["freeze"] += "frozen" in p.reason or p.flag_fallback
            reasons["announce"] += "announced LT" in p.reason
            reasons["in effect"] += "in effect" in p.reason
            reasons["direct"] += "direct tail" in p.reason
            reasons["student"] += "student-t" in p.reason
    # the simulation reaches every branch it is meant to compare
    assert all(v > 0 for v in reasons.values()), reasons


def _states_equal(a: object, b: object) -> bool:
    """PolicyState equality with NaN fields of the published set equal to themselves."""
    assert a is not None and b is not None
    _same(a.published, b.published)  # type: ignore[attr-defined]
    return (a.pending == b.pending and a.admitted == b.admitted  # type: ignore[attr-defined]
            and a.conservative == b.conservative)  # type: ignore[attr-defined]


def test_book_round_trips_states_with_pending_changes_and_admitted_ltvs() -> None:
    xs = _simulated(5, n_assets=1)[0]
    state = None
    states = []
    for x in xs[:20]:
        _, state = decide(x, state, 3, P)
        states.append(state)
    day = dt.date(2024, 3, 1)
    pending = PendingChange(0.7, 1.03, day, day + dt.timedelta(3))
    admitted = tuple((day - dt.timedelta(k), 0.5 + k / 100) for k in (3, 2, 0))
    custom = dataclasses.replace(states[-1], pending=pending, admitted=admitted)
    given = [None, *states, custom]
    book = Book.of(given, P.roles.protect_days + 1)
    for i, s in enumerate(given):
        back = book.state(i)
        if s is None:
            assert back is None
        else:
            assert _states_equal(back, s)
    assert book.state(len(given) - 1).admitted == admitted  # type: ignore[union-attr]


def test_admitted_slots_keep_the_order_of_updates_and_refuse_a_full_window() -> None:
    days = np.array([[NO_DAY, 10, 11, NO_DAY],   # after the last used slot
                     [12, NO_DAY, NO_DAY, 13],    # wraps around to the first free
                     [NO_DAY] * 4,                 # empty: the first
                     [5, 6, 7, NO_DAY]])
    assert _free_slot(days).tolist() == [3, 1, 0, 3]
    with pytest.raises(ValueError, match="repeated a day"):
        _free_slot(np.array([[1, 2, 3]]))


def _ewma_forecasts(cfg: Config, assets: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The embedded candles of ``assets`` from 2022-06 and their EWMA walk-forward from 2024."""
    panel = build_panel(load_market(MARKET, assets, dt.date(2025, 6, 30)), cfg.features)
    panel = panel[panel.index.get_level_values("date") >= "2022-06-01"]
    fc = backtest(lambda: build_forecaster("ewma94", cfg.models, [1]), panel,
                  dt.date(2024, 1, 1), 120, [1], 300).forecasts
    return panel, fc


def test_replaying_assets_together_gives_each_assets_own_replay() -> None:
    """Real candles, two assets whose forecast calendars differ (SOL starts later), replayed
    in one pass: each asset's rows are its replay alone, bit for bit."""
    cfg = Config().with_overrides({"policy.fhs_min_obs": 60})
    panel, fc = _ewma_forecasts(cfg, ["BTC", "SOL"])
    fc = fc[(fc["asset"] != "SOL") | (fc["cutoff"] >= "2024-09-15")]
    named = [(a, asset_history(asset_frame(panel, a), fc[fc["asset"] == a], cfg))
             for a in ("BTC", "SOL")]
    assert len(named[0][1].dates) > len(named[1][1].dates) + 200
    together = replay_all(named, cfg)
    for asset, h in named:
        mine = together[together["asset"] == asset].drop(columns="asset")
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), replay(h, cfg),
                                      check_exact=True)
    assert together["reason"].str.contains("announced LT").any()


def test_tails_at_several_levels_from_one_sort_are_each_levels_own() -> None:
    """:func:`serving.policy.finite_tails` gives, per config, what :func:`finite_tail` gives
    alone: empirical windows (ties included), a window shorter than one config's minimum, and
    a fitted Student-t tail."""
    from serving.policy import finite_tail, finite_tails

    rng = np.random.default_rng(4)
    cfgs = [P.model_copy(update={"confidence": q}) for q in (0.995, 0.9, 0.975, 0.99, 0.99)]
    cfgs.append(P.model_copy(update={"confidence": 0.99, "fhs_min_obs": 200}))
    cfgs.append(P.model_copy(update={"confidence": 0.975, "tail": "student_t"}))
    for n in (0, 1, 39, 40, 41, 150, 500):
        z = rng.standard_t(4, n)
        if n > 40:
            z[::7] = np.round(z[::7], 1)  # ties around the order statistics
        got = finite_tails(z, cfgs)
        assert got == [finite_tail(z, c) for c in cfgs]
        assert got[0][0] >= got[3][0] >= got[2][0] >= got[1][0]  # VaR rises with the level


def test_candidates_sharing_a_history_share_its_fhs_terms_exactly() -> None:
    """Candidates at several confidence levels (and a no-APC variant) replaying the same
    histories get, from the terms computed once per history, the lanes each gets computing
    its own (:func:`_daily_terms`), on real candles with the fail-safe's freezes."""
    from pipelines.policy_eval.backtest import Replay, SharedFhs, _run_lanes
    from pipelines.policy_eval.compare import no_apc

    cfg = Config().with_overrides({"policy.fhs_min_obs": 60})
    panel, fc = _ewma_forecasts(cfg, ["ETH", "LINK"])
    named = [(a, asset_history(asset_frame(panel, a), fc[fc["asset"] == a], cfg))
             for a in ("ETH", "LINK")]
    configs = [cfg.with_overrides({"policy.confidence": q}) for q in (0.975, 0.99, 0.995)]
    replays = [Replay(named, c) for c in [*configs, no_apc(configs[1])]]
    shared = SharedFhs(replays)
    for j in range(len(replays)):
        lanes = [(j, a) for a in range(len(named))]
        alone = _run_lanes(replays, lanes)
        together = _run_lanes(replays, lanes, shared)
        for lane in lanes:
            np.testing.assert_array_equal(together[lane][0], alone[lane][0])
            assert together[lane][2] == alone[lane][2]  # the reasons
            for name, col in alone[lane][1].items():
                np.testing.assert_array_equal(together[lane][1][name], col, err_msg=name)
    assert len(shared._done) == len(named)  # one pass per history, not one per candidate


def test_a_jump_on_a_day_whose_return_is_unknown_is_not_confirmed() -> None:
    """σ up fourfold on the day after a missing close (return NaN): no price move confirms
    it, so it freezes, as a fourfold jump on a quiet close does; without a jump, nothing."""
    from serving.decide import failsafe_why

    prev = 0.02 ** 2
    jump = failsafe_why(0, 16 * prev, prev, math.nan, None, None, 3, P)
    assert jump is not None and "return is unknown" in jump
    assert failsafe_why(0, 16 * prev, prev, 0.001, None, None, 3, P).startswith(
        "implausible jump: σ ×4.0")
    assert failsafe_why(0, 16 * prev, prev, 0.2, None, None, 3, P) is None  # a real move
    assert failsafe_why(0, 2 * prev, prev, math.nan, None, None, 3, P) is None

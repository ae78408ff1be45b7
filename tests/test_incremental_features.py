"""A serve builds features over the trailing window its config needs (features/window.py), and
the rows it reads are those of a full rebuild; the published parameters are the same."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import mlflow
import pandas as pd
import pytest

import serving.serve as serve_module
from configs.schema import Config
from features.build import TAIL_COLUMNS, build_panel
from features.loaders import load_market
from features.schema import feature_view
from features.store import load_or_build
from features.window import (
    TrailingWindow,
    fhs_rows_days,
    max_session_gap_days,
    serve_panel,
    serve_window,
    trailing_market,
)
from models.backtest import walk_forward
from models.registry import build_forecaster
from serving.apply import BUNDLE_FORMAT, bundle_forecasts
from serving.ops import registry
from serving.ops.tracking import setup
from serving.serve import serve
from tests.conftest import MARKET, write_slice

ASSETS = ["BTC", "ETH", "SOL", "MATIC"]  # hourly + own DVOL, hourly only, delisted 2024-09-10
# Rolling means and prefix sums accumulate from the first row they see: a later first row
# changes the last bits. Largest relative difference seen on the embedded data: 5.6e-10
# (corr_spx_30d, a prefix-sum correlation); everything else below 1e-10.
RTOL = 1e-8


def _window(cfg: Config, as_of: dt.date, market, kind: str = "har") -> TrailingWindow:
    return serve_window(cfg.features, cfg.policy, cfg.features.update_interval_days, kind,
                        as_of, as_of - dt.timedelta(days=30), max_session_gap_days(market.macro),
                        plausibility_days=cfg.backtest.plausibility.window_days)


def _rows(panel: pd.DataFrame, window: TrailingWindow, as_of: dt.date, prefix: str,
          columns: list[str]) -> pd.DataFrame:
    """``columns`` of the rows dated as_of - P .. as_of, P the largest ``prefix`` term."""
    p = max(v for k, v in window.terms.items() if k.startswith(prefix) and v is not None)
    dates = panel.index.get_level_values("date")
    keep = (dates >= pd.Timestamp(as_of) - pd.Timedelta(days=p)) & (dates <= pd.Timestamp(as_of))
    return panel.loc[keep, columns]


def _assert_reads_equal(got: pd.DataFrame, full: pd.DataFrame, window: TrailingWindow,
                        as_of: dt.date) -> None:
    """The rows a serve reads are those of the full build: every column over the policy
    rows (to float round-off), the tail columns over the tail rows (exactly: differences,
    maxima and logs of the same prices)."""
    every = list(full.columns)
    expected = _rows(full, window, as_of, "policy.", every)
    assert len(expected) >= 3 * 31  # BTC, ETH, SOL (MATIC stale in 2025) × P + 1 days
    pd.testing.assert_frame_equal(_rows(got, window, as_of, "policy.", every), expected,
                                  check_exact=False, rtol=RTOL, atol=0.0, check_dtype=False)
    tail = list(TAIL_COLUMNS)
    pd.testing.assert_frame_equal(_rows(got, window, as_of, "tail.", tail),
                                  _rows(full, window, as_of, "tail.", tail), check_exact=True)


@pytest.mark.parametrize("as_of", [dt.date(2025, 6, 30), dt.date(2024, 3, 31)])
def test_trailing_build_reads_the_rows_of_a_full_build(as_of: dt.date) -> None:
    market = load_market(MARKET, ASSETS, as_of)
    cfg = Config()
    full = build_panel(market, cfg.features)

    # default config: every column over ADV 30 d + macro look-back 101 d (+ the as-of);
    # close, return and losses over the 10-year stress look-back: all the embedded history
    window = _window(cfg, as_of, market)
    assert (window.days, window.binding) == (30 + 101 + 1, "policy.adv")
    # (+ 2: a loss window reaches back H = 1 hour and up to 24 outage hours, into 2 days)
    assert (window.tail_days, window.tail_binding) == (3650 + 2 + 1, "tail.stress")
    panel, _ = serve_panel(market, cfg.features, as_of, window)
    assert panel.index.equals(full.index)  # the tail spans every row
    _assert_reads_equal(panel, full, window, as_of)
    btc = panel.xs("BTC", level="asset")
    first = pd.Timestamp(as_of) - pd.Timedelta(days=window.days - 1)  # first row built in full
    assert btc["gk_var"].dropna().index.min() == first
    assert btc["har_rv_30d"].dropna().index.min() == first + pd.Timedelta(days=29)

    # a one-year stress look-back: the FHS losses (500 + u) bind the tail
    short = Config().with_overrides({"policy.stress_lookback_days": 365})
    window = _window(short, as_of, market)
    assert (window.tail_days, window.tail_binding) == (501 + 2 + 1, "tail.fhs")
    panel, _ = serve_panel(market, short.features, as_of, window)
    assert panel.index.get_level_values("date").min() > full.index.get_level_values("date").min()
    _assert_reads_equal(panel, full, window, as_of)


def test_a_delisted_asset_keeps_its_last_rows() -> None:
    as_of = dt.date(2025, 6, 30)
    market = load_market(MARKET, ["BTC", "MATIC"], as_of)
    cut = trailing_market(market, as_of, 120)
    assert cut.daily["BTC"].index.min() == pd.Timestamp("2025-03-03")
    matic = cut.daily["MATIC"]
    assert matic.index.max() == pd.Timestamp("2024-09-10")  # its last day: age still visible
    assert len(matic) == 120 and len(cut.hourly["MATIC"]) > 0
    assert cut.dvol is market.dvol  # never trimmed
    # macro sessions from the first crypto day kept (MATIC's, the earliest)
    assert cut.macro["SPX"].index.min() >= matic.index.min()
    assert (market.macro["SPX"].index < matic.index.min()).sum() > 0


def test_longer_look_backs_give_longer_windows() -> None:
    as_of = dt.date(2025, 6, 30)
    market = load_market(MARKET, ["BTC"], as_of)
    base = _window(Config(), as_of, market)
    longer_tail = {"policy.stress_lookback_days": 5000, "policy.memory_half_life_days": 300.0}
    for key, value in longer_tail.items():
        window = _window(Config().with_overrides({key: value}), as_of, market)
        assert window.tail_days > base.tail_days and window.days == base.days, key
    no_stress = Config().with_overrides({"policy.stress_floor_weight": 0.0})
    window = _window(no_stress, as_of, market)
    assert (window.tail_days, window.tail_binding) == (501 + 2 + 1, "tail.fhs")
    longer_rows = {"policy.liquidity.adv_window": 90, "features.macro_max_carry_days": 30,
                   "backtest.plausibility.window_days": 60}
    for key, value in longer_rows.items():
        window = _window(Config().with_overrides({key: value}), as_of, market)
        assert window.days > base.days, key
    # a model fitted long ago forecasts every day since from full feature rows
    old_fit = serve_window(Config().features, Config().policy, 1, "har", as_of,
                           dt.date(2023, 1, 1), 4)
    assert old_fit.days == (as_of - dt.date(2023, 1, 1)).days + 101 + 1
    # GARCH / EWMA filter every past return; an unaudited learnt model gets everything
    garch = _window(Config(), as_of, market, kind="garch")
    assert garch.days == base.days and garch.tail_days is None
    assert garch.tail_binding == "tail.forecaster"
    assert _window(Config(), as_of, market, kind="gbm").days is None


def test_fhs_rows_follow_stored_forecast_gaps() -> None:
    as_of = dt.date(2025, 6, 30)
    daily = [str(d.date()) for d in pd.date_range("2023-01-01", "2025-06-29")]
    # no gaps: the 500th last forecast is 500 days back; the config bound 500 + u is kept
    assert fhs_rows_days({"A": daily}, as_of, 1, 500) == 501
    gapped = [d for d in daily if not "2024-06-01" <= d <= "2024-12-31"]  # 214 days missing
    assert fhs_rows_days({"A": daily, "B": gapped}, as_of, 1, 500) == 500 + 214
    assert fhs_rows_days({}, as_of, 1, 500) == 501


def _register_har(cfg: Config, data_as_of: dt.date) -> None:
    """A har_rv policy fitted on data through ``data_as_of``, registered as @champion."""
    setup(cfg)
    bt = cfg.backtest
    market = load_market(cfg.paths.data_dir, None, data_as_of)
    panel, _, _ = load_or_build(market, cfg.features, Path(cfg.paths.outputs_dir) / "features",
                                persist=False)
    forecasts = walk_forward(lambda: build_forecaster("har_rv", cfg.models, bt.horizons),
                             panel, bt.oos_start, bt.refit_every, bt.horizons,
                             bt.min_train_days)
    features = feature_view(panel)
    model = build_forecaster("har_rv", cfg.models, bt.horizons).fit(features)
    bundle = {"format": BUNDLE_FORMAT, "forecaster": model.state(),
              "fit_cutoff": data_as_of.isoformat(), "config": cfg.resolved(),
              "forecasts": bundle_forecasts(forecasts, cfg.features.update_interval_days)}
    with mlflow.start_run(run_name="register-test"):
        info = registry.log_policy_model(bundle)
    version = registry.register(info.model_uri, cfg.registry.model_name, {"forecaster": "har_rv"})
    registry.set_alias(cfg.registry.model_name, registry.CHAMPION, version, "test")


@pytest.mark.slow
def test_trailing_serve_publishes_the_parameters_of_a_full_rebuild(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    write_slice(tmp_path / "market", ["BTC", "SOL", "MATIC"], "2023-07-01", "2025-06-30")
    base = Config().with_overrides({
        "paths.data_dir": str(tmp_path / "market"), "paths.mlruns_dir": str(tmp_path / "mlruns"),
        "paths.outputs_dir": str(tmp_path / "trailing"), "models.enabled": ["har_rv"],
        "backtest.oos_start": "2024-09-01", "backtest.refit_every": 120,
        "backtest.min_train_days": 300, "policy.fhs_min_obs": 60})
    _register_har(base, dt.date(2025, 5, 15))  # 46 days of forecasts made at serve time
    as_of, today = dt.date(2025, 6, 30), dt.date(2025, 7, 1)
    built: list[tuple[pd.Timestamp, pd.Timestamp]] = []  # (first row, first full row) of BTC
    windows: list[TrailingWindow] = []
    real_panel, real_window = serve_module.serve_panel, serve_module.bundle_window

    def panel_spy(*args):
        panel, fp = real_panel(*args)
        btc = panel.xs("BTC", level="asset")
        # rv: the serve builds only the columns it reads (serve_columns), gk_var is not one
        built.append((btc.index.min(), btc["rv"].dropna().index.min()))
        return panel, fp

    def window_spy(*args):
        windows.append(real_window(*args))
        return windows[-1]

    monkeypatch.setattr(serve_module, "serve_panel", panel_spy)
    monkeypatch.setattr(serve_module, "bundle_window", window_spy)
    trailing = serve(base, as_of, today=today)
    monkeypatch.setattr(serve_module, "bundle_window",
                        lambda *args: TrailingWindow(None, None, {}))
    full_cfg = base.with_overrides({"paths.outputs_dir": str(tmp_path / "full")})
    full = serve(full_cfg, as_of, today=today)

    # every column over 46 days since the fit + 101 of look-back; losses over the whole slice
    assert (windows[0].days, windows[0].binding) == (46 + 101 + 1, "policy.since_fit")
    first, full_from = pd.Timestamp("2023-07-01"), pd.Timestamp("2025-02-03")
    assert built == [(first, full_from), (first, first)]
    assert not list((tmp_path / "trailing" / "features").glob("panel-*"))  # in memory only
    assert trailing.stale_assets == full.stale_assets == ["MATIC"]
    lineage = ["feature_fingerprint"]  # hashes the data the panel was built from: differs
    got = trailing.parameters.drop(columns=lineage)
    expected = full.parameters.drop(columns=lineage)
    assert got["sigma_1d"].notna().sum() == 2  # BTC and SOL forecast, MATIC frozen
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=0.0)

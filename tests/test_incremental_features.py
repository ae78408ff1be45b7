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
from features.build import build_panel
from features.loaders import load_market
from features.schema import feature_view
from features.store import load_or_build
from features.window import (
    TrailingWindow,
    fhs_rows_days,
    max_session_gap_days,
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
                        as_of, as_of - dt.timedelta(days=30), max_session_gap_days(market.macro))


def _read_rows(panel: pd.DataFrame, window: TrailingWindow, as_of: dt.date) -> pd.DataFrame:
    """The rows a serve reads: dated as_of - P .. as_of (P: the largest policy term)."""
    p = max(v for k, v in window.terms.items() if k.startswith("policy.") and v is not None)
    dates = panel.index.get_level_values("date")
    return panel[(dates >= pd.Timestamp(as_of) - pd.Timedelta(days=p))
                 & (dates <= pd.Timestamp(as_of))]


@pytest.mark.parametrize("as_of", [dt.date(2025, 6, 30), dt.date(2024, 3, 31)])
def test_trimmed_build_reads_the_rows_of_a_full_build(as_of: dt.date) -> None:
    market = load_market(MARKET, ASSETS, as_of)
    full = build_panel(market, Config().features)

    # default config: the 10-year stress look-back (3650 d) + 101 d of macro look-back
    # exceeds the embedded history, so nothing is cut and the panel is bit-identical
    default = _window(Config(), as_of, market)
    assert default.days == 3650 + 101 + 1 and default.binding == "policy.stress"
    pd.testing.assert_frame_equal(
        build_panel(trailing_market(market, as_of, default), Config().features), full,
        check_exact=True)

    # a one-year stress look-back: the FHS rows (500 + 1) bind, 603 days are built
    short = Config().with_overrides({"policy.stress_lookback_days": 365})
    window = _window(short, as_of, market)
    assert window.days == 501 + 101 + 1 and window.binding == "policy.fhs"
    trimmed = build_panel(trailing_market(market, as_of, window), short.features)
    first = trimmed.index.get_level_values("date").min()
    assert first > full.index.get_level_values("date").min()  # something was cut
    expected, got = _read_rows(full, window, as_of), _read_rows(trimmed, window, as_of)
    assert len(expected) > 1500
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=RTOL, atol=0.0)


def test_a_delisted_asset_keeps_its_last_rows() -> None:
    as_of = dt.date(2025, 6, 30)
    market = load_market(MARKET, ["BTC", "MATIC"], as_of)
    window = TrailingWindow(120, {})
    cut = trailing_market(market, as_of, window)
    assert cut.daily["BTC"].index.min() == pd.Timestamp("2025-03-03")
    matic = cut.daily["MATIC"]
    assert matic.index.max() == pd.Timestamp("2024-09-10")  # its last day: age still visible
    assert len(matic) == 120 and len(cut.hourly["MATIC"]) > 0
    assert cut.macro is market.macro and cut.dvol is market.dvol  # never trimmed


def test_longer_look_backs_give_longer_windows() -> None:
    as_of = dt.date(2025, 6, 30)
    market = load_market(MARKET, ["BTC"], as_of)
    base = Config().with_overrides({"policy.stress_lookback_days": 365})
    days = _window(base, as_of, market).days
    longer = {"policy.stress_lookback_days": 900, "policy.fhs_window": 800,
              "features.macro_max_carry_days": 30}
    for key, value in longer.items():
        cfg = base.with_overrides({key: value})
        assert _window(cfg, as_of, market).days > days, key
    assert _window(base.with_overrides({"policy.stress_lookback_days": 900}), as_of,
                   market).days == 900 + 101 + 1
    # a recursive forecaster (GARCH, EWMA) reads the whole return history
    assert _window(base, as_of, market, kind="garch").days is None
    assert _window(base, as_of, market, kind="ewma").binding == "policy.forecaster"
    # a model fitted long ago forecasts every day since from the panel
    old_fit = serve_window(base.features, base.policy, 1, "har", as_of, dt.date(2023, 1, 1),
                           4)
    assert old_fit.days == (as_of - dt.date(2023, 1, 1)).days + 101 + 1


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
        "backtest.min_train_days": 300, "policy.fhs_min_obs": 60,
        "policy.stress_lookback_days": 180})
    _register_har(base, dt.date(2025, 5, 31))  # 30 days of forecasts made at serve time
    as_of, today = dt.date(2025, 6, 30), dt.date(2025, 7, 1)
    built: list[pd.Timestamp] = []
    real_build = serve_module.load_or_build

    def spy(market, *args, **kwargs):
        built.append(market.daily["BTC"].index.min())
        return real_build(market, *args, **kwargs)

    monkeypatch.setattr(serve_module, "load_or_build", spy)
    windows: list[TrailingWindow] = []
    real_window = serve_module.bundle_window

    def window_spy(*args):
        windows.append(real_window(*args))
        return windows[-1]

    monkeypatch.setattr(serve_module, "bundle_window", window_spy)
    trailing = serve(base, as_of, today=today)
    monkeypatch.setattr(serve_module, "bundle_window",
                        lambda *args, **kwargs: TrailingWindow(None, {}))
    full_cfg = base.with_overrides({"paths.outputs_dir": str(tmp_path / "full")})
    full = serve(full_cfg, as_of, today=today)

    # FHS rows (500 + u) bind: 603 days of the 731 are built
    assert windows[0].days == 603 and windows[0].binding == "policy.fhs"
    assert built == [pd.Timestamp("2023-11-06"), pd.Timestamp("2023-07-01")]
    assert not list((tmp_path / "trailing" / "features").glob("panel-*"))  # in memory only
    assert trailing.stale_assets == full.stale_assets == ["MATIC"]
    lineage = ["feature_fingerprint"]  # hashes the data the panel was built from: differs
    got = trailing.parameters.drop(columns=lineage)
    expected = full.parameters.drop(columns=lineage)
    assert got["sigma_1d"].notna().sum() == 2  # BTC and SOL forecast, MATIC frozen
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=0.0)

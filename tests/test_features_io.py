"""Edges of the feature pipeline: bad input with keep_going, staleness, the fingerprinted store,
the summary for MLflow and the pure plotting functions."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from configs.schema import FeaturesConfig
from features.build import build_panel
from features.freshness import freshness_report, stale_assets, stale_lines
from features.loaders import DataValidationError, load_market
from features.plots import rolling_correlations, rv_vs_dvol, worst_losses
from features.store import fingerprint, load_or_build, panel_fingerprint
from features.summary import feature_summary
from tests.conftest import write_slice

CFG = FeaturesConfig()
MACRO = ("SPX", "VIX", "US10Y")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_slice(tmp_path / "market", ["BTC", "ETH", "SOL"], "2022-01-01", "2022-04-30",
                       macro=MACRO)


def _corrupt_line(path: Path, line: int, column: str, value: str) -> None:
    with gzip.open(path, "rt") as fh:
        rows = [r.rstrip("\n").split(",") for r in fh]
    rows[line - 1][rows[0].index(column)] = value
    with gzip.open(path, "wt") as fh:
        fh.write("".join(",".join(r) + "\n" for r in rows))


# ---------------------------------------------------------------- bad input


def test_a_bad_file_fails_fast_by_default(data_dir):
    _corrupt_line(data_dir / "crypto/daily/SOL.csv.gz", 7, "close", "-3")
    with pytest.raises(DataValidationError) as exc:
        load_market(data_dir)
    assert (exc.value.rule, exc.value.row) == ("positive_prices", 7)


def test_keep_going_builds_the_other_assets_and_reports_the_failure(data_dir):
    _corrupt_line(data_dir / "crypto/daily/SOL.csv.gz", 7, "close", "-3")
    market = load_market(data_dir, keep_going=True)
    assert sorted(market.daily) == ["BTC", "ETH"]
    message = market.failures["crypto/daily/SOL.csv.gz"]
    assert "line 7" in message and "positive_prices" in message
    assert "asset SOL not built" in message
    panel = build_panel(market, CFG)
    assert sorted(panel.index.get_level_values("asset").unique()) == ["BTC", "ETH"]
    assert all("SOL" not in str(p) for p in market.files)


def test_a_broken_hourly_file_fails_its_asset_instead_of_degrading_it(data_dir):
    path = data_dir / "crypto/hourly/ETH.csv.gz"
    path.write_bytes(path.read_bytes()[:4000])  # a partial download: truncated gzip
    market = load_market(data_dir, keep_going=True)
    assert "ETH" not in market.daily and "ETH" not in market.hourly
    assert "file_unreadable" in market.failures["crypto/hourly/ETH.csv.gz"]
    assert sorted(market.daily) == ["BTC", "SOL"]


def test_a_broken_macro_file_leaves_only_its_features_empty(data_dir):
    (data_dir / "macro/VIX.csv.gz").write_bytes(b"")
    market = load_market(data_dir, keep_going=True)
    assert "VIX" not in market.macro and "macro/VIX.csv.gz" in market.failures
    panel = build_panel(market, CFG)
    assert panel["corr_vix_30d"].isna().all() and panel["vix_regime"].isna().all()
    assert panel["corr_spx_30d"].notna().any()


def test_a_missing_requested_asset_is_a_failure_not_a_crash_with_keep_going(data_dir):
    market = load_market(data_dir, assets=["BTC", "DOGE"], keep_going=True)
    assert list(market.daily) == ["BTC"]
    assert "DOGE" in market.failures["crypto/daily"]
    with pytest.raises(DataValidationError, match="asset_missing"):
        load_market(data_dir, assets=["BTC", "DOGE"])


# ---------------------------------------------------------------- staleness


def test_a_series_that_stopped_updating_is_reported_stale(embedded_market):
    report = freshness_report(embedded_market, stale_after_days=3)
    daily = report[report["kind"] == "daily"].set_index("name")
    assert daily.loc["MATIC", "stale"] and daily.loc["MATIC", "days_since_update"] == 293
    assert not daily.loc["BTC", "stale"] and daily.loc["BTC", "days_since_update"] == 0
    assert stale_assets(report) == ["MATIC"]
    macro = report[report["kind"] == "macro"]
    assert not macro["stale"].any()  # 2025-06-30 is a Monday session
    later = freshness_report(embedded_market, as_of=pd.Timestamp("2025-07-10").date())
    assert later.loc[later["kind"] == "dvol", "stale"].all()
    # what a run prints: one line per stale series, its last day, age, limit and consequence
    assert stale_lines(report) == [
        "stale daily series MATIC: last row 2024-09-10, 293 days old (stale after 3); its "
        "asset's parameters are frozen (fail-safe)",
        "stale hourly series MATIC: last row 2024-09-10, 293 days old (stale after 3); its "
        "asset's covered loss falls back to the daily-range proxy (flagged)"]
    lines = stale_lines(later)
    assert "stale dvol series BTC: last row 2025-06-30, 10 days old (stale after 3); its " \
        "implied-volatility features are NaN (dvol_available False)" in lines
    assert sum(line.startswith("stale macro series ") for line in lines) == \
        int(later.loc[later["kind"] == "macro", "stale"].sum()) > 0
    assert stale_lines(report[~report["stale"]]) == []


def test_a_stale_dvol_is_never_carried_into_the_panel(data_dir):
    market = load_market(data_dir)
    market.dvol["BTC"] = market.dvol["BTC"].loc[:"2022-03-01"]  # the feed stops
    panel = build_panel(market, CFG)
    sol = panel.xs("SOL").loc["2022-03-02":]
    assert not sol["dvol_available"].any() and sol["vrp"].isna().all()


# ---------------------------------------------------------------- store


def test_rerun_with_unchanged_inputs_reuses_the_store(data_dir, tmp_path):
    root = tmp_path / "features"
    panel, fp, reused = load_or_build(load_market(data_dir), CFG, root)
    assert not reused
    again, fp2, reused2 = load_or_build(load_market(data_dir), CFG, root)
    assert reused2 and fp2 == fp
    pd.testing.assert_frame_equal(again, panel)  # dtypes survive Parquet (nullable bools too)
    meta = json.loads((root / f"panel-{fp[:16]}.json").read_text())
    assert meta["rows"] == len(panel) and meta["columns"] == list(panel.columns)
    assert not list(root.glob("*.tmp-*")) and not list(root.glob(".*tmp*"))


def test_fingerprint_changes_with_data_config_and_as_of(data_dir):
    market = load_market(data_dir)
    fp = fingerprint(market, CFG, None)
    assert fingerprint(market, FeaturesConfig(liquidation_delay_hours=2), None) != fp
    assert fingerprint(market, CFG, pd.Timestamp("2022-04-30").date()) != fp
    _corrupt_line(data_dir / "crypto/daily/SOL.csv.gz", 7, "volume", "1")
    assert fingerprint(load_market(data_dir), CFG, None) != fp


def test_panel_fingerprint_sees_every_value_the_index_and_the_settings(data_dir):
    panel = build_panel(load_market(data_dir), CFG)
    day = pd.Timestamp("2022-04-30").date()
    fp = panel_fingerprint(panel, CFG, day, "days=30")
    assert panel_fingerprint(panel.copy(), CFG, day, "days=30") == fp  # content, not identity
    for column in ("rv", "ret_1d", "rv_is_hourly", "n_hours"):  # float, bool, int columns
        changed = panel.copy()
        i = int(np.flatnonzero(changed[column].notna().to_numpy())[3])
        old = changed[column].iloc[i]
        changed.iloc[i, changed.columns.get_loc(column)] = (
            (not old) if isinstance(old, bool | np.bool_) else
            old + 1 if changed[column].dtype.kind in "iu" else np.nextafter(old, np.inf))
        assert panel_fingerprint(changed, CFG, day, "days=30") != fp, column
    missing = panel.copy()
    missing.iloc[10, missing.columns.get_loc("rv")] = np.nan
    assert panel_fingerprint(missing, CFG, day, "days=30") != fp
    assert panel_fingerprint(panel.drop(panel.index[:1]), CFG, day, "days=30") != fp
    assert panel_fingerprint(panel.drop(columns="rv"), CFG, day, "days=30") != fp
    assert panel_fingerprint(panel, FeaturesConfig(liquidation_delay_hours=2), day,
                             "days=30") != fp
    assert panel_fingerprint(panel, CFG, None, "days=30") != fp
    assert panel_fingerprint(panel, CFG, day, "days=31") != fp


# ---------------------------------------------------------------- summary and plots


def test_feature_summary_counts_rows_and_missing_shares():
    idx = pd.MultiIndex.from_product([["A", "B"], pd.date_range("2024-01-01", periods=4)],
                                     names=["asset", "date"])
    panel = pd.DataFrame({"x": [1.0, np.nan, 3.0, 4.0, np.nan, np.nan, 1.0, 1.0],
                          "y": 1.0}, index=idx)
    summary = feature_summary(panel)
    assert summary["rows"] == 8 and summary["assets"] == 2 and summary["columns"] == 2
    assert summary["rows_per_asset"] == {"A": 4, "B": 4}
    assert summary["missing_share"] == {"x": 0.375, "y": 0.0}
    assert summary["missing_share_per_asset"] == {"A": {"x": 0.25}, "B": {"x": 0.5}}
    assert summary["date_min"] == "2024-01-01" and summary["date_max"] == "2024-01-04"
    json.dumps(summary)  # JSON-able, for mlflow.log_dict


@pytest.mark.parametrize("plot", [rv_vs_dvol, rolling_correlations, worst_losses])
def test_plots_return_a_figure_without_io(data_dir, plot):
    panel = build_panel(load_market(data_dir), CFG)
    fig = plot(panel, "SOL")
    assert isinstance(fig, Figure) and fig.axes[0].lines
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # the Agg canvas renders without pyplot
    assert buffer.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(KeyError):
        plot(panel, "DOGE")


def test_feature_store_keeps_only_the_latest_panels(tmp_path):
    import os

    from features.store import prune

    root = tmp_path / "features"
    root.mkdir()
    paths = []
    for i in range(5):
        p = root / f"panel-{i:016d}.parquet"
        p.write_bytes(b"x")
        p.with_suffix(".json").write_text("{}")
        os.utime(p, (1_000 + i, 1_000 + i))
        paths.append(p)
    deleted = prune(root, keep_latest=2, keep=paths[0])  # the oldest is the one in use
    assert sorted(deleted) == sorted(paths[1:4])
    assert sorted(root.glob("panel-*.parquet")) == [paths[0], paths[4]]
    assert not paths[1].with_suffix(".json").exists()

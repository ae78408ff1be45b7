import numpy as np
import pandas as pd
import pytest

from pipelines.evaluation.evaluate import loss_table, narrowed_support, qlike, scored


def test_qlike_known_values():
    assert qlike([1.0], [1.0])[0] == 0.0
    assert qlike([2.0], [1.0])[0] == pytest.approx(2 - np.log(2) - 1)
    assert qlike([1.0], [4.0])[0] == pytest.approx(0.25 - np.log(0.25) - 1)


def test_qlike_penalises_under_prediction_more_than_over_prediction():
    assert qlike([1.0], [0.5])[0] > qlike([1.0], [2.0])[0]


def test_qlike_expected_loss_is_minimised_by_the_true_variance():
    """Consistency (Patton 2011): with a noisy unbiased proxy, the true σ² scores best."""
    rng = np.random.default_rng(0)
    true_var = 0.0004
    proxy = true_var * rng.chisquare(1, size=200_000)  # r² of a normal return
    losses = {m: qlike(proxy, m * true_var).mean() for m in (0.8, 0.9, 1.0, 1.1, 1.25)}
    assert min(losses, key=losses.get) == 1.0


def _panel(rv: np.ndarray) -> pd.DataFrame:
    dates = pd.date_range("2024-01-01", periods=len(rv))
    idx = pd.MultiIndex.from_product([["AAA"], dates], names=["asset", "date"])
    return pd.DataFrame({"rv": rv, "rv_is_hourly": True}, index=idx)


def _fc(dates, variance, h=1):
    return pd.DataFrame({"asset": "AAA", "cutoff": dates, "horizon_days": h,
                         "target_date": dates + pd.Timedelta(days=h), "variance": variance})


def test_scoring_uses_only_the_common_support_and_the_next_days_rv():
    rv = np.array([1.0, 2.0, 1.0, 2.0, 1.0, 2.0])
    panel = _panel(rv)
    dates = panel.index.get_level_values("date")
    good = _fc(dates[:5], rv[1:6])          # perfect forecasts of the next day's rv
    partial = _fc(dates[1:4], np.ones(3))   # forecasts only 3 days
    scores = scored({"good": good, "partial": partial}, panel)
    assert set(scores["cutoff"]) == set(dates[1:4])
    table = loss_table(scores)
    assert table.set_index("model").loc["good", "qlike"] == pytest.approx(0.0)
    assert (table["n"] == 3).all()
    ranking = table.sort_values("qlike")["model"].tolist()
    assert ranking == ["good", "partial"]


def test_a_comparison_narrowed_by_one_model_is_named():
    rv = np.tile([1.0, 2.0], 10)
    panel = _panel(rv)
    dates = panel.index.get_level_values("date")
    full = _fc(dates[:19], rv[1:20])      # 19 days with a realized value
    late = _fc(dates[15:19], np.ones(4))  # a model that only began on day 15
    table = loss_table(scored({"full": full, "late": late}, panel))
    assert narrowed_support({"full": full, "late": late}, table) == [
        "comparison of AAA h=1d on 4 scored days: late forecast it on 4 days, full on 19; "
        "every model is scored on the days all of them forecast"]
    most = _fc(dates[5:19], np.ones(14))  # 14 of 19 days: over half, not named
    assert narrowed_support({"full": full, "most": most},
                            loss_table(scored({"full": full, "most": most}, panel))) == []
    # a pair no day of which is common (no row in the table) is named too
    never = _fc(dates[:19], np.ones(19), h=7)
    late7 = _fc(dates[17:19], np.ones(2), h=7)
    lines = narrowed_support({"full": never, "late": late7},
                             loss_table(scored({"full": never, "late": late7}, panel)))
    assert lines[0].startswith("comparison of AAA h=7d on ")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_comparisons_wide_frame_is_pivot_tables(seed) -> None:
    """Missing cells, NaN scores, a model with no score, a cutoff with no score, duplicated
    (cutoff, model) rows: the same frame as ``pivot_table``."""
    from pipelines.evaluation.comparison import _wide

    rng = np.random.default_rng(seed)
    cutoffs = pd.date_range("2024-01-01", periods=40, freq="D")
    rows = [{"cutoff": c, "model": m, "qlike": float(rng.normal())}
            for c in cutoffs for m in ["a", "b", "garch11_t", "z"] if rng.random() < 0.8]
    scores = pd.DataFrame(rows)
    scores.loc[rng.random(len(scores)) < 0.1, "qlike"] = np.nan
    scores.loc[scores["model"] == "z", "qlike"] = np.nan          # a model with no score
    scores.loc[scores["cutoff"] == cutoffs[5], "qlike"] = np.nan  # a cutoff with none
    scores = scores.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    want = scores.pivot_table(index="cutoff", columns="model", values="qlike")
    pd.testing.assert_frame_equal(_wide(scores, "qlike"), want, check_exact=True)
    twice = pd.concat([scores, scores.iloc[:3].assign(qlike=1.0)], ignore_index=True)
    pd.testing.assert_frame_equal(_wide(twice, "qlike"), twice.pivot_table(
        index="cutoff", columns="model", values="qlike"), check_exact=True)


def test_the_comparisons_chunks_hold_the_rows_isin_would_select() -> None:
    """Rows by asset from one hashing pass: the same rows, order and index as ``isin``,
    also for an asset a frame lacks and for a chunk no frame covers."""
    from pipelines.evaluation.comparison import _positions, _rows

    rng = np.random.default_rng(5)
    names = np.array([f"A{i:02d}" for i in range(12)], dtype=object)
    frame = pd.DataFrame({"asset": pd.array(rng.choice(names[:10], 500), dtype="str"),
                          "x": rng.normal(size=500)}, index=rng.permutation(1000)[:500])
    where = _positions(frame["asset"])
    assert set(where) == set(frame["asset"])
    for chunk in (list(names[:3]), list(names[8:12]), ["A11"], [], list(names)):
        want = frame[frame["asset"].isin(set(chunk))]
        pd.testing.assert_frame_equal(_rows(frame, where, chunk), want, check_exact=True)


def test_scores_on_integer_keys_are_the_merges_row_for_row():
    """The joins of :func:`scored` as integer-key lookups give the merges' frame exactly, with
    a model that skips cutoffs, one that lacks a whole (asset, horizon) pair, a forecast of an
    asset the panel lacks; a cutoff off midnight falls back to the merges."""
    import datetime as dt

    from configs.schema import Config
    from features.build import build_panel
    from features.loaders import load_market
    from models.backtest import backtest
    from models.registry import build_forecaster
    from pipelines.evaluation.evaluate import _Keys, _scored_by_merges, realized_for, scored
    from tests.conftest import MARKET

    cfg = Config()
    panel = build_panel(load_market(MARKET, ["BTC", "SOL", "TRX"], dt.date(2025, 6, 30)),
                        cfg.features)
    panel = panel[panel.index.get_level_values("date") >= "2023-06-01"]
    fc = {m: backtest(lambda m=m: build_forecaster(m, cfg.models, [1, 7]), panel,
                      dt.date(2024, 1, 1), 120, [1, 7], 200).forecasts
          for m in ("ewma94", "har_rv")}
    fc["har_rv"] = fc["har_rv"].iloc[::3].reset_index(drop=True)           # skips cutoffs
    fc["ewma94"] = fc["ewma94"][(fc["ewma94"]["asset"] != "SOL")
                                | (fc["ewma94"]["horizon_days"] == 1)]     # no SOL h=7
    stray = fc["ewma94"].iloc[:3].assign(asset="NOPE")
    fc["ewma94"] = pd.concat([fc["ewma94"], stray], ignore_index=True)
    realized = realized_for(panel, [1, 7]).dropna(subset=["realized"])
    got = scored(fc, panel)
    keys = _Keys(realized)
    assert keys.exact(keys.realized) and all(keys.exact(keys.of(f)) for f in fc.values())
    pd.testing.assert_frame_equal(got, _scored_by_merges(fc, realized), check_exact=True)
    # SOL h=7 is left to har_rv alone; har_rv's skipped cutoffs leave the others out too
    sol7 = got[(got["asset"] == "SOL") & (got["horizon_days"] == 7)]
    assert set(sol7["model"]) == {"har_rv"} and len(sol7) > 50
    assert (got["model"] == "ewma94").sum() < len(fc["ewma94"]) / 2
    # a cutoff off midnight: no day key, the merges instead
    off = {**fc, "har_rv": fc["har_rv"].assign(cutoff=fc["har_rv"]["cutoff"]
                                               + pd.Timedelta(hours=1))}
    assert keys.of(off["har_rv"]) is None
    pd.testing.assert_frame_equal(scored(off, panel), _scored_by_merges(off, realized),
                                  check_exact=True)

"""``models.base.forecast_table``: the pooled models' forecast frame built at once is the frame
of their per-asset blocks (:func:`forecast_frame` + :func:`concat_forecasts`), exactly."""

import numpy as np
import pandas as pd

from models.base import concat_forecasts, empty_forecast, forecast_frame, forecast_table


def _blocks(names: np.ndarray, dates: pd.DatetimeIndex, horizons: list[int],
            variance: np.ndarray) -> pd.DataFrame:
    blocks = []
    for asset in pd.unique(names):
        at = np.flatnonzero(names == asset)
        for j, h in enumerate(horizons):
            blocks.append(forecast_frame(asset, dates[at], h, variance[at, j]))
    return concat_forecasts(blocks)


def test_the_table_is_the_frame_of_per_asset_blocks():
    rng = np.random.default_rng(11)
    days = pd.date_range("2024-01-01", periods=40)
    # 30 days of each of three assets, rows in a random order
    names = np.repeat(np.array(["SOL", "BTC", "ETH"]), 30)
    dates = pd.DatetimeIndex(np.concatenate([rng.choice(days, 30, replace=False)
                                             for _ in range(3)]))
    order = rng.permutation(90)
    names, dates = names[order], dates[order]
    for horizons in ([1, 7], [7, 1], [30]):
        variance = rng.uniform(1e-4, 1e-2, (90, len(horizons)))
        got = forecast_table(pd.Index(names), dates, horizons, variance)
        pd.testing.assert_frame_equal(got, _blocks(names, dates, horizons, variance),
                                      check_exact=True)
        assert list(got["asset"].unique()) == ["BTC", "ETH", "SOL"]


def test_no_rows_give_the_empty_forecast():
    got = forecast_table(pd.Index([], dtype=object), pd.DatetimeIndex([]), [1, 7],
                         np.empty((0, 2)))
    pd.testing.assert_frame_equal(got, empty_forecast())

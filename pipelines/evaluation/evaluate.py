"""Forecast evaluation: loss functions robust to the noisy variance proxy, and model selection.

QLIKE and MSE are the two losses that rank variance forecasts consistently when the target is
an unbiased but noisy proxy of the true variance (Patton, 2011); QLIKE is the one that does not
let a handful of crash days decide the ranking, hence the selection metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.targets import forward_variance

VARIANCE_FLOOR = 1e-12  # a zero realized variance (exchange halt) must not yield log(0)


def qlike(realized: np.ndarray | pd.Series, forecast: np.ndarray | pd.Series) -> np.ndarray:
    r"""Patton's (2011) QLIKE loss, normalised so that a perfect forecast scores 0.

    .. math:: L(\hat\sigma^2, h) = \frac{\hat\sigma^2}{h} - \ln\frac{\hat\sigma^2}{h} - 1

    Examples
    --------
    >>> float(qlike([2.0], [1.0])[0])  # 2 - ln 2 - 1
    0.3068528194400547
    """
    ratio = np.maximum(np.asarray(realized, float), VARIANCE_FLOOR) / np.asarray(forecast, float)
    return ratio - np.log(ratio) - 1.0


def squared_error(
    realized: np.ndarray | pd.Series, forecast: np.ndarray | pd.Series
) -> np.ndarray:
    """MSE loss on variance, :math:`(\\hat\\sigma^2 - h)^2`."""
    return (np.asarray(realized, float) - np.asarray(forecast, float)) ** 2


def realized_for(panel: pd.DataFrame, horizons: Sequence[int]) -> pd.DataFrame:
    """Realized forward variance per (asset, cutoff, horizon) from the panel's ``rv``.

    Rows by asset (sorted), then horizon, then date; the columns are gathered as arrays and
    framed once (a frame per asset and horizon was 3.4 s of the driver's serial time at
    1,000 assets)."""
    assets, cutoffs, hs, realized, hourly = [], [], [], [], []
    for asset, frame in panel.groupby(level="asset", sort=True):
        dates = frame.index.get_level_values("date")
        rv = pd.Series(frame["rv"].to_numpy(), index=dates, name="rv")
        flag = frame["rv_is_hourly"].to_numpy()
        for h in horizons:
            fwd = forward_variance(rv, h)
            assets.append(np.full(len(fwd), asset, dtype=object))
            cutoffs.append(fwd.index.to_numpy())
            hs.append(np.full(len(fwd), int(h)))
            realized.append(fwd.to_numpy())
            hourly.append(flag)
    if not assets:
        return pd.DataFrame(columns=["asset", "cutoff", "horizon_days", "realized",
                                     "proxy_is_hourly"])
    return pd.DataFrame({"asset": pd.array(np.concatenate(assets), dtype="str"),
                         "cutoff": np.concatenate(cutoffs), "horizon_days": np.concatenate(hs),
                         "realized": np.concatenate(realized),
                         "proxy_is_hourly": np.concatenate(hourly)})


def _member(rows: pd.DataFrame, of: pd.DataFrame, on: list[str]) -> np.ndarray:
    """Which of ``rows`` have their ``on`` values among those of ``of`` (order kept)."""
    hit = rows[on].merge(of[on].drop_duplicates(), on=on, how="left", indicator=True)
    return hit["_merge"].eq("both").to_numpy()


def scored(forecasts: dict[str, pd.DataFrame], panel: pd.DataFrame) -> pd.DataFrame:
    """Every model's forecasts with realized values and losses, on their **common support**.

    Within each (asset, horizon), only cutoffs that every model covering that pair forecast
    and whose realized value is known are kept, so that no model is scored on days another
    one skipped. A model with no forecast at all for a pair (its failed rows were dropped by
    the walk-forward) leaves the pair to the others instead of emptying it.
    """
    horizons = sorted({int(h) for fc in forecasts.values() for h in fc["horizon_days"].unique()})
    realized = realized_for(panel, horizons).dropna(subset=["realized"])
    coded = _Keys(realized)
    fc_keys = {name: coded.of(fc) for name, fc in forecasts.items()}
    if coded.exact(coded.realized) and all(coded.exact(k) for k in fc_keys.values()):
        return _scored_on_keys(forecasts, fc_keys, realized, coded)
    return _scored_by_merges(forecasts, realized)


def _scored_by_merges(forecasts: dict[str, pd.DataFrame], realized: pd.DataFrame
                      ) -> pd.DataFrame:
    """:func:`scored` as joins of frames (any cutoffs, any keys)."""
    keys = ["asset", "cutoff", "horizon_days"]
    pair = ["asset", "horizon_days"]
    common = realized[keys]
    for fc in forecasts.values():
        covered = _member(common, fc, pair)
        common = common[~covered | _member(common, fc, keys)]
    rows = []
    for name, fc in forecasts.items():
        df = common.merge(fc[[*keys, "variance"]], on=keys).merge(realized, on=keys)
        df.insert(0, "model", name)
        rows.append(df)
    return _with_losses(pd.concat(rows, ignore_index=True))


def _with_losses(out: pd.DataFrame) -> pd.DataFrame:
    out["qlike"] = qlike(out["realized"], out["variance"])
    out["mse"] = squared_error(out["realized"], out["variance"])
    return out


class _Keys:
    """(asset, cutoff, horizon) as one integer per row: the asset's position among the
    realized frame's assets, the cutoff's day since 1970 and the horizon. Exact only where
    every cutoff is a midnight from 1970 on and the horizons are below 1,024 (:meth:`of`
    gives None otherwise) and no key repeats (:meth:`exact`); :func:`scored` falls back to its
    merges where not. (Forecasts of assets the panel lacks share one code, -1: two of them on
    one day and horizon repeat a key, so such a frame is scored by the merges too.)"""

    DAY = 86_400_000_000_000  # ns
    DAYS = 1 << 22            # days per asset code: 11,000 years
    HORIZONS = 1024

    def __init__(self, realized: pd.DataFrame) -> None:
        self.assets = pd.Index(pd.unique(realized["asset"]))
        self.realized = self.of(realized)

    def of(self, frame: pd.DataFrame) -> np.ndarray | None:
        code = self.assets.get_indexer(frame["asset"]).astype(np.int64)
        ns = pd.DatetimeIndex(frame["cutoff"]).as_unit("ns").asi8
        h = frame["horizon_days"].to_numpy(dtype=np.int64)
        if len(h) and ((ns % self.DAY != 0).any() or ns.min() < 0
                       or ns.max() // self.DAY >= self.DAYS
                       or h.min() < 0 or h.max() >= self.HORIZONS):
            return None
        return (code * self.DAYS + ns // self.DAY) * self.HORIZONS + h

    @staticmethod
    def exact(key: np.ndarray | None) -> bool:
        return key is not None and not pd.Index(key).has_duplicates

    def pair(self, key: np.ndarray) -> np.ndarray:
        """The (asset, horizon) pair of each key, as a small integer (the key without its
        day); only for keys of assets in the realized frame."""
        return key // self.HORIZONS // self.DAYS * self.HORIZONS + key % self.HORIZONS


def _scored_on_keys(forecasts: dict[str, pd.DataFrame], fc_keys: dict[str, np.ndarray],
                    realized: pd.DataFrame, coded: _Keys) -> pd.DataFrame:
    """:func:`scored` with its joins as lookups of integer keys: the same rows, in the same
    order, as the merges (an inner merge keeps the left frame's order; every key is unique).
    The merges were ~1 s a model of the driver's serial time at 1,000 assets."""
    key = coded.realized
    assert key is not None
    key_pair = coded.pair(key)
    keep = np.ones(len(key), bool)
    for k in fc_keys.values():
        covered = np.zeros(len(coded.assets) * coded.HORIZONS, bool)
        covered[coded.pair(k[k >= 0])] = True   # an asset never realized covers no pair
        keep &= ~covered[key_pair] | (pd.Index(k).get_indexer(key) >= 0)
    common = key[keep]
    base = realized[keep].reset_index(drop=True)
    rows = []
    for name, fc in forecasts.items():
        at = pd.Index(fc_keys[name]).get_indexer(common)
        hit = at >= 0
        df = base.loc[hit, ["asset", "cutoff", "horizon_days"]].reset_index(drop=True)
        df.insert(0, "model", name)
        df["variance"] = fc["variance"].to_numpy()[at[hit]]
        df["realized"] = base.loc[hit, "realized"].to_numpy()
        df["proxy_is_hourly"] = base.loc[hit, "proxy_is_hourly"].to_numpy()
        rows.append(df)
    return _with_losses(pd.concat(rows, ignore_index=True))


def loss_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean QLIKE and MSE per model, asset and horizon, with the number of forecasts."""
    return (
        scores.groupby(["model", "asset", "horizon_days"])
        .agg(qlike=("qlike", "mean"), mse=("mse", "mean"), n=("qlike", "size"),
             start=("cutoff", "min"), end=("cutoff", "max"))
        .reset_index()
    )


def narrowed_support(forecasts: dict[str, pd.DataFrame], table: pd.DataFrame,
                     keep: float = 0.5) -> list[str]:
    """One line per (asset, horizon) whose common support (:func:`scored`: the days every
    model covering it forecast; ``table`` is :func:`loss_table`, whose ``n`` counts them) is
    under ``keep`` of the days one model forecast it: a model that forecast the pair on a few
    days only (e.g. one that could not forecast a new listing until a later refit) shrinks the
    comparison of every model there. Named with the model that forecast fewest days, so the
    cause is found, not a short table wondered at. Counted with integer codes (a groupby of
    every forecast row was ~1 s a model of the driver's time at 1,000 assets)."""
    coded = {}  # per model: each row's (asset, horizon) code, and the codes' assets
    for name, f in forecasts.items():
        if len(f):
            a, names = pd.factorize(f["asset"])
            h, hs = pd.factorize(f["horizon_days"].astype(int))
            coded[name] = (a, names, h, hs)
    if not coded:
        return []
    assets = pd.Index(sorted(set().union(*(c[1] for c in coded.values()))))
    horizons = pd.Index(sorted(set().union(*(c[3] for c in coded.values()))))
    counts = {}
    for name, (a, names, h, hs) in coded.items():
        code = (assets.get_indexer(names)[a] * len(horizons) + horizons.get_indexer(hs)[h])
        counts[name] = np.bincount(code, minlength=len(assets) * len(horizons))
    grid = pd.DataFrame(counts, index=pd.MultiIndex.from_product([assets, horizons]))
    grid = grid.where(grid > 0)  # a model with no forecast for a pair does not cover it
    common = (table.groupby(["asset", "horizon_days"])["n"].max() if len(table)
              else pd.Series(dtype=float))
    common = common.reindex(grid.index).fillna(0).astype(int)
    most = grid.max(axis=1)
    lines = []
    for (asset, h), n in common[common < keep * most].items():
        row = grid.loc[(asset, h)].dropna()
        fewest = row.idxmin()
        lines.append(f"comparison of {asset} h={h}d on {n} scored days: {fewest} forecast it "
                     f"on {int(row[fewest])} days, {row.idxmax()} on {int(row.max())}; every "
                     "model is scored on the days all of them forecast")
    return lines

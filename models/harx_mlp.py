r"""``harx_mlp``: a pooled log-HARX on richer inputs, plus a residual MLP that can only help.

Built from what made ``har_rv_pooled`` beat ``mlp_har`` (per-asset levels solved exactly,
squared error in logs) and what a HAR cannot see (:mod:`models.neural.inputs`: range
estimators, semivariance share, jumps, worst intraday loss, implied variance and its premium,
contagion, beta, macro and liquidity). For horizon :math:`h` and the mean daily forward
variance :math:`y_{t,h} = V_{t,h}/h` (:func:`models.preprocessing.forward_targets`):

.. math::

    \log y_{t,h} = \underbrace{\alpha_{a,h} + z_t'\beta_h}_{b_{t,h}\ \text{(OLS, pooled)}}
        + \underbrace{g_h(z_t, e_a)}_{\text{residual MLP}} + \varepsilon_{t,h},
    \qquad
    \hat V_{t,h} = h \exp\big(b_{t,h} + g_h(z_t, e_a) + c_{a,h}\big)

with :math:`z_t` the standardized inputs of row :math:`t` (missing → training mean, flags
say so), :math:`\alpha_a` per-asset intercepts and common slopes, and
:math:`c_{a,h} = \bar\varepsilon_{a,h} + \tfrac12 s^2_{a,h}` the log-normal mean correction of
the training residuals per asset (range-proxy assets are noisier than intraday RV).

The MLP (:mod:`models.neural.residual`) starts at zero and keeps its best-validation weights
*including* the zero start, on the last ``val_fraction`` of the training dates. The OLS is
fitted on every training row, so on the validation window its residuals are in-sample and
the gate leans toward no correction. That is deliberate: with the OLS refitted on the
training split only (an honest residual), the MLP was accepted more often and made the
walk-forward worse (QLIKE 0.4344 / 0.2836 at 1 / 7 days against 0.4300 / 0.2736 for the
OLS alone, 2021-01 → 2025-06; see tests/test_neural_harx_mlp.py and the commit message).

Options (``HarxMlpConfig``), chosen by ``benchmarks/variance_study.py`` on the selection
period 2021-01 → 2023-06 (the defaults are its choice: ``dvol_min_days`` 250 and
``weekday_terms`` on; no head, no weights, every input):

* ``dvol_min_days`` — the DVOL inputs (:data:`models.neural.inputs.DVOL_TERMS`) stay 0 until
  the training window holds that many dates with DVOL and every target; a refit a week after
  DVOL starts would otherwise fit its slopes on a handful of targets.
* ``weekday_terms`` — the one-hot weekday of day :math:`t+1`
  (:func:`models.neural.inputs.weekday_columns`): crypto RV is far lower at weekends.
* ``linear_inputs`` — ``"har_iv"`` keeps only the HAR cascade, log DVOL and the flags in the
  OLS part.

* ``own_dvol_slopes`` — an **own-DVOL head**: with :math:`o_t = 1` on rows whose DVOL is the
  asset's own index (BTC/ETH from 2021-03-24; :func:`models.neural.inputs.own_dvol`), the
  design gains :math:`o_t` and :math:`o_t z^{(k)}_t` for :data:`OWN_DVOL_TERMS` (HAR cascade,
  log DVOL, IV/RV ratio, DVOL change), so those rows get their own slopes as in ``harx_iv``'s
  IV regime while the common slopes still pool every asset. Where :math:`o_t = 0` (BTC's DVOL
  lent to an altcoin, or no DVOL yet) the head's columns are exactly 0: an explicit
  indicator and zeros, never a filled value. The head is fitted only once
  ``own_dvol_min_obs`` own-DVOL rows have a target.
* ``half_life_days`` — **recency weights** :math:`w_t = 2^{-(T-t)/\tau}` by row age in the
  training window (:func:`recency_weights`): weighted least squares, weighted log-normal
  correction, and weighted MSE for the MLP (its validation loss stays unweighted).

Example
-------
>>> model = HarxMlpForecaster(HarxMlpConfig(max_epochs=2), horizons=(1, 7)).fit(panel)
>>> frame = model.forecast(panel, horizons=[1])            # doctest: +SKIP
>>> same = HarxMlpForecaster.from_state(model.state())     # JSON-able, no pickle
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
import torch

from configs.schema import HarxMlpConfig
from features.schema import target_columns
from models.base import forecast_table, requested_horizons, trained_horizons
from models.har import within_wls
from models.neural.inputs import (
    DVOL_TERMS,
    HAR_IV_TERMS,
    INPUT_NAMES,
    OWN_DVOL_TERMS,
    own_dvol,
    present_columns,
    raw_inputs,
    weekday_columns,
)
from models.neural.module import quiet_lightning
from models.neural.residual import ResidualMlp, ResidualNetConfig, train_residual
from models.preprocessing import VAR_FLOOR, MaskedStandardScaler, dvol_mask, forward_targets

STATE_FORMAT = 2  # 2: own-DVOL head and recency weights
_OWN = [INPUT_NAMES.index(name) for name in OWN_DVOL_TERMS]
_HAR_IV = [INPUT_NAMES.index(name) for name in HAR_IV_TERMS]
_DVOL = [INPUT_NAMES.index(name) for name in DVOL_TERMS]


def recency_weights(dates: np.ndarray, half_life_days: float | None) -> np.ndarray:
    r"""(N,) sample weights by age within the training window, newest row 1.

    .. math:: w_t = 2^{-(T - t) / \tau}

    with :math:`T` the last date of the window and :math:`\tau` the half-life in days;
    ``None`` gives every row weight 1 (the plain least squares).
    """
    dates = np.asarray(dates, dtype="datetime64[ns]")
    if half_life_days is None:
        return np.ones(len(dates))
    age = (dates.max() - dates) / np.timedelta64(1, "D")  # (N,) days, >= 0
    return np.exp2(-age / half_life_days)


class HarxMlpForecaster:
    """Pooled log-HARX + residual MLP; see the module docstring for the model."""

    alias = "harx_mlp"

    def __init__(
        self, config: HarxMlpConfig | None = None, horizons: Sequence[int] = (1, 7)
    ) -> None:
        self.config = config if config is not None else HarxMlpConfig()
        self.horizons = trained_horizons("harx_mlp", horizons)
        self.assets: list[str] = []
        self.columns: list[str] = []  # optional panel columns seen in fit
        self.seen = np.empty(0, dtype=bool)  # (F,) inputs with a finite training value
        self.scaler: MaskedStandardScaler | None = None
        self.coef = np.empty((0, 0))  # (A + F, H): asset intercepts, then common slopes
        self.offset = np.empty((0, 0))  # (A, H): log-normal mean correction c_{a,h}
        self.nets: list[ResidualMlp] = []
        self.best_epochs: list[int] = []  # per seed; -1: the MLP stayed at zero
        self.own_head = False  # own-DVOL head fitted (config on and enough own-DVOL rows)

    # ------------------------------------------------------------------ fit
    def fit(self, panel: pd.DataFrame) -> Self:
        """Train on every row of ``panel`` (already truncated at the fit cutoff by the caller)."""
        leaked = target_columns(panel)
        if leaked:
            raise ValueError(f"harx_mlp.fit: panel holds target column(s) {leaked}; pass "
                             "features.schema.feature_view(panel)")
        panel = panel.sort_index()
        x, valid = raw_inputs(panel)  # (N, F), (N,)
        h = np.asarray(self.horizons, dtype=float)
        log_y = np.log(np.maximum(forward_targets(panel, self.horizons) / h, VAR_FLOOR))  # (N, H)
        ok = valid[:, None] & np.isfinite(log_y)  # (N, H)
        names = panel.index.get_level_values("asset")
        self.assets = sorted(pd.unique(names[ok.any(axis=1)]))  # hashed, not a set() of every row
        if not self.assets:
            raise ValueError("harx_mlp.fit: no row with inputs and a target; panel too short")
        asset_id = pd.Index(self.assets).get_indexer(names)  # (N,) -1: no target rows
        ok &= (asset_id >= 0)[:, None]
        self.columns = present_columns(panel)
        self.scaler = MaskedStandardScaler().fit(x[valid])
        self.seen = np.isfinite(x[valid]).any(axis=0)
        # DVOL starts 2021-03-24: a refit soon after would fit its slopes on a few days (two
        # complete 7-day targets at the 2021-04-01 refit). Below dvol_min_days dates with DVOL
        # and every target, the DVOL inputs stay unseen (0, the no-DVOL model).
        dvol_days = np.unique(panel.index.get_level_values("date")[
            dvol_mask(panel) & ok.all(axis=1)])
        if len(dvol_days) < self.config.dvol_min_days:
            self.seen[_DVOL] = False
        z = self._standardize(x)  # (N, F)
        own = own_dvol(panel)  # (N,)
        # a head fitted on a few weeks of DVOL fits noise (forecasts 100x the trailing RV in
        # May 2021, measured): it waits for own_dvol_min_obs rows, as harx_iv's IV regime does
        self.own_head = bool(self.config.own_dvol_slopes
                             and (own & ok.any(axis=1)).sum() >= self.config.own_dvol_min_obs)
        if self.own_head:
            self.columns.append("dvol_is_own")  # the head needs it to forecast
        weight = recency_weights(panel.index.get_level_values("date").to_numpy(),
                                 self.config.half_life_days)  # (N,)

        slopes = self._slope_columns(z, own, panel.index.get_level_values("date"))
        n_assets = len(self.assets)
        self.coef = np.zeros((n_assets + slopes.shape[1], len(self.horizons)))
        for j in range(len(self.horizons)):
            rows = ok[:, j]
            self.coef[:n_assets, j], self.coef[n_assets:, j], _ = within_wls(
                slopes[rows], log_y[rows, j], asset_id[rows], n_assets, weight[rows])
        log_pred = self._linear(slopes, asset_id)  # (N, H)
        self.nets, self.best_epochs = self._train_nets(
            z, asset_id, log_y - log_pred, ok, panel, weight)
        log_pred = log_pred + self._correction(z, asset_id)
        self.offset = np.zeros((len(self.assets), len(self.horizons)))
        # each asset's rows in their order by one stable sort (not a pass over every row per
        # asset, quadratic in assets), and the residuals taken once, not per asset and horizon
        order = np.argsort(asset_id, kind="stable")
        bounds = np.searchsorted(asset_id[order], np.arange(len(self.assets) + 1))
        resid = log_y - log_pred  # (N, H)
        for a in range(len(self.assets)):
            mine = order[bounds[a]:bounds[a + 1]]
            for j in range(len(self.horizons)):
                rows = mine[ok[mine, j]]
                if len(rows) > 1:
                    self.offset[a, j] = _lognormal_offset(resid[rows, j], weight[rows])
        return self

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        """(N, F) z-scores; missing → 0 (the training mean); never-trained inputs → 0."""
        assert self.scaler is not None
        return np.where(self.seen, self.scaler.transform(x), 0.0)

    def _design(
        self, z: np.ndarray, asset_id: np.ndarray, own: np.ndarray | None = None,
        dates: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, A + F) asset dummies and the common-slope columns (:meth:`_slope_columns`):
        the OLS design as written. The fit never builds it (an (N, A) block is 6 GB at 1,000
        assets); tests compare :func:`models.har.within_wls` with least squares on it."""
        dummies = (asset_id[:, None] == np.arange(len(self.assets))[None, :]).astype(float)
        return np.column_stack([dummies, self._slope_columns(z, own, dates)])

    def _linear(self, slopes: np.ndarray, asset_id: np.ndarray) -> np.ndarray:
        """(N, H) OLS part: the row's asset intercept (0 for rows of no fitted asset, as
        their all-zero dummies gave) plus the common slopes."""
        n_assets = len(self.assets)
        intercept = np.where((asset_id >= 0)[:, None],
                             self.coef[np.maximum(asset_id, 0), :], 0.0)
        return intercept + slopes @ self.coef[n_assets:]

    def _slope_columns(
        self, z: np.ndarray, own: np.ndarray | None = None, dates: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, F) inputs with common slopes (F: all, or the ``har_iv`` subset); with the
        own-DVOL head, + (1 + K): an own-DVOL indicator and the :data:`OWN_DVOL_TERMS` times
        it (exactly 0 elsewhere); with ``weekday_terms``, + 6: the weekday of day t+1
        (:func:`weekday_columns`)."""
        cols = [z if self.config.linear_inputs == "all" else z[:, _HAR_IV]]
        if self.own_head:
            ind = (np.zeros(len(z), dtype=bool) if own is None else own).astype(float)[:, None]
            cols += [ind, ind * z[:, _OWN]]
        if self.config.weekday_terms:
            if dates is None:
                raise ValueError("harx_mlp: weekday_terms needs the rows' dates")
            cols.append(weekday_columns(dates))
        return np.column_stack(cols)

    def _train_nets(
        self, z: np.ndarray, asset_id: np.ndarray, resid: np.ndarray, ok: np.ndarray,
        panel: pd.DataFrame, weight: np.ndarray,
    ) -> tuple[list[ResidualMlp], list[int]]:
        dates = panel.index.get_level_values("date").to_numpy()
        target_dates = np.unique(dates[ok.any(axis=1)])
        if len(target_dates) < 2:
            return [], []
        n_val = max(1, int(np.ceil(self.config.val_fraction * len(target_dates))))
        val_start = target_dates[-n_val]
        ends = dates[:, None] + np.array(self.horizons, dtype="timedelta64[D]")  # (N, H)
        # purged: a training target window never reaches into the validation period
        train = ok & (dates[:, None] < val_start) & (ends < val_start)
        # an asset whose rows all fall in the validation part (listed less than val_fraction
        # of the window ago) has no training row to learn its embedding from: its rows do not
        # judge the early stopping, and it is corrected as a typical asset (the trained
        # embeddings' mean, set below), as mlp_har forecasts its cold assets
        trained = np.unique(asset_id[train.any(axis=1) & (asset_id >= 0)])
        val = ok & (dates >= val_start)[:, None] & np.isin(asset_id, trained)[:, None]
        if not train.any() or not val.any():
            return [], []
        cold = np.setdiff1d(np.arange(len(self.assets)), trained)
        cfg = self.config
        nets, epochs = [], []
        for seed in cfg.seeds:
            with quiet_lightning(cfg.accelerator):
                torch.manual_seed(seed)
                net = ResidualMlp(self._net_config())
                best, _, epoch = train_residual(
                    net, _dataset(z, asset_id, resid, train, weight),
                    _dataset(z, asset_id, resid, val),
                    lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
                    max_epochs=cfg.max_epochs, patience=cfg.patience, seed=seed,
                    max_steps_per_epoch=cfg.max_steps_per_epoch,
                    accelerator=cfg.accelerator, gpu_precision=cfg.gpu_precision,
                )
            net.load_state_dict(best)
            if len(cold):
                with torch.no_grad():
                    weight_ = net.embed.weight
                    weight_[torch.from_numpy(cold)] = weight_[torch.from_numpy(trained)].mean(0)
            nets.append(net.cpu().float().eval())
            epochs.append(epoch)
        return nets, epochs

    def _net_config(self) -> ResidualNetConfig:
        return ResidualNetConfig(n_inputs=len(INPUT_NAMES), n_assets=len(self.assets),
                                 n_horizons=len(self.horizons), hidden=self.config.hidden,
                                 embed_dim=self.config.embed_dim)

    def _correction(self, z: np.ndarray, asset_id: np.ndarray) -> np.ndarray:
        """(N, H) mean of the seeds' MLP corrections in log space (0 without nets)."""
        out = np.zeros((len(z), len(self.horizons)))
        if not self.nets:
            return out
        zt = torch.from_numpy(z.astype(np.float32))  # (N, F)
        at = torch.from_numpy(np.maximum(asset_id, 0).astype(np.int64))  # (N,)
        with torch.no_grad():
            for net in self.nets:
                out += net(zt, at).numpy().astype(np.float64)
        return out / len(self.nets)

    # ------------------------------------------------------------- forecast
    def forecast(
        self,
        panel: pd.DataFrame,
        horizons: Sequence[int],
        cutoffs: pd.DatetimeIndex | None = None,
    ) -> pd.DataFrame:
        """Forecast at every cutoff (default: every date) of every asset seen in fit."""
        if self.scaler is None:
            raise RuntimeError("harx_mlp: call fit(panel) or from_state(state) first")
        horizons = requested_horizons("harx_mlp", horizons, self.horizons)
        lacking = sorted(set(self.columns) - set(panel.columns))
        if lacking:
            raise ValueError(f"harx_mlp: panel lacks column(s) {lacking} the model was fitted "
                             "with; build the panel with features/ or refit")
        keep = panel.index.get_level_values("asset").isin(self.assets)
        if cutoffs is not None:
            keep &= panel.index.get_level_values("date").isin(pd.DatetimeIndex(cutoffs))
        rows = panel[keep].sort_index()
        x, valid = raw_inputs(rows)
        rows, x = rows.iloc[np.flatnonzero(valid)], x[valid]
        names = rows.index.get_level_values("asset")
        asset_id = pd.Index(self.assets).get_indexer(names)  # (N,)
        z = self._standardize(x)  # (N, F)
        slopes = self._slope_columns(z, own_dvol(rows), rows.index.get_level_values("date"))
        log_mean = self._linear(slopes, asset_id) + self._correction(z, asset_id)
        variance = np.asarray(self.horizons) * np.exp(log_mean + self.offset[asset_id])  # (N, H)

        return forecast_table(names, rows.index.get_level_values("date"), horizons,
                              variance[:, [self.horizons.index(h) for h in horizons]])

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """Everything needed to forecast, JSON-able (float32 weights are exact as lists)."""
        if self.scaler is None:
            raise RuntimeError("harx_mlp: nothing to save before fit")
        return {
            "alias": self.alias,
            "format": STATE_FORMAT,
            "config": self.config.model_dump(mode="json"),
            "horizons": list(self.horizons),
            "assets": list(self.assets),
            "columns": list(self.columns),
            "seen": self.seen.tolist(),
            "input_names": list(INPUT_NAMES),
            "scaler": {"mean": self.scaler.mean_.tolist(), "scale": self.scaler.scale_.tolist()},
            "coef": self.coef.tolist(),
            "offset": self.offset.tolist(),
            "best_epochs": list(self.best_epochs),
            "own_head": self.own_head,
            "nets": [
                {name: {"shape": list(t.shape), "values": t.tolist()}
                 for name, t in net.state_dict().items()}
                for net in self.nets
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        if state.get("alias") != cls.alias or state.get("format") != STATE_FORMAT:
            raise ValueError(f"harx_mlp.from_state: expected alias {cls.alias!r} format "
                             f"{STATE_FORMAT}, got {state.get('alias')!r} format "
                             f"{state.get('format')!r}")
        if list(state["input_names"]) != list(INPUT_NAMES):
            raise ValueError(f"harx_mlp.from_state: state inputs {state['input_names']} differ "
                             f"from this code's {list(INPUT_NAMES)}; retrain the model")
        model = cls(HarxMlpConfig(**state["config"]), horizons=state["horizons"])
        model.assets = list(state["assets"])
        model.columns = list(state["columns"])
        model.seen = np.asarray(state["seen"], dtype=bool)
        model.scaler = MaskedStandardScaler()
        model.scaler.mean_ = np.asarray(state["scaler"]["mean"], dtype=float)
        model.scaler.scale_ = np.asarray(state["scaler"]["scale"], dtype=float)
        model.coef = np.asarray(state["coef"], dtype=float)
        model.offset = np.asarray(state["offset"], dtype=float)
        model.best_epochs = list(state["best_epochs"])
        model.own_head = bool(state["own_head"])
        model.nets = []
        for weights in state["nets"]:
            net = ResidualMlp(model._net_config())
            net.load_state_dict({
                name: torch.tensor(w["values"], dtype=torch.float32).reshape(w["shape"])
                for name, w in weights.items()
            })
            model.nets.append(net.eval())
        return model


def _lognormal_offset(resid: np.ndarray, weight: np.ndarray) -> float:
    r"""Weighted :math:`\bar\varepsilon + \tfrac12 s^2` of log residuals (unbiased weights
    for reliability weights; equal weights give the mean and the ddof=1 variance)."""
    w = weight / weight.sum()
    mean = float(w @ resid)
    var = float(w @ (resid - mean) ** 2) / max(1.0 - float(w @ w), 1e-12)
    return mean + 0.5 * var


def _dataset(
    z: np.ndarray, asset_id: np.ndarray, resid: np.ndarray, mask: np.ndarray,
    weight: np.ndarray | None = None,
) -> torch.utils.data.TensorDataset:
    rows = np.flatnonzero(mask.any(axis=1))
    tensors = [
        torch.from_numpy(z[rows].astype(np.float32)),  # (n, F)
        torch.from_numpy(asset_id[rows].astype(np.int64)),  # (n,)
        torch.from_numpy(np.where(mask[rows], resid[rows], 0.0).astype(np.float32)),  # (n, H)
        torch.from_numpy(mask[rows]),  # (n, H) bool
    ]
    if weight is not None:
        tensors.append(torch.from_numpy(weight[rows].astype(np.float32)))  # (n,)
    return torch.utils.data.TensorDataset(*tensors)

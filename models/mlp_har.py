r"""``mlp_har``: a global HAR-style MLP on log variance, trained on QLIKE with Lightning.

In the spirit of Corsi's (2009) HAR-RV, the forecast of the :math:`h`-day forward variance
at the end of day :math:`t` is a function of that day's row only,

.. math::

    \log \hat V_{t,h} = f_h\big(\log RV^{(1)}_t, \log RV^{(7)}_t, \log RV^{(30)}_t,
        \log GK_t, r_t, |r_t|, m_t \log DVOL_t, m_t, \mathbb 1^{hourly}_t, e_{a}\big),

with :math:`m_t` the DVOL availability mask (a masked input is 0, never a pretend value) and
:math:`e_a` a learned asset embedding: one network is pooled across every asset (an asset
with no training row, e.g. listed within the validation part of the window, is forecast with
the mean embedding, a typical asset, until a refit learns its own). The target
is :math:`V_{t,h} = \sum_{i=1}^{h} RV_{t+i}` (:func:`features.targets.forward_variance`),
built inside :meth:`MlpHarForecaster.fit` from the ``rv`` column of the panel it receives.

Example
-------
>>> model = MlpHarForecaster(MlpHarConfig(max_epochs=2), horizons=(1, 7)).fit(panel)
>>> frame = model.forecast(panel, horizons=[1])            # doctest: +SKIP
>>> same = MlpHarForecaster.from_state(model.state())      # JSON-able, no pickle
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch

from configs.schema import MlpHarConfig
from features.schema import target_columns
from models.base import forecast_table, requested_horizons, trained_horizons
from models.neural.module import (
    INPUT_NAMES,
    PANEL_COLUMNS,
    Scaler,
    check_columns,
    forward_log_targets,
    quiet_lightning,
    raw_inputs,
    tensor_dataset,
    train_network,
)
from models.neural.network import MlpHarNet, NetworkConfig

STATE_FORMAT = 1


class MlpHarForecaster:
    """Pooled MLP-HAR forecaster; see the module docstring for the model."""

    alias = "mlp_har"

    def __init__(
        self, config: MlpHarConfig | None = None, horizons: Sequence[int] = (1, 7)
    ) -> None:
        self.config = config if config is not None else MlpHarConfig()
        self.horizons = trained_horizons("mlp_har", horizons)
        self.assets: list[str] = []  # one learned embedding each
        self.cold_assets: list[str] = []  # in the fit panel, no training row: mean embedding
        self.scaler: Scaler | None = None
        self.net: MlpHarNet | None = None
        self.best_val_loss = float("nan")
        self.epochs_trained = 0  # epochs run by the last fit (early stopping may cut it short)
        self.train_rows = 0  # (asset, day) rows the last fit trained on

    # ------------------------------------------------------------------ fit
    def fit(self, panel: pd.DataFrame) -> Self:
        """Train on every row of ``panel`` (already truncated at the fit cutoff by the caller)."""
        leaked = target_columns(panel)
        if leaked:
            raise ValueError(
                f"mlp_har.fit: panel holds target column(s) {leaked}; pass "
                "features.schema.feature_view(panel) — targets are built inside fit from rv"
            )
        check_columns(panel, (*PANEL_COLUMNS, "rv"))
        panel = panel.sort_index()
        continuous, flags, valid = raw_inputs(panel)
        log_y = forward_log_targets(panel, self.horizons)  # (N, H)
        mask = np.isfinite(log_y) & valid[:, None]  # (N, H)
        dates = panel.index.get_level_values("date").to_numpy()
        train_mask, val_mask = self._time_split(dates, mask)

        asset_names = panel.index.get_level_values("asset")  # hashed, not a set() of every row
        self.assets = sorted(pd.unique(asset_names[train_mask.any(axis=1)]))
        asset_id = pd.Index(self.assets).get_indexer(asset_names)  # -1: no training rows
        val_mask &= (asset_id >= 0)[:, None]
        # an asset whose rows all fall in the validation part (listed less than
        # val_fraction of the window ago, however long its own history) has no embedding to
        # learn: it is forecast as a typical asset (the mean embedding) rather than dropped,
        # which left a new listing without mlp_har forecasts for up to a year and, through
        # the comparison's common support, every model scored on its last few days only
        self.cold_assets = sorted(set(pd.unique(asset_names[valid])) - set(self.assets))
        train_rows, val_rows = train_mask.any(axis=1), val_mask.any(axis=1)
        if not val_rows.any():
            raise ValueError("mlp_har.fit: no validation targets; the panel is too short")

        self.scaler = Scaler.fit(continuous[train_rows])
        x = self.scaler.transform(continuous, flags)  # (N, F)
        with quiet_lightning(self.config.accelerator):
            pl.seed_everything(self.config.seed, workers=True, verbose=False)
        net = MlpHarNet(
            NetworkConfig(
                n_inputs=len(INPUT_NAMES),
                n_assets=len(self.assets),
                n_horizons=len(self.horizons),
                hidden=self.config.hidden,
                embed_dim=self.config.embed_dim,
            )
        )
        mean_log_y = np.nanmean(np.where(train_mask, log_y, np.nan), axis=0)  # (H,)
        net.init_output_bias(torch.tensor(mean_log_y, dtype=torch.float32))
        best_state, self.best_val_loss, self.epochs_trained = train_network(
            net,
            tensor_dataset(
                x[train_rows], asset_id[train_rows], log_y[train_rows], train_mask[train_rows]
            ),
            tensor_dataset(x[val_rows], asset_id[val_rows], log_y[val_rows], val_mask[val_rows]),
            self.config,
        )
        self.train_rows = int(train_rows.sum())
        if best_state:  # empty only if every validation loss was NaN: keep the last weights
            net.load_state_dict(best_state)
        self.net = net.cpu().float().eval()
        return self

    def _time_split(self, dates: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Last ``val_fraction`` of the dates with a target is validation; purge the overlap.

        A training target at ``t`` spans ``t+1 .. t+h``; pairs whose window reaches into the
        validation period are dropped so early stopping never scores what training saw.
        """
        target_dates = np.unique(dates[mask.any(axis=1)])
        if len(target_dates) < 2:
            raise ValueError(
                f"mlp_har.fit: {len(target_dates)} date(s) with valid inputs and targets; "
                "need a longer panel (har_rv_30d needs 30 days, targets need h more)"
            )
        n_val = max(1, int(np.ceil(self.config.val_fraction * len(target_dates))))
        val_start = target_dates[-n_val]
        is_val = (dates >= val_start)[:, None]  # (N, 1)
        ends = dates[:, None] + np.array(self.horizons, dtype="timedelta64[D]")  # (N, H)
        train_mask = mask & ~is_val & (ends < val_start)
        if not train_mask.any(axis=0).all():
            raise ValueError("mlp_har.fit: a horizon has no training target; panel too short")
        return train_mask, mask & is_val

    # ------------------------------------------------------------- forecast
    def forecast(
        self,
        panel: pd.DataFrame,
        horizons: Sequence[int],
        cutoffs: pd.DatetimeIndex | None = None,
    ) -> pd.DataFrame:
        """Forecast at every cutoff (default: every date) of every asset seen in fit (those
        with no training row through the mean embedding: :meth:`MlpHarNet.embeddings`)."""
        net, scaler = self._fitted()
        horizons = requested_horizons("mlp_har", horizons, self.horizons)
        check_columns(panel, PANEL_COLUMNS)
        keep = panel.index.get_level_values("asset").isin([*self.assets, *self.cold_assets])
        if cutoffs is not None:
            keep &= panel.index.get_level_values("date").isin(pd.DatetimeIndex(cutoffs))
        rows = panel[keep].sort_index()
        continuous, flags, valid = raw_inputs(rows)
        rows = rows.iloc[np.flatnonzero(valid)]
        x = torch.from_numpy(scaler.transform(continuous[valid], flags[valid]))  # (N, F)
        asset_names = rows.index.get_level_values("asset")
        asset_id = torch.from_numpy(pd.Index(self.assets).get_indexer(asset_names))  # (N,)
        with torch.no_grad():
            log_var = net.head(x, net.embeddings(asset_id)).numpy()  # (N, H_trained)
        variance = np.exp(log_var.astype(np.float64))  # (N, H_trained)

        return forecast_table(asset_names, rows.index.get_level_values("date"), horizons,
                              variance[:, [self.horizons.index(h) for h in horizons]])

    def _fitted(self) -> tuple[MlpHarNet, Scaler]:
        if self.net is None or self.scaler is None:
            raise RuntimeError("mlp_har: call fit(panel) or from_state(state) first")
        return self.net, self.scaler

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """Everything needed to forecast, as JSON-able lists (float32 weights are exact)."""
        net, scaler = self._fitted()
        return {
            "alias": self.alias,
            "format": STATE_FORMAT,
            "config": self.config.model_dump(mode="json"),
            "horizons": list(self.horizons),
            "assets": list(self.assets),
            "cold_assets": list(self.cold_assets),
            "input_names": list(INPUT_NAMES),
            "scaler": {"mean": scaler.mean.tolist(), "std": scaler.std.tolist()},
            "best_val_loss": self.best_val_loss,
            "weights": {
                name: {"shape": list(t.shape), "values": t.tolist()}
                for name, t in net.state_dict().items()
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        if state.get("alias") != cls.alias or state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"mlp_har.from_state: expected alias {cls.alias!r} format {STATE_FORMAT}, got "
                f"{state.get('alias')!r} format {state.get('format')!r}"
            )
        if list(state["input_names"]) != list(INPUT_NAMES):
            raise ValueError(
                f"mlp_har.from_state: state inputs {state['input_names']} differ from this "
                f"code's {list(INPUT_NAMES)}; retrain the model"
            )
        model = cls(MlpHarConfig(**state["config"]), horizons=state["horizons"])
        model.assets = list(state["assets"])
        model.cold_assets = list(state.get("cold_assets", []))  # states written before: none
        model.scaler = Scaler(
            mean=np.asarray(state["scaler"]["mean"], dtype=float),
            std=np.asarray(state["scaler"]["std"], dtype=float),
        )
        model.best_val_loss = float(state["best_val_loss"])
        net = MlpHarNet(
            NetworkConfig(
                n_inputs=len(INPUT_NAMES),
                n_assets=len(model.assets),
                n_horizons=len(model.horizons),
                hidden=model.config.hidden,
                embed_dim=model.config.embed_dim,
            )
        )
        weights = {
            name: torch.tensor(w["values"], dtype=torch.float32).reshape(w["shape"])
            for name, w in state["weights"].items()
        }
        net.load_state_dict(weights)
        model.net = net.eval()
        return model

r"""``tail_nn``: a pooled Lightning network forecasting VaR and ES of the covered loss.

Tail scale (row ``t`` only, per side): the 99 % VaR of a classical tail model
(``scale_model``: ``fhs_ewma``, ``fhs_garch`` or ``evt_garch`` with the run's settings of
that model, fitted and forecast inside this model); the network learns multipliers of it.
Inputs (row ``t`` only): the log of that scale for both sides, log HAR volatilities at
1/7/30 days, log DVOL volatility and its flag, log covered losses of the interval ending
at ``t`` and their 7-day maxima for both sides, and the context columns of
:data:`models.tail.inputs.CONTEXT_INPUTS` (returns, VRP, SPX and basket correlations, BTC
beta, liquidity, VIX), and the groups of intraday measures named in ``extra_inputs``
(:data:`models.tail.inputs.EXTRA_INPUTS`: signed semivariances, jump share, realized
kurtosis, DVOL changes), standardized on the training window with missing values at the mean
and their flags beside them (:class:`models.preprocessing.MaskedStandardScaler`). Network
and loss: :mod:`models.tail.net`.

**Objective** (``objective``). ``fz0``: the network's outputs are VaR and ES multipliers per
level, trained by the FZ0 loss (:class:`models.tail.net.TailNet`). ``scale_nll``: it
outputs one scale multiplier per side, trained on every row by a Gaussian scale likelihood,
and VaR/ES are the scale times the empirical tail of the window's standardized losses
(:class:`models.tail.net.ScaleTailNet`, set after training by :meth:`_set_tails`): the
FZ0 gradient comes from the few hundred rows beyond the VaR of a window, the likelihood's
from all of them. That tail is pooled over the assets, or with ``asset_tail_prior_rows``
> 0 each asset's own blended with it by credibility (:func:`asset_tails`; a stablecoin's
standardized losses have a thinner tail than a crypto asset's); several values are
candidates, chosen per window by the ensemble's validation FZ0 with tails from the training
rows alone (:meth:`TailNetForecaster._choose_prior`). Validation, early stopping and the
choices below use the objective's own loss.

**Honest training.** Everything is chosen inside the window given to ``fit``: the last
``val_fraction`` of its dates, after a purge of ``U`` days (their targets overlap the
validation period), is the validation set, and the rows trained and validated on take their
tail scale from a second classical model fitted on the training rows alone (the window's own
would have seen the validation period); each pair (weight decay of ``weight_decays``,
recency half-life of ``recency_half_lives``) is trained with early stopping on it and the
pair with the lowest validation loss is kept; the untrained start (the rescaled classical
tail) is a candidate too, so a network that cannot beat it on the validation period falls
back to it. Recency weighting weights the training loss of a row dated :math:`d_i` by

.. math::

    w_i \propto 2^{-(T - d_i)/h}, \qquad \bar w = 1,

with :math:`T` the last training date and :math:`h` the half-life in days (:math:`h = 0`:
equal weights); validation is never weighted.

**Seed ensemble** (a deep ensemble, Lakshminarayanan, Pritzel and Blundell 2017). With the
pair chosen (by the network of seed ``seed``), ``ensemble_size - 1`` more networks are
trained with seeds ``seed + 1, seed + 2, ...`` (initialization and shuffling), each early
stopped on the same validation set; the forecast averages the members' VaR and ES at each
level (:func:`models.tail.net.average_tail`), which keeps ES >= VaR and monotonicity in the
level. One network's FZ0 path depends on its seed through a few hundred tail events per
window; averaging removes that noise at a cost linear in the members.
With ``refit_on_validation``, each member is then trained again from its seed on the whole
window (validation rows included, recency weights recomputed to its last date) for the
number of epochs its early stopping chose; a member whose best was the untrained start
stays the start. The validation period is the most recent part of the window, so without
this refit the newest months only ever stop training and never shape the weights.
An asset whose rows all fall in the validation part (listed within it) has no embedding to
learn: it is validated and forecast with the mean of the trained embeddings, a typical
asset (``cold_assets``; :meth:`models.tail.net.TailNet.embeddings`), not with its untrained
random start, until a refit (or ``refit_on_validation``) trains its own.
Deterministic on CPU (seeded shuffling, one intra-op thread); ``accelerator`` and
``gpu_precision`` (float32 by default) place it (:func:`models.neural.module.device_kwargs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler, TensorDataset

from configs.schema import ModelsConfig, TailConfig, TailEvtConfig, TailFhsConfig, TailNnConfig
from models.base import asset_frame, select_cutoffs
from models.neural.module import batch_loader, new_trainer, quiet_lightning, step_loader
from models.preprocessing import MaskedStandardScaler
from models.tail.base import (
    DEFAULT_LEVELS,
    SIDES,
    concat_tails,
    covered_loss_targets,
    fitted_levels,
    tail_frame,
)
from models.tail.classical import EvtTail, FhsTail
from models.tail.inputs import FLOOR, context_inputs, extra_inputs, scale_inputs
from models.tail.net import (
    ScaleTailModule,
    ScaleTailNet,
    TailModule,
    TailNet,
    TailNetConfig,
    average_tail,
    weighted_fz0,
)

BASE_LEVEL = 0.99  # the classical VaR level used as the tail scale
ScaleModel = FhsTail | EvtTail


def scale_model(alias: str, variant: str, interval_days: int,
                section: TailFhsConfig | TailEvtConfig | None = None,
                models: ModelsConfig | None = None) -> ScaleModel:
    """The classical tail model ``alias`` with its ``section`` of the run's tail settings
    (defaults where none is given) and this loss variant, its variance forecaster built from
    ``models``."""
    section = getattr(TailConfig(), alias) if section is None else section
    cls = EvtTail if alias == "evt_garch" else FhsTail
    return cls(section.model_copy(update={"loss_variant": variant}), alias, interval_days,
               models)


def base_scale(base: ScaleModel, panel: pd.DataFrame, cutoffs: pd.DatetimeIndex | None
               ) -> dict[str, pd.DataFrame]:
    """Per asset, (date × side) classical 99 % VaR: the tail scale of each row."""
    fc = base.forecast_tail(panel, [BASE_LEVEL], cutoffs)
    return {str(a): b.pivot(index="cutoff", columns="side", values="var")
            for a, b in fc.groupby("asset")}


def empirical_tail(ratio: np.ndarray, levels: Sequence[float]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(S, K) empirical quantiles at ``levels`` and tail means beyond them of each column of
    ``ratio`` (N, S), NaN ignored: monotone in the level, tail mean >= quantile."""
    q = np.asarray(levels)
    var = np.stack([np.nanquantile(ratio[:, j], q) for j in range(ratio.shape[1])])
    es = np.stack([[np.nanmean(ratio[:, j][ratio[:, j] >= v]) for v in var[j]]
                   for j in range(ratio.shape[1])])
    return var, es


def asset_tails(z: np.ndarray, asset: np.ndarray, n_vocab: int, levels: Sequence[float],
                prior_rows: float, pooled: tuple[np.ndarray, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    r"""(A, S, K) VaR and ES multipliers per vocabulary entry: credibility-weighted blends

    .. math::

        z_{a} = w_{a}\, z^{\mathrm{own}}_{a} + (1 - w_{a})\, z^{\mathrm{pooled}},
        \qquad w_{a} = \frac{n_{a}}{n_{a} + n_0},

    per side, of the empirical tail of asset ``a``'s standardized losses ``z`` (its
    :math:`n_a` rows with a target) and of the ``pooled`` one (:func:`empirical_tail` of every
    row), with :math:`n_0` = ``prior_rows`` (Bühlmann credibility; 0: the pooled tail for
    every asset). Entry 0 (an asset not seen in fit) takes the pooled tail. A convex blend of
    two tails monotone in the level with ES >= VaR is one too. An asset whose own tail is not
    positive at every level (a price that never fell over the window) takes the pooled one."""
    p_var, p_es = pooled  # (S, K) each
    out_var = np.repeat(p_var[None], n_vocab, axis=0)
    out_es = np.repeat(p_es[None], n_vocab, axis=0)
    if prior_rows <= 0:
        return out_var, out_es
    order = np.argsort(asset, kind="stable")  # one pass: each asset's rows, contiguous
    codes, starts = np.unique(asset[order], return_index=True)
    for code, rows in zip(codes, np.split(z[order], starts[1:]), strict=True):  # (n, S) each
        n = np.isfinite(rows).sum(axis=0)  # (S,)
        for j in np.flatnonzero(n > 0):
            own_var, own_es = empirical_tail(rows[:, [j]], levels)
            if not (own_var > 0).all():
                continue
            w = n[j] / (n[j] + prior_rows)
            out_var[code, j] = w * own_var[0] + (1 - w) * p_var[j]
            out_es[code, j] = w * own_es[0] + (1 - w) * p_es[j]
    return out_var, out_es


def recency_weights(dates: np.ndarray, half_life: float) -> np.ndarray:
    """Training-row weights :math:`2^{-(T - d_i)/h}` with mean 1; equal where ``h <= 0``."""
    if half_life <= 0 or len(dates) == 0:
        return np.ones(len(dates))
    age = (dates.max() - dates) / np.timedelta64(1, "D")
    w = np.exp2(-age.astype(float) / half_life)
    return w / w.mean()


def scale_free_inputs(frame: pd.DataFrame, variant: str, extra: Sequence[str] = ()
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(N, F - S) the inputs of one asset's rows that do not depend on the tail scale, and
    (N,) their validity; ``extra``: groups of :data:`models.tail.inputs.EXTRA_INPUTS`."""
    long, short = (scale_inputs(frame, side, variant) for side in SIDES)  # (N, 7) each
    logs = np.log(np.maximum(long[:, :4], FLOOR))  # log σ 1/7/30d, log DVOL σ (NaN outside)
    recent = np.log(np.maximum(np.column_stack([long[:, 5:], short[:, 5:]]), FLOOR))
    rest = np.column_stack([logs, long[:, 4], recent, context_inputs(frame),
                            extra_inputs(frame, list(extra))])
    valid = np.isfinite(long[:, [0, 1, 2, 5, 6]]).all(axis=1) & np.isfinite(short[:, 5:]).all(1)
    return rest, valid


def with_scale(rest: np.ndarray, valid: np.ndarray, index: pd.Index,
               base: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, F) inputs (the log scale per side first), (N, S) scale :math:`s_t`, (N,) validity
    of rows whose scale-free inputs are ``rest`` and ``valid``, the scale read from ``base``
    (date × side; None: no scale)."""
    scale = (np.full((len(index), len(SIDES)), np.nan) if base is None
             else base.reindex(index=index, columns=list(SIDES)).to_numpy(float))
    x = np.column_stack([np.log(np.maximum(scale, FLOOR)), rest])
    return x, scale, valid & (np.isfinite(scale) & (scale > 0)).all(axis=1)


def row_inputs(frame: pd.DataFrame, base: pd.DataFrame | None, variant: str,
               extra: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, F) raw inputs, (N, S) scale :math:`s_t`, (N,) validity of one asset's rows;
    ``extra``: groups of :data:`models.tail.inputs.EXTRA_INPUTS` appended to the inputs."""
    return with_scale(*scale_free_inputs(frame, variant, extra), frame.index, base)


class TailNetForecaster:
    """Pooled tail network, scale- or FZ0-trained (module docstring)."""

    def __init__(self, config: TailNnConfig, alias: str = "tail_nn", interval_days: int = 1,
                 scale_section: TailFhsConfig | TailEvtConfig | None = None,
                 models: ModelsConfig | None = None) -> None:
        self.config = config
        self.alias = alias
        self.interval_days = int(interval_days)
        self.levels = list(DEFAULT_LEVELS)
        self.assets: list[str] = []
        self.cold_assets: list[str] = []  # in the fit, no training row: the mean embedding
        self.scaler: MaskedStandardScaler | None = None
        self.nets: list[TailNet] = []  # the seed ensemble
        self.chosen: dict[str, Any] = {}
        self.fit_stats: dict[str, int] = {}  # rows and epochs of the last fit (benchmarks)
        # the classical scale: the run's section of its alias and forecaster settings
        self.scale_section, self.models = scale_section, models
        self.base = self._scale_model()

    def _parts(self, panel: pd.DataFrame, targets: bool) -> dict[str, tuple[Any, ...]]:
        """asset → (scale-free inputs, their validity, targets, dates): what every scale
        model's rows share (:meth:`_rows`)."""
        out = {}
        for asset in sorted(panel.index.get_level_values("asset").unique()):
            frame = asset_frame(panel, asset)
            rest, ok = scale_free_inputs(frame, self.config.loss_variant,
                                         self.config.extra_inputs)
            y = (np.column_stack([covered_loss_targets(frame, side, self.config.loss_variant,
                                                       self.interval_days).to_numpy()
                                  for side in SIDES]) if targets else None)
            out[asset] = (rest, ok, y, frame.index)
        return out

    def _rows(self, panel: pd.DataFrame, targets: bool,
              cutoffs: pd.DatetimeIndex | None = None, base: ScaleModel | None = None,
              parts: dict[str, tuple[Any, ...]] | None = None) -> dict[str, tuple[Any, ...]]:
        """asset → (inputs, scale, validity, targets, dates), the scale from ``base``
        (default: the model's own); ``parts``: :meth:`_parts` of ``panel`` when the caller
        has them (a fit reads two scale models over the same rows)."""
        bases = base_scale(self.base if base is None else base, panel, cutoffs)
        parts = self._parts(panel, targets) if parts is None else parts
        return {asset: (*with_scale(rest, ok, dates, bases.get(asset)), y, dates)
                for asset, (rest, ok, y, dates) in parts.items()}

    def _tensors(self, x: np.ndarray, asset: np.ndarray, s: np.ndarray, y: np.ndarray
                 ) -> TensorDataset:
        assert self.scaler is not None
        mask = np.isfinite(y)
        return TensorDataset(
            torch.from_numpy(self.scaler.transform(x).astype(np.float32)),  # (N, F)
            torch.from_numpy(asset.astype(np.int64)),  # (N,)
            torch.from_numpy(s.astype(np.float32)),  # (N, S)
            torch.from_numpy(np.where(mask, y, 0.0).astype(np.float32)),  # (N, S)
            torch.from_numpy(mask),  # (N, S)
            torch.ones(len(y), dtype=torch.float32))  # (N,) row weights

    @staticmethod
    def _weighted(data: TensorDataset, weight: np.ndarray) -> TensorDataset:
        return TensorDataset(*data.tensors[:5], torch.from_numpy(weight.astype(np.float32)))

    @property
    def refused(self) -> dict[str, dict[str, str]]:
        """The assets and sides its classical scale model declined to fit (no scale there,
        so no forecast): EVT's degenerate GPD fits."""
        return dict(getattr(self.base, "refused", None) or {})

    def _scale_model(self) -> ScaleModel:
        return scale_model(self.config.scale_model, self.config.loss_variant,
                           self.interval_days, self.scale_section, self.models)

    @staticmethod
    def _stack(rows: dict[str, tuple[Any, ...]]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, s, y, dates, asset code) of every asset's valid rows with a target."""
        keep = [r[2] & np.isfinite(r[3]).any(axis=1) for r in rows.values()]
        parts = list(zip(rows.values(), keep, strict=True))
        return (np.vstack([r[0][k] for r, k in parts]), np.vstack([r[1][k] for r, k in parts]),
                np.vstack([r[3][k] for r, k in parts]),
                np.concatenate([r[4][k].to_numpy() for r, k in parts]),
                np.concatenate([np.full(k.sum(), i + 1) for i, k in enumerate(keep)]))

    def fit(self, panel: pd.DataFrame) -> Self:
        cfg, u = self.config, self.interval_days
        self.base.fit(panel)
        parts = self._parts(panel, targets=True)
        rows = self._rows(panel, True, parts=parts)
        self.assets = list(rows)
        x_all, s_all, y_all, dates_all, asset_all = self._stack(rows)
        if len(y_all) < 500:
            raise ValueError(f"{self.alias}: only {len(y_all)} training rows with inputs and "
                             "a target; need >= 500")
        uniq = np.unique(dates_all)
        val_start = uniq[int(len(uniq) * (1 - cfg.val_fraction))]
        train_end = val_start - np.timedelta64(u, "D")  # purge overlapping targets
        # the rows trained and validated on take their scale from a classical model fitted on
        # the training rows alone: with the whole window's, the validation rows' scale (and the
        # untrained start, a candidate) would have seen the validation period's losses
        before = panel.index.get_level_values("date") < train_end
        base_train = self._scale_model().fit(panel[before])
        x, s, y, dates, asset = self._stack(self._rows(panel, True, base=base_train,
                                                       parts=parts))
        val = dates >= val_start
        train = dates < train_end
        if train.sum() < 500 or not val.any():
            raise ValueError(f"{self.alias}: {int(train.sum())} training and {int(val.sum())} "
                             "validation rows with a scale fitted before the validation "
                             "period; need >= 500 and >= 1")
        # an asset whose rows all fall in the validation part has no embedding to learn:
        # validated and forecast as a typical asset (TailNet.embeddings), not its random start
        trained = np.unique(asset[train])
        self.cold_assets = [a for i, a in enumerate(self.assets) if i + 1 not in trained]
        self.scaler = MaskedStandardScaler().fit(x[train])
        ratio = y[train] / s[train]  # (N, S)
        start: tuple[np.ndarray, ...]  # where every net starts (_module)
        if cfg.objective == "scale_nll":  # σ = s · RMS(y/s): the log of RMS per side, (S,)
            start = (0.5 * np.log(np.nanmean(ratio ** 2, axis=0)),)
        else:  # the window's unconditional VaR and ES of y/s, (S, K) each
            start = empirical_tail(ratio, self.levels)
        data_tr = self._tensors(x[train], asset[train], s[train], y[train])
        data_va = self._tensors(x[val], asset[val], s[val], y[val])
        n_in, epochs = x.shape[1], 0
        best: tuple[float, float, float, dict[str, torch.Tensor]] | None = None
        for half_life in cfg.recency_half_lives:
            weighted = self._weighted(data_tr, recency_weights(dates[train], half_life))
            for wd in cfg.weight_decays:
                loss, state, ran, n_best = self._train(weighted, data_va, n_in, start, wd,
                                                       cfg.seed)
                epochs += ran
                if best is None or loss < best[0]:
                    best = (loss, wd, half_life, state, n_best)
        assert best is not None
        val_loss, wd, half_life, state, n_best = best
        weighted = self._weighted(data_tr, recency_weights(dates[train], half_life))
        states, member_fz0, member_epochs = [state], [val_loss], [n_best]
        for k in range(1, cfg.ensemble_size):
            loss, state, ran, n_best = self._train(weighted, data_va, n_in, start, wd,
                                                   cfg.seed + k)
            epochs += ran
            states.append(state)
            member_fz0.append(loss)
            member_epochs.append(n_best)
        self.nets = [self._new_net(n_in) for _ in states]
        for net, st in zip(self.nets, states, strict=True):
            net.load_state_dict(st)
            net.eval()
        # the window's rows with the whole window's scale, the one it forecasts with: the
        # learned scale's tail
        every = self._tensors(x_all, asset_all, s_all, y_all)
        prior, prior_record = self._choose_prior(data_tr, data_va)
        self._set_tails(every, prior)
        # the ensemble's validation FZ0 (for the record; with scale_nll its tail multipliers
        # came from every row of the window, the validation rows among them)
        xv, av, sv, yv, mv, wv = data_va.tensors
        ens = float(weighted_fz0(yv, *average_tail(self.nets, xv, av, sv), mv, wv,
                                 torch.tensor([1.0 - q for q in self.levels])))
        if cfg.refit_on_validation:  # module docstring; the scores above stay out-of-sample
            full = self._weighted(every, recency_weights(dates_all, half_life))
            for k, n_ep in enumerate(member_epochs):
                if n_ep > 0:
                    self.nets[k].load_state_dict(
                        self._refit(full, n_in, start, wd, cfg.seed + k, n_ep))
                    self.nets[k].eval()
                    epochs += n_ep
            if any(n > 0 for n in member_epochs):  # the refit trained every row of the window
                seen = set(np.unique(asset_all).tolist())  # an asset with none stays cold
                self.cold_assets = [a for i, a in enumerate(self.assets) if i + 1 not in seen]
                for net in self.nets:
                    net.set_known(self._known())
            self._set_tails(every, prior)  # the refit nets' scales, with the embeddings they
            # forecast by
        self.fit_stats = {"train_rows": int(train.sum()), "epochs": epochs}
        score = "val_fz0" if cfg.objective == "fz0" else "val_nll"  # the training objective's
        self.chosen = {"validation_start": str(pd.Timestamp(val_start).date()),
                       "weight_decay": wd, "recency_half_life": half_life,
                       score: val_loss, f"{score}_members": member_fz0,
                       "val_fz0_ensemble": ens, "epochs_members": member_epochs,
                       **prior_record}
        return self

    def _choose_prior(self, train: TensorDataset, val: TensorDataset
                      ) -> tuple[float, dict[str, Any]]:
        r"""``scale_nll``: the ``asset_tail_prior_rows`` candidate whose tails, taken from the
        training rows alone, give the ensemble the lowest validation FZ0 (all sides and
        levels; the first candidate on a tie, the only one when one is configured), and the
        record of the choice for ``chosen`` (empty when there was none to make)."""
        cands = [float(c) for c in self.config.asset_tail_prior_rows]
        if self.config.objective != "scale_nll":
            return 0.0, {}
        if len(cands) == 1:
            return cands[0], {}
        xv, av, sv, yv, mv, wv = val.tensors
        alpha = torch.tensor([1.0 - q for q in self.levels])
        scores = []
        for prior in cands:
            try:
                self._set_tails(train, prior)
            except ValueError:  # no positive tail on the training rows alone: not a candidate
                scores.append(float("inf"))
                continue
            score = float(weighted_fz0(yv, *average_tail(self.nets, xv, av, sv), mv, wv, alpha))
            scores.append(score if np.isfinite(score) else float("inf"))
        best = cands[int(np.argmin(scores))]  # the first on a tie, or when none could be scored
        return best, {"asset_tail_prior_rows": best,  # JSON keys: strings
                      "val_fz0_by_prior": {str(c): v for c, v in zip(cands, scores,
                                                                      strict=True)}}

    @torch.no_grad()
    def _set_tails(self, data: TensorDataset, prior_rows: float) -> None:
        r"""``scale_nll``: each member's tail multipliers, the empirical tail of the
        standardized losses :math:`y/\sigma` over ``data`` (:class:`ScaleTailNet`), each
        asset's blended with the pooled one at credibility prior ``prior_rows``
        (:func:`asset_tails`)."""
        if self.config.objective != "scale_nll":
            return
        x, a, sc, y, m, _ = data.tensors
        n_vocab = len(self.assets) + 1
        for net in self.nets:
            assert isinstance(net, ScaleTailNet)
            z = torch.where(m, y / net.sigma(x, a, sc), torch.nan).double().numpy()  # (N, S)
            z_var, z_es = empirical_tail(z, self.levels)
            if not (np.isfinite(z_es).all() and (z_var > 0).all()):
                raise ValueError(f"{self.alias}: the standardized losses' tail is not positive "
                                 f"(quantiles {np.round(z_var, 4).tolist()} at levels "
                                 f"{self.levels}): no VaR/ES can be scaled from it")
            tails = asset_tails(z, a.numpy(), n_vocab, self.levels, prior_rows, (z_var, z_es))
            net.set_tail(*(torch.tensor(t, dtype=torch.float32) for t in tails))

    def _new_net(self, n_inputs: int) -> TailNet:
        c = self.config
        kind = ScaleTailNet if c.objective == "scale_nll" else TailNet
        net = kind(TailNetConfig(n_inputs=n_inputs, n_assets=len(self.assets) + 1,
                                    n_levels=len(self.levels), hidden=c.hidden,
                                    embed_dim=c.embed_dim,
                                    max_scale_factor=c.max_scale_factor))
        net.set_known(self._known())
        return net

    def _known(self) -> torch.Tensor:
        """(A + 1,) which vocabulary entries have a trained embedding (0: not seen in fit)."""
        cold = set(self.cold_assets)
        return torch.tensor([False, *(a not in cold for a in self.assets)])

    def _module(self, data: TensorDataset, n_inputs: int, start: tuple[np.ndarray, ...],
                weight_decay: float, seed: int) -> tuple[TailModule | ScaleTailModule, Any]:
        """A fresh net from ``seed`` at ``start`` (:class:`ScaleTailNet`: its log scale per
        side; :class:`TailNet`: the unconditional VaR and ES multipliers) in its Lightning
        module, and the shuffled batches of ``data`` (shuffled by the same seed)."""
        torch.manual_seed(seed)
        net = self._new_net(n_inputs)
        module: TailModule | ScaleTailModule
        init = [torch.tensor(a, dtype=torch.float32) for a in start]
        if isinstance(net, ScaleTailNet):
            net.init_scale(*init)
            module = ScaleTailModule(net, self.config.lr, weight_decay)
        else:
            net.init_tail(*init)
            alpha = torch.tensor([1.0 - q for q in self.levels], dtype=torch.float32)
            module = TailModule(net, alpha, self.config.lr, weight_decay)
        shuffle = RandomSampler(data, generator=torch.Generator().manual_seed(seed))
        return module, step_loader(data, BatchSampler(shuffle, self.config.batch_size,
                                                      drop_last=False))

    def _train(self, train: TensorDataset, val: TensorDataset, n_inputs: int,
               start: tuple[np.ndarray, ...], weight_decay: float, seed: int
               ) -> tuple[float, dict[str, torch.Tensor], int, int]:
        """(best validation loss, its weights, epochs run, epochs to the best) of one net."""
        cfg = self.config
        module, tr = self._module(train, n_inputs, start, weight_decay, seed)
        module.start_from(val)  # the rescaled FHS tail itself is the first candidate
        va = batch_loader(val, BatchSampler(SequentialSampler(val), len(val), False))
        with quiet_lightning(cfg.accelerator):
            trainer = new_trainer(
                cfg.accelerator, cfg.gpu_precision, max_epochs=cfg.max_epochs,
                callbacks=[EarlyStopping(monitor="val_loss", patience=cfg.patience)])
            trainer.fit(module, train_dataloaders=tr, val_dataloaders=va)
        return (module.best_val_loss, module.best_state, int(trainer.current_epoch),
                module.best_epochs)

    def _refit(self, data: TensorDataset, n_inputs: int, start: tuple[np.ndarray, ...],
               weight_decay: float, seed: int, n_epochs: int) -> dict[str, torch.Tensor]:
        """Weights of one net trained from ``seed`` on ``data`` for ``n_epochs`` (no validation)."""
        module, tr = self._module(data, n_inputs, start, weight_decay, seed)
        with quiet_lightning(self.config.accelerator):
            trainer = new_trainer(self.config.accelerator, self.config.gpu_precision,
                                  max_epochs=n_epochs, limit_val_batches=0)
            trainer.fit(module, train_dataloaders=tr)
        return {k: v.detach().cpu().clone() for k, v in module.net.state_dict().items()}

    def forecast_tail(self, panel: pd.DataFrame, levels: Sequence[float] = DEFAULT_LEVELS,
                      cutoffs: pd.DatetimeIndex | None = None) -> pd.DataFrame:
        qs = fitted_levels(self.alias, levels, self.levels,
                           bool(self.nets) and self.scaler is not None)
        vocab = {a: i + 1 for i, a in enumerate(self.assets)}
        blocks = []
        for asset, (x, s, ok, _, dates) in self._rows(panel, False, cutoffs).items():
            wanted = select_cutoffs(dates[ok], cutoffs)
            if len(wanted) == 0:
                continue
            pos = dates.get_indexer(wanted)
            xt = torch.from_numpy(self.scaler.transform(x[pos]).astype(np.float32))
            a = torch.full((len(pos),), vocab.get(asset, 0), dtype=torch.int64)
            var, es = average_tail(self.nets, xt, a, torch.from_numpy(s[pos].astype(np.float32)))
            long = SIDES.index("long")  # a long position loses at most all of it
            var[:, long], es[:, long] = var[:, long].clamp(max=1.0), es[:, long].clamp(max=1.0)
            for si, side in enumerate(SIDES):
                for q in qs:
                    k = self.levels.index(q)
                    blocks.append(tail_frame(asset, wanted, self.interval_days, side, q,
                                             var[:, si, k].double().numpy(),
                                             es[:, si, k].double().numpy()))
        return concat_tails(blocks)

    def state(self) -> dict[str, Any]:
        assert self.nets and self.scaler is not None
        return {"alias": self.alias, "kind": "tail_nn", "interval_days": self.interval_days,
                "config": self.config.model_dump(mode="json"), "levels": self.levels,
                "assets": self.assets, "cold_assets": self.cold_assets, "chosen": self.chosen,
                "n_inputs": int(self.nets[0].config.n_inputs),
                "scaler": {"mean": self.scaler.mean_.tolist(),
                           "scale": self.scaler.scale_.tolist()},
                "members": [{k: v.tolist() for k, v in net.state_dict().items()}
                            for net in self.nets],
                "base": self.base.state()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        config = {"objective": "fz0", **state["config"]}  # written before the objective: FZ0
        model = cls(TailNnConfig(**config), state["alias"], state["interval_days"])
        model.levels = [float(q) for q in state["levels"]]
        model.assets = list(state["assets"])
        model.cold_assets = list(state.get("cold_assets", []))  # states written before: none
        model.chosen = dict(state["chosen"])
        model.base = type(model.base).from_state(state["base"])
        model.scaler = MaskedStandardScaler()
        model.scaler.mean_ = np.asarray(state["scaler"]["mean"], dtype=float)
        model.scaler.scale_ = np.asarray(state["scaler"]["scale"], dtype=float)
        # a state written before the seed ensemble holds one network under "weights"
        members = state["members"] if "members" in state else [state["weights"]]
        model.nets = []
        for weights in members:
            net = model._new_net(int(state["n_inputs"]))
            net.load_state_dict({k: torch.tensor(v, dtype=torch.float32)
                                 for k, v in weights.items()})
            model.nets.append(net.eval())
        return model

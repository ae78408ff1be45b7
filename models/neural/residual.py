r"""The residual MLP of ``harx_mlp`` and the LightningModule that trains it on log-MSE.

The network only corrects a linear pooled HARX forecast :math:`b_t` (fitted by OLS before it):

.. math::

    \hat o_t = b_t + \mathrm{MLP}([z_t, e_a]), \qquad
    L = \frac{1}{|\mathcal T|}\sum_{(t,h) \in \mathcal T} \big(\log y_{t,h} - \hat o_{t,h}\big)^2

The last layer starts at zero, and the zero correction is scored on the validation window
*before* the first epoch: the weights kept are the best-validation ones including that
starting point, so the network can only move the linear forecast where the validation
window asks for it. The loss is squared error in logs, not QLIKE: QLIKE's :math:`e^{d}` term
lets one range-proxy wick (LINK on 2020-03-12, a Garman-Klass variance of 55) dominate the
gradient, while the log target is the noise-robust regression of Corsi's HAR; the log-normal
mean correction is applied afterwards by the forecaster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler, TensorDataset

from models.neural.module import (
    GroupedSteps,
    ScoredStart,
    batch_loader,
    epoch_batch_size,
    new_trainer,
    quiet_lightning,
    step_loader,
)


@dataclass
class ResidualNetConfig:
    n_inputs: int  # standardized inputs, see models.neural.inputs.INPUT_NAMES
    n_assets: int  # asset vocabulary seen in fit
    n_horizons: int  # one log-variance correction per horizon
    hidden: int = 16  # one hidden layer: the linear HARX already carries the signal
    embed_dim: int = 2  # per-asset embedding; levels are the OLS intercepts already


class ResidualMlp(nn.Module):
    """MLP on (inputs, asset embedding) → additive log-variance correction per horizon."""

    def __init__(self, config: ResidualNetConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.n_assets, config.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_inputs + config.embed_dim, config.hidden),
            nn.SiLU(),
            nn.Linear(config.hidden, config.n_horizons),
        )
        nn.init.zeros_(self.mlp[-1].weight)  # start exactly at the linear forecast
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, z: torch.Tensor, asset: torch.Tensor) -> torch.Tensor:
        e = self.embed(asset)  # (B, E)
        return self.mlp(torch.cat([z, e], dim=-1))  # (B, H)


def masked_mse(
    o: torch.Tensor, r: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, float]:
    r"""(weighted sum of squared errors over valid pairs, sum of their weights).

    :math:`\sum_{(t,h)} w_t (r_{t,h} - o_{t,h})^2` and :math:`\sum_{(t,h)} w_t` over the valid
    pairs; without ``weight`` every :math:`w_t = 1` (the count). Masked pairs add exactly 0.
    """
    d = torch.where(mask, r - o, torch.zeros_like(o))  # (B, H)
    if weight is None:
        return (d * d).sum(), float(mask.sum())
    w = weight[:, None] * mask  # (B, H)
    return (w * d * d).sum(), float(w.sum())


class ResidualModule(ScoredStart, GroupedSteps):
    """Trains :class:`ResidualMlp` on the OLS residuals; keeps the best-validation weights."""

    def __init__(self, net: ResidualMlp, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.weight_decay = weight_decay
        self.best_val_loss = math.inf
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_epoch = -1  # -1: the zero correction was never beaten
        self._val = [0.0, 0]

    def start_loss(self, tensors: list[torch.Tensor]) -> float:
        """The zero correction's validation loss (the untrained net's output is zero)."""
        z, asset, resid, mask = tensors[:4]
        total, count = masked_mse(self.net(z, asset).float(), resid, mask)
        return float(total) / max(count, 1)

    def step_loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        z, asset, resid, mask, *weight = batch  # (B, F), (B,), (B, H), (B, H)[, (B,)]
        total, count = masked_mse(self.net(z, asset).float(), resid, mask, *weight)
        return total / max(count, 1e-12)

    def on_validation_epoch_start(self) -> None:
        self._val = [0.0, 0]

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        z, asset, resid, mask = batch[:4]  # validation is unweighted: the last dates anyway
        total, count = masked_mse(self.net(z, asset).float(), resid, mask)
        self._val[0] += float(total)
        self._val[1] += count

    def on_validation_epoch_end(self) -> None:
        val_loss = self._val[0] / max(self._val[1], 1)
        self.log("val_loss", val_loss)
        if val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.best_epoch = self.current_epoch
            state = self.net.state_dict()
            self.best_state = {k: v.detach().cpu().clone() for k, v in state.items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def train_residual(
    net: ResidualMlp, train: TensorDataset, val: TensorDataset, *, lr: float,
    weight_decay: float, batch_size: int, max_epochs: int, patience: int, seed: int,
    max_steps_per_epoch: int | None = None, accelerator: str = "auto",
    gpu_precision: str = "32-true",
) -> tuple[dict[str, torch.Tensor], float, int]:
    """Fit ``net`` with early stopping; (best weights, best val loss, best epoch or -1).

    ``train`` holds (z, asset, resid, mask) and optionally a fifth tensor of row weights that
    weigh the training loss (recency weighting); the validation loss is never weighted.
    """
    module = ResidualModule(net, lr=lr, weight_decay=weight_decay)
    module.start_from(val)  # the zero correction is the first candidate
    shuffle = RandomSampler(train, generator=torch.Generator().manual_seed(seed))
    if max_steps_per_epoch is not None:  # an epoch of at most that many steps
        batch_size = epoch_batch_size(len(train), batch_size, max_steps_per_epoch)
    train_loader = step_loader(train, BatchSampler(shuffle, batch_size, drop_last=False))
    val_loader = batch_loader(val, BatchSampler(SequentialSampler(val), len(val), False))
    with quiet_lightning(accelerator):
        trainer = new_trainer(
            accelerator, gpu_precision, max_epochs=max_epochs,
            callbacks=[EarlyStopping(monitor="val_loss", patience=patience, mode="min")])
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    return module.best_state, module.best_val_loss, module.best_epoch

r"""The MLP-HAR network: Corsi's HAR-RV on log variance plus a small pooled MLP correction.

HAR-RV (Corsi, 2009) forecasts log variance linearly from the daily, weekly and monthly
realized-variance terms. This network keeps that linear map as a skip path and adds an MLP
over the same inputs and a learned per-asset embedding, so one set of weights is shared by
every asset (a *global* model) while assets may still differ in level and reaction:

.. math::

    \hat o_t = W x_t + b + \mathrm{MLP}([x_t, e_{a}]), \qquad
    \hat\sigma^2_{t, h} = \exp(\hat o_{t, h})

with one output per horizon. The HAR loadings and the MLP's last layer start at zero and the
bias at the training mean log target (:meth:`MlpHarNet.init_output_bias`): training starts
from the unconditional forecast, so even a few epochs only move it where the data asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class NetworkConfig:
    n_inputs: int  # standardized continuous inputs + 0/1 flags, see module.INPUT_NAMES
    n_assets: int  # size of the asset vocabulary seen in fit
    n_horizons: int  # one log-variance output per forecast horizon
    hidden: int = 32  # two hidden layers of this width: HAR inputs need no more
    embed_dim: int = 4  # per-asset embedding; small, so assets share most of the model


class MlpHarNet(nn.Module):
    """Linear HAR skip + MLP on (inputs, asset embedding) → log variance per horizon."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.n_assets, config.embed_dim)
        self.har = nn.Linear(config.n_inputs, config.n_horizons)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_inputs + config.embed_dim, config.hidden),
            nn.SiLU(),
            nn.Linear(config.hidden, config.hidden),
            nn.SiLU(),
            nn.Linear(config.hidden, config.n_horizons),
        )
        # Start at the unconditional mean (bias set by init_output_bias): random HAR loadings
        # would only add noise the first epochs must unlearn; the MLP correction starts off.
        nn.init.zeros_(self.har.weight)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    @torch.no_grad()
    def init_output_bias(self, mean_log_target: torch.Tensor) -> None:
        """Put the linear path's bias at the training mean of each horizon's log target."""
        self.har.bias.copy_(mean_log_target)  # (H,)

    def forward(self, x: torch.Tensor, asset: torch.Tensor) -> torch.Tensor:
        return self.head(x, self.embed(asset))  # (B, E) embeddings

    @torch.no_grad()
    def embeddings(self, asset: torch.Tensor) -> torch.Tensor:
        """Each row's asset embedding for forecasting; ``-1`` (an asset with no training row,
        e.g. listed within the validation part of the window) takes the mean of the learned
        ones: a typical asset, not an untrained random vector."""
        known = asset >= 0
        e = self.embed(asset.clamp(min=0))  # (B, E)
        return torch.where(known[:, None], e, self.embed.weight.mean(dim=0))

    def head(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Log variance from inputs ``x`` (B, F) and asset embeddings ``e`` (B, E)."""
        z = torch.cat([x, e], dim=-1)  # (B, F + E)
        return self.har(x) + self.mlp(z)  # (B, H) log variance

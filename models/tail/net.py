r"""The tail networks and their training modules (Lightning): FZ0-trained VaR/ES
multipliers (:class:`TailNet`, below) and a likelihood-trained scale with an empirical tail
(:class:`ScaleTailNet`, ``tail_nn.objective: scale_nll``, the default).

**Network.** One pooled MLP over all assets (an asset embedding beside the standardized
inputs) outputs, per side and level :math:`k = 1..K` (levels ascending), multipliers of a
point-in-time tail scale :math:`s_t` of each side (the 99 % VaR of a classical tail model,
:mod:`models.tail.classical`):

.. math::

    \mathrm{VaR}_{k} = s_t \sum_{j \le k} \mathrm{softplus}(a_j), \qquad
    \mathrm{ES}_{k} = \max_{j \le k}\big(\mathrm{VaR}_{j} + s_t\,\mathrm{softplus}(b_j)\big),

so VaR and ES never cross across levels and :math:`\mathrm{ES}_k \ge \mathrm{VaR}_k > 0` by
construction. The last layer starts at zero weights with biases that reproduce the training
window's unconditional quantiles and tail means of :math:`y/s`, so training starts from
the classical tail (rescaled) and only learns departures from it.

**Loss.** The FZ0 loss of Patton, Ziegel and Chen (2019) (``pipelines/evaluation/
tail_tests.fz0_loss``, here in torch), averaged over rows, sides and levels with a target,
each row weighted by :math:`w_i` (recency weighting; :math:`w_i = 1` on validation):

.. math::

    L = \frac{\sum_{i,s,k} w_i m_{is} \mathrm{FZ0}(y_{is}, v_{isk}, e_{isk})}
             {\sum_{i,s,k} w_i m_{is}} .

**Ensemble.** :func:`average_tail` averages the VaR and ES of several trained networks
(seeds): an average of tails that are monotone in the level with ES >= VaR keeps both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from models.neural.module import GroupedSteps, ScoredStart


@dataclass
class TailNetConfig:
    n_inputs: int
    n_assets: int      # vocabulary size, index 0 = an asset not seen in fit
    n_sides: int = 2   # long, short
    n_levels: int = 3  # ascending
    hidden: int = 16   # one hidden layer: a few hundred tail events per window
    embed_dim: int = 2
    max_scale_factor: float = 4.0  # ScaleTailNet: the learned scale within [1/K, K] of its start


class TailNet(nn.Module):
    """Standardized inputs + asset embedding → (B, S, K) VaR and ES multipliers of ``s``."""

    def __init__(self, config: TailNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.n_assets, c.embed_dim)
        self.body = nn.Sequential(nn.Linear(c.n_inputs + c.embed_dim, c.hidden), nn.SiLU())
        self.head = nn.Linear(c.hidden, 2 * c.n_sides * c.n_levels)
        nn.init.zeros_(self.head.weight)
        # which vocabulary entries have a trained embedding (not saved with the weights: the
        # forecaster sets it from its cold assets); index 0, an asset not seen in fit, never
        known = torch.ones(c.n_assets, dtype=torch.bool)
        known[0] = False
        self.register_buffer("known", known, persistent=False)

    def set_known(self, known: torch.Tensor) -> None:
        """Mark the vocabulary entries with a trained embedding (index 0 never is)."""
        self.known = known.clone().bool().to(self.embed.weight.device)
        self.known[0] = False

    def embeddings(self, asset: torch.Tensor) -> torch.Tensor:
        """Each row's asset embedding (B, E). In evaluation (validation and forecasts) an
        entry without a trained embedding (an asset listed within the validation part of the
        window, or not seen in fit) takes the mean of the trained ones, a typical asset, not
        its untrained random start; known entries are exactly their own row. Training rows
        are all of assets with training rows, so training never reads it."""
        e = self.embed(asset)  # (B, E)
        if self.training:
            return e
        k = self.known.to(e.dtype)[:, None]  # (A, 1)
        typical = (self.embed.weight * k).sum(dim=0) / k.sum().clamp_min(1.0)  # (E,)
        return torch.where(self.known[asset][:, None], e, typical)

    @torch.no_grad()
    def init_tail(self, var_mult: torch.Tensor, es_mult: torch.Tensor) -> None:
        """Biases giving these (S, K) unconditional VaR and ES multipliers at the start."""
        inc = torch.diff(var_mult, dim=-1, prepend=torch.zeros_like(var_mult[..., :1]))
        gap = es_mult - var_mult
        raw = torch.stack([inc, gap], dim=0).clamp_min(1e-3)  # (2, S, K)
        self.head.bias.copy_(torch.log(torch.expm1(raw)).reshape(-1))  # softplus⁻¹

    def forward(self, x: torch.Tensor, asset: torch.Tensor, scale: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        h = self.body(torch.cat([x, self.embeddings(asset)], dim=-1))  # (B, H)
        out = functional.softplus(self.head(h))  # (B, 2·S·K)
        out = out.reshape(-1, 2, c.n_sides, c.n_levels)  # (B, 2, S, K)
        s = scale[:, :, None]  # (B, S, 1)
        var = s * torch.cumsum(out[:, 0], dim=-1)  # (B, S, K)
        es = torch.cummax(var + s * out[:, 1], dim=-1).values  # (B, S, K)
        return var, es


def fz0_torch(y: torch.Tensor, var: torch.Tensor, es: torch.Tensor, alpha: torch.Tensor
              ) -> torch.Tensor:
    r"""FZ0 per element: :math:`1\{y>v\}(y-v)/(\alpha e) + v/e + \ln e - 1` (positive losses)."""
    return torch.relu(y - var) / (alpha * es) + var / es + torch.log(es) - 1.0


def weighted_fz0(y: torch.Tensor, var: torch.Tensor, es: torch.Tensor, mask: torch.Tensor,
                 weight: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Row-weighted mean FZ0 over rows, sides and levels with a target (module docstring).

    ``y``, ``mask``: (B, S); ``var``, ``es``: (B, S, K); ``weight``: (B,); ``alpha``: (K,).
    """
    terms = fz0_torch(y[..., None].float(), var.float(), es.float(), alpha)  # (B, S, K)
    w = (weight[:, None].float() * mask.float())[..., None].expand_as(terms)  # (B, S, K)
    # masked terms may be inf/nan (y = 0 placeholders are finite, but be safe): select, not x0
    return torch.where(w > 0, terms * w, torch.zeros_like(terms)).sum() / w.sum()


@torch.no_grad()
def average_tail(nets: list[TailNet], x: torch.Tensor, asset: torch.Tensor,
                 scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, S, K) VaR and ES over the members of a seed ensemble."""
    outs = [net(x, asset, scale) for net in nets]
    return (torch.stack([v for v, _ in outs]).mean(dim=0),
            torch.stack([e for _, e in outs]).mean(dim=0))


class ScaleTailNet(TailNet):
    r"""The likelihood-trained variant (``tail_nn.objective: scale_nll``): per side one scale

    .. math::

        \sigma_t = s_t\, c \exp\big(L \tanh(h_t / L)\big), \qquad
        \mathrm{VaR}_k = \sigma_t\, z^{\mathrm{VaR}}_k, \quad
        \mathrm{ES}_k = \sigma_t\, z^{\mathrm{ES}}_k,

    with :math:`h_t` the network's output (zero at the start: zero weights and bias), :math:`c`
    the window's root mean square of :math:`y/s` (:meth:`init_scale`, a buffer),
    :math:`L = \ln K` with :math:`K` = ``max_scale_factor`` (4): the learned scale stays within
    a factor K of the rescaled classical one whatever the inputs. An input far outside the
    training window (a collapse to a millionth of the price, a stablecoin) cannot send the
    scale to zero or to 1e30 (measured before the bound on such a universe); on the embedded
    data the learned 99 % VaR stayed within 0.53-1.93 times EVT-GARCH's, well inside it.
    :math:`z^{\mathrm{VaR}}, z^{\mathrm{ES}}` are the empirical quantiles and tail means of
    the standardized losses :math:`y/\sigma` of the fit's rows, one row per vocabulary entry
    (:meth:`set_tail`, an (A, S, K) buffer saved with the weights; the forecaster sets each
    asset's, :meth:`models.tail.network.TailNetForecaster._set_tails`, and entry 0, an asset
    not seen in fit, the pooled one). Scale and tail are a location-free filtered historical
    simulation whose filter is learned: every row shapes the scale (:func:`scale_nll`), not
    only the few hundred beyond the VaR that move FZ0. VaR and ES are monotone in the level
    and ES >= VaR because the empirical tail is."""

    def __init__(self, config: TailNetConfig) -> None:
        super().__init__(config)
        c = config
        self.head = nn.Linear(c.hidden, c.n_sides)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("log_c", torch.zeros(c.n_sides))
        self.bound = math.log(c.max_scale_factor)
        # NaN until set_tail: a net whose tail was never set forecasts NaN, not a made-up tail
        shape = (c.n_assets, c.n_sides, c.n_levels)
        self.register_buffer("z_var", torch.full(shape, torch.nan))
        self.register_buffer("z_es", torch.full(shape, torch.nan))

    def init_tail(self, var_mult: torch.Tensor, es_mult: torch.Tensor) -> None:
        raise TypeError("ScaleTailNet starts from a scale (init_scale); its tail is set after "
                        "training (set_tail)")

    @torch.no_grad()
    def init_scale(self, log_c: torch.Tensor) -> None:
        r"""Start at :math:`\sigma = s\,c` per side (``log_c``: (S,))."""
        self.log_c.copy_(log_c)

    @torch.no_grad()
    def set_tail(self, z_var: torch.Tensor, z_es: torch.Tensor) -> None:
        """Tail multipliers per vocabulary entry, (A, S, K), or one (S, K) for every entry."""
        self.z_var.copy_(z_var.expand_as(self.z_var))
        self.z_es.copy_(z_es.expand_as(self.z_es))

    def _load_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str,
                              *args: object, **kwargs: object) -> None:
        # a state written before the per-asset tails holds one (S, K) tail for every asset
        for name in ("z_var", "z_es"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.dim() == 2:
                state_dict[prefix + name] = saved.expand_as(getattr(self, name)).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def sigma(self, x: torch.Tensor, asset: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """(B, S) scale of each row and side."""
        h = self.head(self.body(torch.cat([x, self.embeddings(asset)], dim=-1)))  # (B, S)
        return scale * torch.exp(self.log_c + self.bound * torch.tanh(h / self.bound))

    def forward(self, x: torch.Tensor, asset: torch.Tensor, scale: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        sig = self.sigma(x, asset, scale)[:, :, None]  # (B, S, 1)
        return sig * self.z_var[asset], sig * self.z_es[asset]  # (B, S, K) each


def scale_nll(y: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor
              ) -> torch.Tensor:
    r"""Row-weighted mean Gaussian scale loss :math:`\tfrac12 (y/\sigma)^2 + \ln\sigma` over rows
    and sides with a target: a strictly consistent score for :math:`\sigma^2 = E[y^2]`
    (QLIKE of :math:`y^2`, up to constants), so it ranks scales as the variance models are
    ranked. ``y``, ``sigma``, ``mask``: (B, S); ``weight``: (B,)."""
    terms = 0.5 * (y.float() / sigma.float()) ** 2 + torch.log(sigma.float())
    w = weight[:, None].float() * mask.float()
    return torch.where(w > 0, terms * w, torch.zeros_like(terms)).sum() / w.sum()


class BestEpochModule(ScoredStart, GroupedSteps):
    """Trains ``net`` on ``_loss`` (AdamW) and keeps the weights of the best validation epoch."""

    def __init__(self, net: TailNet, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.net = net
        self.lr, self.weight_decay = lr, weight_decay
        self.best_val_loss = float("inf")
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_epochs = 0  # epochs trained to reach best_state (0: the untrained start)

    def _loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def start_loss(self, tensors: list[torch.Tensor]) -> float:
        """The untrained network's validation loss (its tail starts at the classical one)."""
        return float(self._loss(tensors))

    def step_loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._loss(batch)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), prog_bar=False)

    def on_validation_epoch_end(self) -> None:
        loss = float(self.trainer.callback_metrics["val_loss"])
        if loss < self.best_val_loss:
            self.best_val_loss = loss
            self.best_epochs = int(self.current_epoch) + 1
            self.best_state = {k: v.detach().cpu().clone()
                               for k, v in self.net.state_dict().items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), lr=self.lr,
                                 weight_decay=self.weight_decay)


class TailModule(BestEpochModule):
    """FZ0 training of :class:`TailNet`."""

    def __init__(self, net: TailNet, alpha: torch.Tensor, lr: float,
                 weight_decay: float) -> None:
        super().__init__(net, lr, weight_decay)
        self.register_buffer("alpha", alpha)  # (K,) tail probabilities

    def _loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        x, asset, scale, y, mask, weight = batch  # scale, y, mask: (B, S); weight: (B,)
        var, es = self.net(x, asset, scale)  # (B, S, K)
        return weighted_fz0(y, var, es, mask, weight, self.alpha)


class ScaleTailModule(BestEpochModule):
    """:func:`scale_nll` training of :class:`ScaleTailNet` (validation by the same loss,
    unweighted: every validation row counts, not only its tail)."""

    net: ScaleTailNet

    def _loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        x, asset, scale, y, mask, weight = batch
        return scale_nll(y, self.net.sigma(x, asset, scale), mask, weight)

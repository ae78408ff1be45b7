r"""Training the MLP-HAR network: inputs and targets from a panel, the QLIKE loss, the Trainer.

Inputs come from the panel row at ``t`` only (every feature column is already point-in-time);
targets are the log of the forward realized variance :func:`features.targets.forward_variance`
built from the ``rv`` column of the panel handed to ``fit``, so nothing past its last row is
ever read. The loss is QLIKE, which is consistent for the conditional variance under a noisy
unbiased proxy (Patton, 2011) and, written in the log forecast :math:`o`, reads

.. math::

    L(y, o) = \frac{y}{e^{o}} - \log\frac{y}{e^{o}} - 1 = e^{\log y - o} + o - \log y - 1 .
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast, get_args

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    TensorDataset,
)

from configs.base import Accelerator
from configs.schema import MlpHarConfig
from models.neural.network import MlpHarNet
from models.panel_inputs import VAR_FLOOR, forward_targets, log_variance

REQUIRED_COLUMNS = ("har_rv_1d", "har_rv_7d", "har_rv_30d", "gk_var", "ret_1d")
PANEL_COLUMNS = (*REQUIRED_COLUMNS, "dvol_var_1d", "dvol_available", "rv_is_hourly")
CONTINUOUS_NAMES = (
    "log_har_rv_1d",
    "log_har_rv_7d",
    "log_har_rv_30d",
    "log_gk_var",
    "ret_1d",
    "abs_ret_1d",
    "log_dvol_var_1d",  # 0 after scaling where DVOL is unavailable; the flag below says so
)
FLAG_NAMES = ("dvol_available", "rv_is_hourly")
INPUT_NAMES = (*CONTINUOUS_NAMES, *FLAG_NAMES)


def check_columns(panel: pd.DataFrame, needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in panel.columns]
    if missing:
        raise ValueError(f"mlp_har: panel lacks column(s) {missing}; build it with features/")


def raw_inputs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(continuous (N, C) with NaN where DVOL is masked, flags (N, 2), valid (N,)) of rows."""

    def log_var(col: str) -> np.ndarray:
        return np.log(np.maximum(frame[col].to_numpy(dtype=float), VAR_FLOOR))

    ret = frame["ret_1d"].to_numpy(dtype=float)
    dvol = frame["dvol_var_1d"].to_numpy(dtype=float)
    dvol_ok = frame["dvol_available"].eq(True).to_numpy() & np.isfinite(dvol)
    log_dvol = np.log(np.maximum(np.where(dvol_ok, dvol, np.nan), VAR_FLOOR))  # NaN: masked
    continuous = np.column_stack(
        [
            log_var("har_rv_1d"),
            log_var("har_rv_7d"),
            log_var("har_rv_30d"),
            log_var("gk_var"),
            ret,
            np.abs(ret),
            log_dvol,
        ]
    )  # (N, C)
    flags = np.column_stack([dvol_ok, frame["rv_is_hourly"].eq(True).to_numpy()]).astype(float)
    required = frame[list(REQUIRED_COLUMNS)].to_numpy(dtype=float)  # (N, 5)
    valid = np.isfinite(required).all(axis=1)
    return continuous, flags, valid


@dataclass
class Scaler:
    """Standardization fitted on training rows only; DVOL's stats use rows where it exists."""

    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)

    @classmethod
    def fit(cls, continuous: np.ndarray) -> Scaler:
        seen = np.isfinite(continuous).any(axis=0)
        safe = np.where(np.isfinite(continuous), continuous, 0.0)
        count = np.maximum(np.isfinite(continuous).sum(axis=0), 1)
        mean = np.where(seen, safe.sum(axis=0) / count, 0.0)
        dev = np.where(np.isfinite(continuous), continuous - mean, 0.0)
        std = np.sqrt((dev**2).sum(axis=0) / count)
        return cls(mean=mean, std=np.where(std > 1e-8, std, 1.0))

    def transform(self, continuous: np.ndarray, flags: np.ndarray) -> np.ndarray:
        z = (continuous - self.mean) / self.std  # (N, C)
        z = np.where(np.isnan(z), 0.0, z)  # masked DVOL sits at the training mean
        return np.concatenate([z, flags], axis=1).astype(np.float32)  # (N, F)


def forward_log_targets(panel: pd.DataFrame, horizons: Sequence[int]) -> np.ndarray:
    """(N, H) log forward variance per row of ``panel`` (NaN where the window is incomplete):
    :func:`models.panel_inputs.forward_targets` (each asset's ``rv`` on a complete daily
    calendar, so a gap makes the forward sum NaN rather than silently summing across it),
    floored at :data:`VAR_FLOOR` and logged."""
    return log_variance(forward_targets(panel, horizons))


def qlike_terms(
    log_forecast: torch.Tensor, log_target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of QLIKE over valid pairs, number of valid pairs); masked pairs add exactly 0."""
    d = torch.where(mask, log_target - log_forecast, torch.zeros_like(log_forecast))  # (B, H)
    loss = torch.exp(d) - d - 1.0  # (B, H)
    return loss.sum(), mask.sum()


class GroupedSteps(pl.LightningModule):
    """A module whose Lightning training step runs several optimizer steps.

    On a CPU, Lightning's automatic optimization costs ~1-1.8 ms of hooks, closures and
    bookkeeping per optimizer step whatever the batch: for these small networks on a large
    pooled panel that is about as much as the arithmetic (a ``harx_mlp`` refit at 1,000
    assets: 7,680 steps at 3.8 ms, of which 1.1-1.4 ms forward, backward and AdamW). Grouped,
    a step of 3,231 rows of a residual net took 1.86-2.22 ms against 2.68-3.48 ms one step per
    call (``benchmarks/README.md``, "Several optimizer steps per Lightning step"). The training
    loader (:func:`step_loader`) hands over up to :data:`STEPS_PER_CALL` batches at once and
    :meth:`training_step` runs, for each in turn, exactly what automatic optimization runs for
    one batch: the loss (:meth:`step_loss`), ``zero_grad``, the backward pass through
    Lightning (``manual_backward``: the precision plugin's hooks) and the optimizer step. The
    same batches in the same order give the same weights bit for bit
    (``tests/test_neural_loader.py``); validation, early stopping and epochs are unchanged.

    Several backward passes per forward call of the wrapped module are what a
    ``DistributedDataParallel`` wrapper does not allow, so a multi-device strategy needs
    ``steps_per_call=1`` (every trainer here uses one device).
    """

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def step_loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch."""
        raise NotImplementedError

    def training_step(self, group: list[Sequence[torch.Tensor]], batch_idx: int) -> None:
        optimizer = self.optimizers()
        for batch in group:
            loss = self.step_loss(batch)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()


class ScoredStart:
    """For a :class:`GroupedSteps` module that keeps its best-validation weights
    (``best_val_loss``, ``best_state``) and counts its untrained net as the first candidate.

    :meth:`start_from` hands over the validation rows; the start is scored on them when
    training starts (:meth:`on_train_start`), on the training device and in the precision
    that score every epoch after it. Scored on the CPU before a GPU fit, a net that could not
    move would beat its own start by the two devices' rounding alone (measured on an H200).
    """

    net: torch.nn.Module
    best_val_loss: float
    best_state: dict[str, torch.Tensor]
    _start: TensorDataset | None = None

    def start_from(self, val: TensorDataset) -> None:
        self._start = val

    def start_loss(self, tensors: list[torch.Tensor]) -> float:
        """The validation loss of the untrained net on all of ``tensors`` (on its device)."""
        raise NotImplementedError

    @torch.no_grad()
    def on_train_start(self) -> None:
        if self._start is None:
            return
        module = cast(pl.LightningModule, self)
        tensors = [t.to(module.device) for t in self._start.tensors]
        with module.trainer.precision_plugin.val_step_context():
            self.best_val_loss = self.start_loss(tensors)
        self.best_state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        self._start = None


class MlpHarModule(GroupedSteps):
    """Trains :class:`MlpHarNet` on QLIKE and keeps a copy of the best-validation weights."""

    def __init__(self, net: MlpHarNet, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.weight_decay = weight_decay
        self.best_val_loss = math.inf
        self.best_state: dict[str, torch.Tensor] = {}
        self._val_sum = 0.0
        self._val_count = 0

    def step_loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        x, asset, log_y, mask = batch  # (B, F), (B,), (B, H), (B, H)
        o = self.net(x, asset).float()  # (B, H); float32 even under bf16 autocast
        total, count = qlike_terms(o, log_y, mask)
        return total / count.clamp(min=1)

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_count = 0.0, 0

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, asset, log_y, mask = batch
        total, count = qlike_terms(self.net(x, asset).float(), log_y, mask)
        self._val_sum += float(total)
        self._val_count += int(count)

    def on_validation_epoch_end(self) -> None:
        val_loss = self._val_sum / max(self._val_count, 1)
        self.log("val_loss", val_loss)
        if not self.trainer.sanity_checking and val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            state = self.net.state_dict()
            self.best_state = {k: v.detach().cpu().clone() for k, v in state.items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def tensor_dataset(
    x: np.ndarray, asset: np.ndarray, log_y: np.ndarray, mask: np.ndarray
) -> TensorDataset:
    return TensorDataset(
        torch.from_numpy(x.astype(np.float32)),  # (N, F)
        torch.from_numpy(asset.astype(np.int64)),  # (N,)
        torch.from_numpy(np.where(mask, log_y, 0.0).astype(np.float32)),  # (N, H)
        torch.from_numpy(mask),  # (N, H) bool
    )


class _IndexTensors(Sampler[torch.Tensor]):
    """The batches of a ``BatchSampler`` as index tensors, the same rows in the same order
    from the same random stream.

    A ``BatchSampler`` over a ``RandomSampler`` yields Python lists built one row at a time
    from a ``randperm``; a tensor indexed by a list converts it once per tensor. Profiled at
    1,000 assets (a ``harx_mlp`` refit of 7,700 steps of ~2,700 rows: 19 of 41 s in the
    loader), so a shuffled epoch is drawn here as the sampler draws it — one
    ``torch.randperm(n, generator)`` when the first batch is asked for — and cut into views
    of that permutation; a sequential sampler's batches are slices of ``arange``. Any other
    sampler goes through its lists.

    The sampler's generator then draws a second permutation for its remainder
    (``num_samples % n`` = 0 rows) when it is asked for row ``n + 1``: while a short last
    batch is filled, else only if the consumer asks for a batch past the last one (Lightning
    stops at ``len(loader)`` and does not; a plain loop does). The same draw is made here at
    the same points, so every epoch's order is the sampler's.
    """

    def __init__(self, batches: BatchSampler) -> None:
        self.batches = batches

    def _order(self) -> torch.Tensor | None:
        """This epoch's row order as one tensor, or None where it is not drawn here."""
        sampler = self.batches.sampler
        if isinstance(sampler, SequentialSampler):
            return torch.arange(len(sampler.data_source))
        if (isinstance(sampler, RandomSampler) and not sampler.replacement
                and sampler.generator is not None
                and sampler.num_samples == len(sampler.data_source)):
            return torch.randperm(len(sampler.data_source), generator=sampler.generator)
        return None

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = self._order()
        if order is None:
            for batch in self.batches:
                yield torch.as_tensor(batch, dtype=torch.long)
            return
        size, drop_last = self.batches.batch_size, self.batches.drop_last
        for batch in order.split(size):
            if len(batch) < size:
                if not drop_last:  # filling a short last batch asks for one row too many
                    self._remainder()
                    yield batch
                    return
                break
            yield batch
        self._remainder()  # asked past the last batch

    def _remainder(self) -> None:
        sampler = self.batches.sampler
        if isinstance(sampler, RandomSampler):
            torch.randperm(len(sampler.data_source), generator=sampler.generator)

    def __len__(self) -> int:
        return len(self.batches)


class _Rows(Dataset[tuple[torch.Tensor, ...]]):
    """A ``TensorDataset``'s tensors gathered by an index tensor with ``index_select``: the
    same rows as ``tensor[index]``, about three times faster on a CPU (0.11 against 0.35 ms
    for six tensors and 2,700 rows of 700,000)."""

    def __init__(self, data: TensorDataset) -> None:
        self.tensors = data.tensors

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.index_select(0, index) for t in self.tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])


def epoch_batch_size(n_rows: int, batch_size: int, max_steps: int) -> int:
    """The training batch: ``batch_size``, grown so that an epoch is at most ``max_steps``
    optimizer steps.

    Each step costs Lightning ~1-2 ms of hooks on a CPU whatever the batch, which is most of a
    small network's training on a large pooled panel (profiled at 1,000 assets: 470 of 570 s
    in the epoch loop, 185,000 steps of 512 rows). Below ``batch_size × max_steps`` rows
    (131,072 by default, ~60 assets of daily history) the batch is the configured one, so the
    12-asset figures do not move; above it the same epochs take fewer, larger steps.
    """
    return max(int(batch_size), -(-int(n_rows) // max(1, int(max_steps))))


def batch_loader(data: TensorDataset, batches: BatchSampler) -> DataLoader:
    """A loader that gathers whole batches out of the tensors (no per-row fetch and collate):
    each batch is one index tensor (:class:`_IndexTensors`) and every tensor's rows are taken
    with one ``index_select`` (:class:`_Rows`) — the batches ``batches`` would give, several
    times faster than collating ``batch_size`` single rows on a small CPU."""
    return DataLoader(_Rows(data), sampler=_IndexTensors(batches), batch_size=None,
                      num_workers=0)


STEPS_PER_CALL = 32
"""Optimizer steps per Lightning training step (:class:`GroupedSteps`): Lightning's cost per
call is shared by 32 steps, and the 32 batches of a 1,000-asset refit (~3,200 rows each)
gathered at once hold about 10 MB."""


class _StepGroups(Sampler[list[torch.Tensor]]):
    """The index tensors of :class:`_IndexTensors` in lists of up to ``size``, in order.

    Exactly ``len(batches)`` batches are taken per epoch and never one more: asking the
    batches past their last one draws the sampler's remainder permutation where Lightning,
    stopping at the loader's length, would not, and would change the next epoch's order.
    """

    def __init__(self, batches: _IndexTensors, size: int) -> None:
        self.batches, self.size = batches, max(1, int(size))

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        it, left = iter(self.batches), len(self.batches)
        while left > 0:
            k = min(self.size, left)
            yield [next(it) for _ in range(k)]
            left -= k

    def __len__(self) -> int:
        return -(-len(self.batches) // self.size)


class _RowGroups(_Rows):
    """A list of batches, each gathered on its own as :class:`_Rows` gathers one."""

    def __getitem__(self, group: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
        return [super(_RowGroups, self).__getitem__(index) for index in group]


def step_loader(data: TensorDataset, batches: BatchSampler,
                steps_per_call: int | None = None) -> DataLoader:
    """The training loader of a :class:`GroupedSteps` module: the batches of
    :func:`batch_loader`, handed over ``steps_per_call`` (default :data:`STEPS_PER_CALL`) at
    a time, as a list of batches."""
    size = STEPS_PER_CALL if steps_per_call is None else steps_per_call
    return DataLoader(_RowGroups(data), sampler=_StepGroups(_IndexTensors(batches), size),
                      batch_size=None, num_workers=0)


def uses_gpu(accelerator: str) -> bool:
    """Whether a network trained with this ``accelerator`` setting (``configs.base.Accelerator``)
    runs on a GPU in this process: "auto" or "gpu" where CUDA sees one; "gpu" without one is
    an error, never a silent CPU fit."""
    if accelerator not in get_args(Accelerator):
        raise ValueError(f"accelerator must be one of {get_args(Accelerator)}, "
                         f"got {accelerator!r}")
    gpu = accelerator != "cpu" and torch.cuda.is_available()
    if accelerator == "gpu" and not gpu:
        raise ValueError("accelerator 'gpu' asked for, but CUDA sees no GPU in this process")
    return gpu


def device_kwargs(accelerator: str, gpu_precision: str) -> dict[str, Any]:
    """The ``pl.Trainer`` arguments that place a network: one device; on a GPU
    ``gpu_precision``, on a CPU float32 always (the tests' and the published figures'
    arithmetic)."""
    gpu = uses_gpu(accelerator)
    return {"accelerator": "gpu" if gpu else "cpu", "devices": 1,
            "precision": gpu_precision if gpu else "32-true"}


def new_trainer(accelerator: str, gpu_precision: str, **settings: Any) -> pl.Trainer:
    """A ``pl.Trainer`` as every network here trains: placed by :func:`device_kwargs`,
    deterministic, without logger, checkpoints, progress bar, model summary or sanity
    validation; ``settings`` add the rest (epochs, callbacks)."""
    return pl.Trainer(**device_kwargs(accelerator, gpu_precision), logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, deterministic=True, num_sanity_val_steps=0,
                      **settings)


@contextlib.contextmanager
def quiet_lightning(accelerator: str = "auto") -> Iterator[None]:
    """No info banners or few-workers hints; global determinism flags restored after; one
    intra-op thread where the networks train on the CPU (``accelerator``, as
    :func:`uses_gpu` reads it)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    deterministic = torch.are_deterministic_algorithms_enabled()
    # One intra-op thread on CPU: this net's matmuls are far too small to split, and with two
    # threads a busy second core made a 1 s fit take up to 56 s (measured). Restored after.
    threads = torch.get_num_threads()
    if not uses_gpu(accelerator):
        torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        # Lightning 2.6 still calls a torch pytree API that torch 2.13 deprecates.
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec", category=FutureWarning)
        warnings.filterwarnings(
            "ignore", message=r".*treespec, LeafSpec", category=DeprecationWarning
        )
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)


def train_network(
    net: MlpHarNet, train: TensorDataset, val: TensorDataset, config: MlpHarConfig
) -> tuple[dict[str, torch.Tensor], float, int]:
    """Fit ``net`` with early stopping on ``val``.

    Returns (best weights on CPU, best validation loss, epochs run).
    """
    module = MlpHarModule(net, lr=config.lr, weight_decay=config.weight_decay)
    # An explicit generator makes the shuffling order a function of the seed alone.
    shuffle = RandomSampler(train, generator=torch.Generator().manual_seed(config.seed))
    size = epoch_batch_size(len(train), config.batch_size, config.max_steps_per_epoch)
    train_loader = step_loader(train, BatchSampler(shuffle, size, drop_last=False))
    val_loader = batch_loader(val, BatchSampler(SequentialSampler(val), len(val), False))
    with quiet_lightning(config.accelerator):
        trainer = new_trainer(
            config.accelerator, config.gpu_precision, max_epochs=config.max_epochs,
            callbacks=[EarlyStopping(monitor="val_loss", patience=config.patience, mode="min")])
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    return module.best_state, module.best_val_loss, int(trainer.current_epoch)

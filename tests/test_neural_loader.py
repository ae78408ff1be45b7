"""The neural models' batch loader draws the batches a ``BatchSampler`` would, from the same
random stream, and gathers the same rows: training through it is bit for bit training
through the sampler's lists. Several optimizer steps per Lightning training step
(``GroupedSteps``): the same batches in the same order, never a draw of the sampler's stream
more, and weights equal bit for bit to a plain PyTorch loop over the sampler's batches."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    TensorDataset,
)

from models.neural import module as neural_module
from models.neural import residual
from models.neural.module import batch_loader, step_loader
from models.tail.net import TailModule


def _data(rows: int, seed: int = 0) -> TensorDataset:
    """(inputs, asset, target, mask); the target a noisy linear function of the inputs, so a
    network trained on it improves on validation."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, 3, generator=g)
    target = z @ torch.tensor([[0.5, -0.2], [0.3, 0.1], [-0.4, 0.6]])
    return TensorDataset(z, torch.randint(0, 4, (rows,), generator=g),
                         target + 0.1 * torch.randn(rows, 2, generator=g),
                         torch.rand(rows, 2, generator=g) > 0.3)


def _sampler(kind: str, data: TensorDataset, seed: int):
    if kind == "random":
        return RandomSampler(data, generator=torch.Generator().manual_seed(seed))
    if kind == "sequential":
        return SequentialSampler(data)
    # a sampler the loader does not draw itself: it must go through the sampler's lists
    return SubsetRandomSampler(range(len(data)), generator=torch.Generator().manual_seed(seed))


def _epoch(batches, exhaust: bool) -> list:
    """One epoch's batches: every one and then past the end (a plain loop), or exactly
    ``len`` of them (Lightning's loop, which never asks past the last)."""
    if exhaust:
        return list(batches)
    it = iter(batches)
    return [next(it) for _ in range(len(batches))]


@pytest.mark.parametrize("exhaust", [True, False])
@pytest.mark.parametrize("kind", ["random", "sequential", "subset"])
@pytest.mark.parametrize(("rows", "size", "drop_last"),
                         [(1_000, 64, False), (1_000, 64, True), (600, 50, False),
                          (999, 1_000, False), (96, 32, True), (1, 7, False)])
def test_the_loader_gives_the_batch_samplers_batches_epoch_after_epoch(
        kind: str, rows: int, size: int, drop_last: bool, exhaust: bool) -> None:
    data = _data(rows)
    ours = batch_loader(data, BatchSampler(_sampler(kind, data, 3), size, drop_last))
    theirs = BatchSampler(_sampler(kind, data, 3), size, drop_last)
    assert len(ours) == len(theirs)
    for _ in range(3):  # the generator's stream carries over from epoch to epoch
        got = _epoch(ours, exhaust)
        want = [[t[idx] for t in data.tensors] for idx in _epoch(theirs, exhaust)]
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert len(g) == len(w) == 4
            for a, b in zip(g, w, strict=True):
                assert a.dtype == b.dtype
                assert torch.equal(a, b)


def test_training_through_the_loader_is_training_through_the_samplers_lists(
        monkeypatch) -> None:
    def train() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        net = residual.ResidualMlp(residual.ResidualNetConfig(n_inputs=3, n_assets=4,
                                                              n_horizons=2))
        state, _, best = residual.train_residual(
            net, _data(600, 1), _data(80, 2), lr=1e-2, weight_decay=1e-4, batch_size=50,
            max_epochs=4, patience=10, seed=5)
        assert best >= 1  # a trained epoch won, not the zero correction it starts from
        return state

    ours = train()
    # the loader of before: the sampler's Python lists, each tensor indexed by the list, one
    # batch per training step
    monkeypatch.setattr(residual, "step_loader", lambda data, batches: DataLoader(
        data, sampler=batches, batch_size=None, num_workers=0, collate_fn=lambda b: [b]))
    theirs = train()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
    # and the training moved the weights (the comparison is not between two initial nets)
    torch.manual_seed(0)
    fresh = residual.ResidualMlp(residual.ResidualNetConfig(n_inputs=3, n_assets=4,
                                                            n_horizons=2)).state_dict()
    assert any(not torch.equal(ours[k], fresh[k]) for k in ours)


@pytest.mark.parametrize("group", [1, 3, 4, 32])
@pytest.mark.parametrize(("rows", "size", "drop_last"),
                         [(1_000, 64, False), (1_000, 64, True), (640, 64, False),
                          (96, 32, True), (1, 7, False)])
def test_groups_hold_the_batch_loaders_batches_in_order_epoch_after_epoch(
        rows: int, size: int, drop_last: bool, group: int) -> None:
    data = _data(rows)

    def sampler() -> RandomSampler:
        return RandomSampler(data, generator=torch.Generator().manual_seed(3))

    ours = step_loader(data, BatchSampler(sampler(), size, drop_last), group)
    theirs = batch_loader(data, BatchSampler(sampler(), size, drop_last))
    assert len(ours) == math.ceil(len(theirs) / group)
    for _ in range(3):  # the generator's stream carries over from epoch to epoch
        groups = _epoch(ours, exhaust=False)
        assert all(1 <= len(g) <= group for g in groups)
        got = [batch for g in groups for batch in g]
        want = _epoch(theirs, exhaust=False)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            for a, b in zip(g, w, strict=True):
                assert torch.equal(a, b)


def _plain_loop(train: TensorDataset, val: TensorDataset, *, seed: int, batch_size: int,
                epochs: int, lr: float, weight_decay: float) -> tuple[dict, float, int]:
    """``train_residual`` written as a plain PyTorch loop: forward, ``zero_grad``, backward,
    AdamW step per batch; validation after each epoch; the best epoch's weights kept."""
    torch.manual_seed(0)
    net = residual.ResidualMlp(residual.ResidualNetConfig(n_inputs=3, n_assets=4,
                                                          n_horizons=2))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)

    def val_loss() -> float:
        with torch.no_grad():
            z, asset, resid, mask = val.tensors
            total, count = residual.masked_mse(net(z, asset), resid, mask)
        return float(total) / max(count, 1)

    best, best_epoch = val_loss(), -1  # the zero correction is the first candidate
    best_state = {k: v.clone() for k, v in net.state_dict().items()}
    batches = BatchSampler(RandomSampler(train, generator=torch.Generator().manual_seed(seed)),
                           batch_size, drop_last=False)
    for epoch in range(epochs):
        it = iter(batches)
        for _ in range(len(batches)):  # as Lightning: never past the last batch
            index = next(it)
            z, asset, resid, mask = (t[index] for t in train.tensors)
            total, count = residual.masked_mse(net(z, asset), resid, mask)
            loss = total / max(count, 1e-12)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        loss = val_loss()
        if loss < best:
            best, best_epoch = loss, epoch
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
    return best_state, best, best_epoch


@pytest.mark.parametrize("group", [1, 5, 32])
def test_grouped_training_is_a_plain_loop_bit_for_bit(monkeypatch, group: int) -> None:
    monkeypatch.setattr(neural_module, "STEPS_PER_CALL", group)
    train, val = _data(700, 1), _data(90, 2)
    kw = dict(lr=1e-2, weight_decay=1e-4, batch_size=50)
    torch.manual_seed(0)
    net = residual.ResidualMlp(residual.ResidualNetConfig(n_inputs=3, n_assets=4,
                                                          n_horizons=2))
    # on the CPU, as the plain loop: the test is of the grouping, not of a device's arithmetic
    ours, ours_loss, ours_epoch = residual.train_residual(
        net, train, val, **kw, max_epochs=5, patience=10, seed=5, accelerator="cpu")
    theirs, theirs_loss, theirs_epoch = _plain_loop(train, val, seed=5, epochs=5, **kw)
    assert ours_epoch == theirs_epoch >= 1  # a trained epoch won, not the zero start
    assert ours_loss == theirs_loss
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k


def test_the_modules_step_in_groups_through_lightnings_manual_optimization() -> None:
    for cls in (neural_module.MlpHarModule, residual.ResidualModule, TailModule):
        assert issubclass(cls, neural_module.GroupedSteps)
    net = residual.ResidualMlp(residual.ResidualNetConfig(n_inputs=3, n_assets=4,
                                                          n_horizons=2))
    assert residual.ResidualModule(net, lr=1e-3, weight_decay=0.0).automatic_optimization is False

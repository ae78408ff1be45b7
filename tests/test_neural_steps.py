"""Several optimizer steps per Lightning training step (``GroupedSteps``): the same batches in
the same order, and weights equal bit for bit to a plain PyTorch loop over the sampler's
batches; the grouping never draws the sampler's stream differently."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler, TensorDataset

from models.neural import module as neural_module
from models.neural import residual
from models.neural.module import batch_loader, step_loader
from models.tail.net import TailModule


def _data(rows: int, seed: int = 0) -> TensorDataset:
    """(inputs, asset, target, mask): the target a noisy linear function of the inputs."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, 3, generator=g)
    target = z @ torch.tensor([[0.5, -0.2], [0.3, 0.1], [-0.4, 0.6]])
    return TensorDataset(z, torch.randint(0, 4, (rows,), generator=g),
                         target + 0.1 * torch.randn(rows, 2, generator=g),
                         torch.rand(rows, 2, generator=g) > 0.3)


def _exactly(loader) -> list:
    """One epoch as Lightning reads it: exactly ``len(loader)`` items, never one more."""
    it = iter(loader)
    return [next(it) for _ in range(len(loader))]


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
        groups = _exactly(ours)
        assert all(1 <= len(g) <= group for g in groups)
        got = [batch for g in groups for batch in g]
        want = _exactly(theirs)
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

    best, best_state, best_epoch = val_loss(), dict(net.state_dict()), -1
    best_state = {k: v.clone() for k, v in best_state.items()}
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
    ours, ours_loss, ours_epoch = residual.train_residual(
        net, train, val, **kw, max_epochs=5, patience=10, seed=5)
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

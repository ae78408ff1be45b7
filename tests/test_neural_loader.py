"""The neural models' batch loader draws the batches a ``BatchSampler`` would, from the same
random stream, and gathers the same rows: training through it is bit for bit training
through the sampler's lists."""

from __future__ import annotations

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

from models.neural import residual
from models.neural.module import batch_loader


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

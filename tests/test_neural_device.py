"""Where the networks train: ``accelerator`` and ``gpu_precision`` from the config reach the
Lightning trainer; a CPU always trains in float32 on one intra-op thread; "gpu" without a GPU
is an error, never a silent CPU fit. (The GPU path itself runs in ``benchmarks/gpu_bench.py``:
float32 on an H200 gave the CPU's forecasts within 1e-6; no test needs a GPU.)"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from configs.schema import Config, ConfigError
from models.neural import module as neural_module
from models.neural import residual
from models.neural.module import device_kwargs, quiet_lightning, uses_gpu
from models.neural.network import MlpHarNet, NetworkConfig

SECTIONS = ("models.mlp_har", "models.harx_mlp", "tail.tail_nn")


def _section(cfg: Config, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


@pytest.fixture
def gpu_seen(monkeypatch):
    """A process in which CUDA reports a GPU (nothing is trained on it here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_every_network_defaults_to_auto_and_float32_on_a_gpu() -> None:
    cfg = Config()
    for dotted in SECTIONS:
        section = _section(cfg, dotted)
        assert (section.accelerator, section.gpu_precision) == ("auto", "32-true"), dotted


@pytest.mark.parametrize("dotted", SECTIONS)
def test_an_unknown_accelerator_or_precision_is_refused_naming_the_key(dotted) -> None:
    for key, value in (("accelerator", "tpu"), ("gpu_precision", "16-mixed")):
        with pytest.raises(ConfigError, match=key):
            Config().with_overrides({f"{dotted}.{key}": value})


def test_a_cpu_trains_in_float32_whatever_the_gpu_precision(no_gpu) -> None:
    for accelerator in ("auto", "cpu"):
        assert device_kwargs(accelerator, "bf16-mixed") == {
            "accelerator": "cpu", "devices": 1, "precision": "32-true"}
    with pytest.raises(ValueError, match="CUDA sees no GPU"):
        device_kwargs("gpu", "32-true")
    with pytest.raises(ValueError, match="auto, cpu or gpu"):
        uses_gpu("cuda")


def test_a_gpu_takes_the_configured_precision_unless_the_cpu_is_asked_for(gpu_seen) -> None:
    assert device_kwargs("auto", "bf16-mixed") == {
        "accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"}
    assert device_kwargs("gpu", "32-true")["precision"] == "32-true"
    assert device_kwargs("cpu", "bf16-mixed") == {
        "accelerator": "cpu", "devices": 1, "precision": "32-true"}


def test_cpu_training_runs_on_one_thread_and_restores_the_count(gpu_seen) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with quiet_lightning("cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with quiet_lightning("auto"):  # a GPU trains: the CPU threads are left as they are
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_configured_accelerator_reaches_the_trainers(no_gpu) -> None:
    """A "gpu" asked for on a machine without one stops both trainers before a step."""
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 3, generator=g), torch.zeros(64, dtype=torch.long),
                         torch.randn(64, 2, generator=g), torch.ones(64, 2, dtype=torch.bool))
    net = residual.ResidualMlp(residual.ResidualNetConfig(n_inputs=3, n_assets=1,
                                                          n_horizons=2))
    with pytest.raises(ValueError, match="CUDA sees no GPU"):
        residual.train_residual(net, data, data, lr=1e-3, weight_decay=0.0, batch_size=16,
                                max_epochs=1, patience=1, seed=0, accelerator="gpu")
    config = Config().with_overrides({"models.mlp_har.accelerator": "gpu"}).models.mlp_har
    mlp = MlpHarNet(NetworkConfig(n_inputs=3, n_assets=1, n_horizons=2))
    with pytest.raises(ValueError, match="CUDA sees no GPU"):
        neural_module.train_network(mlp, data, data, config)

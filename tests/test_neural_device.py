"""Where the networks train: ``accelerator`` and ``gpu_precision`` from the config reach the
Lightning trainer; a CPU always trains in float32 on one intra-op thread; "gpu" without a GPU
is an error, never a silent CPU fit. (The GPU path itself runs in ``benchmarks/gpu_bench.py``:
float32 on an H200 gave the CPU's forecasts within 1e-6; no test needs a GPU.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from configs.schema import Config, ConfigError, MlpHarConfig, TailConfig
from features.schema import feature_view
from models.mlp_har import MlpHarForecaster
from models.neural import module as neural_module
from models.neural import residual
from models.neural.module import device_kwargs, quiet_lightning, uses_gpu
from models.neural.network import MlpHarNet, NetworkConfig
from models.tail.network import TailNetForecaster
from models.tail.registry import build_tail_forecaster
from tests.simulate import simulate_panel
from tests.tail_panel import tail_panel

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
    with pytest.raises(ValueError, match="accelerator must be one of"):
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


# --- on a GPU (``make test-gpu``; skipped where CUDA sees none) ---------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
ASSETS = ("AAA", "BBB", "CCC")


def _mlp_har(accelerator: str, precision: str = "32-true") -> MlpHarForecaster:
    cfg = MlpHarConfig(hidden=16, max_epochs=4, patience=2, accelerator=accelerator,
                       gpu_precision=precision)
    return MlpHarForecaster(cfg, horizons=(1, 7))


def _tail_nn(accelerator: str) -> TailNetForecaster:
    cfg = TailConfig().tail_nn.model_copy(update={
        "max_epochs": 3, "hidden": 4, "weight_decays": [1e-3], "ensemble_size": 2,
        "recency_half_lives": [0.0], "accelerator": accelerator})
    return build_tail_forecaster("tail_nn", TailConfig().model_copy(update={"tail_nn": cfg}))


@pytest.mark.gpu
@needs_cuda
def test_auto_takes_the_gpu_where_cuda_sees_one() -> None:
    assert device_kwargs("auto", "32-true")["accelerator"] == "gpu"


@pytest.mark.gpu
@needs_cuda
def test_mlp_har_in_float32_on_a_gpu_forecasts_what_the_cpu_does() -> None:
    """Float32 on the GPU: the CPU's forecasts within 1e-4 (an H200 gave 1e-6 on the
    embedded data); bf16-mixed is applied when asked for, and moves them."""
    panel = feature_view(simulate_panel(ASSETS, n_days=400, seed=1))
    cpu, gpu, bf16 = (_mlp_har(a, p).fit(panel).forecast(panel, (1, 7))["variance"].to_numpy()
                      for a, p in (("cpu", "32-true"), ("gpu", "32-true"),
                                   ("gpu", "bf16-mixed")))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4)
    assert np.isfinite(bf16).all() and (bf16 > 0).all()
    assert not np.allclose(bf16, cpu, rtol=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_tail_nn_in_float32_on_a_gpu_forecasts_what_the_cpu_does() -> None:
    panel = tail_panel(("AAA", "BBB"), n_days=900, seed=8)
    train = panel[panel.index.get_level_values("date") <= panel.index.levels[1][700]]
    cpu, gpu = (_tail_nn(a).fit(train).forecast_tail(panel) for a in ("cpu", "gpu"))
    assert len(cpu) == len(gpu) > 0
    for column in ("var", "es"):
        np.testing.assert_allclose(gpu[column].to_numpy(), cpu[column].to_numpy(), rtol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_a_net_that_cannot_move_keeps_its_start_on_a_gpu() -> None:
    """The untrained start is scored on the training device: a net whose learning rate keeps
    it where it started never beats its own start by a CPU-against-GPU rounding difference."""
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(256, 3, generator=g), torch.zeros(256, dtype=torch.long),
                         torch.randn(256, 2, generator=g), torch.ones(256, 2, dtype=torch.bool))
    torch.manual_seed(0)
    net = residual.ResidualMlp(residual.ResidualNetConfig(n_inputs=3, n_assets=1,
                                                          n_horizons=2))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    best, _, epoch = residual.train_residual(net, data, data, lr=1e-12, weight_decay=0.0,
                                             batch_size=64, max_epochs=3, patience=5, seed=0,
                                             accelerator="gpu")
    assert epoch == -1
    assert all(torch.equal(best[k], start[k]) for k in start)

"""The base of every config section: strict (unknown keys refused), frozen models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names key and source."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Where the Lightning networks train (mlp_har, harx_mlp's residual net, tail_nn): "auto" takes
# a GPU when one is present and the CPU otherwise, "cpu" always the CPU, "gpu" a GPU or an
# error. A CPU always trains in float32 on one intra-op thread.
Accelerator = Literal["auto", "cpu", "gpu"]
# The precision on a GPU. float32 by default: bf16-mixed, measured on an H200 against float32
# on the CPU, changed mlp_har's forecasts by 5.5% (median) and raised its 7-day QLIKE by 9%,
# and was never faster than one CPU core (benchmarks/README.md, "GPU").
GpuPrecision = Literal["32-true", "bf16-mixed"]

"""The base of every config section: strict (unknown keys refused), frozen models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names key and source."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

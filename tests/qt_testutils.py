"""Helpers shared by the unit tests (a module of its own, so test files can import it by a unique name)."""

from __future__ import annotations

from qtransformer.config import ModelConfig


def tiny_model_config(**overrides) -> ModelConfig:
    base = dict(d_model=16, n_layers=1, n_heads=2, encoder_hidden=16)
    base.update(overrides)
    return ModelConfig(**base)

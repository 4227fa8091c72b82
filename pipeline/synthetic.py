"""Seeded synthetic weights: what a variant uses when no checkpoint is configured.

They exercise every conversion path but do not behave like a trained model (outputs are not
peaked), so artifacts built from them are marked `synthetic` in their metadata and metrics.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from pipeline.spec import ModelSpec


def synthetic_state_dict(spec: ModelSpec, seed: int) -> "OrderedDict[str, torch.Tensor]":
    """Seeded random weights for the network of `spec`: what the pipeline uses when no checkpoint is given."""
    generator = torch.Generator().manual_seed(seed)
    model = spec.build_model()
    state = model.state_dict()
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        if key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=generator) * 0.5 + 0.75)
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            value.copy_(torch.randn(value.shape, generator=generator) * 0.05)
        elif key.endswith("bn.weight") or key.endswith(".g") or key.endswith("res_scale.scale"):
            value.fill_(1.0)
        elif value.dim() >= 2:
            fan_in = value[0].numel()
            value.copy_(torch.randn(value.shape, generator=generator) * (1.0 / fan_in) ** 0.5)
        else:
            value.copy_(torch.rand(value.shape, generator=generator) * 0.5)
    return state

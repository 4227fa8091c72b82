"""Seeded synthetic weights: what a variant uses when no checkpoint is configured.

They exercise every conversion path but do not behave like a trained model (outputs are not
peaked), so artifacts built from them are marked `synthetic` in their metadata and metrics.

The same bytes on every x86 CPU: the values come from numpy's PCG64 integers turned into uniform
float64 (`Generator.random`: the top 53 bits times 2**-53) and combined with IEEE float64 additions
and multiplications only, then rounded once to float32. torch's `randn`/`rand` are not: their fill
kernels are vectorised per ATen CPU capability (Box-Muller with SIMD log/sin/cos), so
`ATEN_CPU_CAPABILITY=default` and AVX2 gave different weights, and a Xeon's synthetic variants
different exports than an AMD EPYC's. Normal values are Irwin-Hall sums (12 uniforms minus 6: mean 0,
variance 1, within +-6), which need no transcendental function.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from pipeline.model.rtmpose import build_network
from pipeline.model.spec import ModelSpec


def synthetic_state_dict(spec: ModelSpec, seed: int) -> "OrderedDict[str, torch.Tensor]":
    """Seeded random weights (float32), keyed like the official checkpoints."""
    rng = np.random.Generator(np.random.PCG64(seed))

    def uniform(shape: torch.Size, low: float, high: float) -> torch.Tensor:
        return torch.from_numpy((low + (high - low) * rng.random(tuple(shape))).astype(np.float32))

    def normal(shape: torch.Size, std: float) -> torch.Tensor:
        total = rng.random(tuple(shape))
        for _ in range(11):
            total += rng.random(tuple(shape))
        return torch.from_numpy(((total - 6.0) * std).astype(np.float32))

    state = build_network(spec).state_dict()
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        if key.endswith("running_var"):
            value.copy_(uniform(value.shape, 0.75, 1.25))
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            value.copy_(normal(value.shape, 0.05))
        elif key.endswith("bn.weight") or key.endswith(".g") or key.endswith("res_scale.scale"):
            value.fill_(1.0)
        elif value.dim() >= 2:
            value.copy_(normal(value.shape, (1.0 / value[0].numel()) ** 0.5))
        else:
            value.copy_(uniform(value.shape, 0.0, 0.5))
    return state

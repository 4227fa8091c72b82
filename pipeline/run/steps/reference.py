"""Step `reference@<variant>`: golden inputs and the reference outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.check.reference import reference_runs
from pipeline.check.verify import Golden
from pipeline.config import RunConfig
from pipeline.core.errors import InputError
from pipeline.core.finite import non_finite
from pipeline.core.io import write_npz
from pipeline.inputs.golden import PHOTO_BOXES, golden_crops, random_inputs
from pipeline.model.preprocess import normalize
from pipeline.planning.plan import spec_of
from pipeline.planning.plan import variant_entry as _variant_entry


def reference(cfg: RunConfig, variant_name: str) -> Path:
    """Golden inputs and the reference outputs in float32 and float64: PyTorch, or the supplied ONNX in
    plain onnxruntime (float32) and its graph in float64 by onnx's reference evaluator."""
    paths = _variant_entry(cfg, variant_name)
    spec = spec_of(cfg, variant_name)
    crops = golden_crops(spec, cfg.verify.num_figures)
    randoms = random_inputs(spec.input_hw, cfg.verify.num_random, cfg.verify.seed)
    inputs = np.concatenate([normalize(crops, spec.preprocess), randoms])  # as the reference model expects
    float32, float64 = reference_runs(cfg, variant_name, inputs)
    for run, outputs in (("float32", float32), ("float64", float64 or {})):
        found = non_finite(outputs.items())
        if found:  # nothing downstream can be compared with it: say so here, not as a later stage's breach
            raise InputError(f"the reference model of {variant_name} outputs non-finite values in {run} on the golden "
                             f"inputs: {found}; its weights are finite, so the network overflows: check the "
                             "checkpoint (a diverged training run) and its normalisation")
    golden = Golden(inputs, crops, spec.preprocess, float32, float64, len(PHOTO_BOXES), spec.simcc_split_ratio)
    write_npz(paths["reference"], golden.arrays())
    return Path(paths["reference"])

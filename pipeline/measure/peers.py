"""The peers: what a user gets on this machine without this pipeline, the benchmark's baseline (issue 12).

Each peer starts from the plain export (`export/model.onnx`, as MMDeploy exports it: opset 17,
dynamic batch, nothing simplified or quantized) and uses only the runtime's documented defaults. Each
backend says how its peers are made (its module's `peers`, pipeline/backends/): today `peer-onnxruntime`
(a default InferenceSession), `peer-openvino` (convert_model, compiled with no properties) and
`peer-openvino-nncf-int8` (`nncf.quantize` defaults on the int8 targets' calibration set).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from pipeline import backends
from pipeline.measure.benchmark import Candidate


def build_peers(export_onnx: Path, calibration: np.ndarray | None, out_dir: Path, backends_used: Collection[str],
                static_shape: bool = True) -> list[Candidate]:
    """Write the peers of the backends in `backends_used` under `out_dir` (in the registry's order) and return
    them as benchmark candidates.

    `calibration` [N,3,H,W] float32 is the int8 targets' calibration set; without it (no int8 target in
    the plan) no peer that calibrates is made. `static_shape`: peers whose runtime takes it fix the batch to 1.
    """
    candidates = []
    for name in (name for name in backends.BACKENDS if name in backends_used):
        for peer in backends.get(name).peers(export_onnx, calibration, out_dir, static_shape):
            candidates.append(Candidate(peer.name, "peer", peer.target, str(peer.artifact_dir), peer.latency_runtime,
                                        peer.throughput_runtime, peer.description))
    return candidates

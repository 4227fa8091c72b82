"""ONNX Runtime backend.

Artifact: `model.onnx` (the simplified FP32 graph, unchanged). Precisions: fp32.
Runtime: `onnxruntime.InferenceSession` with the CPU execution provider (tested with 1.32).
Its precision is checked, not assumed: the runner refuses a session whose provider is not the CPU
one or whose I/O is not float32.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.backends.common import check_feeds
from pipeline.backends import Target
from pipeline.errors import ConfigError, RuntimeMissingError

PRECISIONS = ("fp32",)
MODEL_FILE = "model.onnx"


def build(onnx_path: Path, target: Target, cfg, out_dir: Path) -> Path:
    if target.precision not in PRECISIONS:
        raise ConfigError(f"targets: onnxruntime cannot build precision {target.precision!r}")
    shutil.copyfile(onnx_path, out_dir / MODEL_FILE)
    return out_dir / MODEL_FILE


def graph_float_types(path: Path) -> dict[str, int]:
    """Floating-point initializers by element type: what the CPU provider will compute in."""
    import onnx

    names = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
    counts: dict[str, int] = {}
    for init in onnx.load(str(path), load_external_data=False).graph.initializer:
        if init.data_type in names:
            counts[names[init.data_type]] = counts.get(names[init.data_type], 0) + 1
    return dict(sorted(counts.items()))


class Runner:
    def __init__(self, artifact_dir: Path, target: Target, cfg) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = cfg.backends.onnxruntime.num_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(Path(artifact_dir) / MODEL_FILE), options,
                                            providers=["CPUExecutionProvider"])
        if self.session.get_providers()[0] != "CPUExecutionProvider":
            raise RuntimeMissingError(f"onnxruntime chose {self.session.get_providers()[0]}, not the CPU provider")
        self.inputs = {i.name: (i.type, i.shape) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        for name, (dtype, _) in self.inputs.items():
            if dtype != "tensor(float)":
                raise ConfigError(f"{target.name}: input {name!r} is {dtype}, not float32")
        self.settings = {"provider": "CPUExecutionProvider", "intra_op_num_threads": options.intra_op_num_threads,
                         "execution_precision": graph_float_types(Path(artifact_dir) / MODEL_FILE)}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(feeds, {name: shape for name, (_, shape) in self.inputs.items()})
        return dict(zip(self.output_names, self.session.run(self.output_names, dict(feeds))))

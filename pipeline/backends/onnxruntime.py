"""ONNX Runtime backend.

Artifact: `model.onnx`. Precisions:
- fp32: the simplified graph, unchanged;
- fp16: the graph converted to float16 (pipeline/fp16.py), float32 I/O kept;
- int8: the shared Q/DQ graph from the `quantize` stage (pipeline/quantize.py), its activations
  re-expressed exactly as uint8 (zero point 128), the form onnxruntime's x86 int8 kernels are fast at.
Runtime: `onnxruntime.InferenceSession`, CPU execution provider (tested with 1.32). The precision is
read from the artifact, not assumed: `execution_precision` counts its initializers by element type.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from pipeline.backends import BACKENDS, Target
from pipeline.backends.common import check_feeds
from pipeline.errors import ConfigError, RuntimeMissingError
from pipeline.fp16 import convert_fp16
from pipeline.onnx_io import run_in_chunks
from pipeline.quantize import activations_to_uint8, float_nodes

PRECISIONS = BACKENDS["onnxruntime"].precisions
MODEL_FILE = "model.onnx"
_TYPE_NAMES = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16",
               onnx.TensorProto.BFLOAT16: "bf16", onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "int8"}


def build(onnx_path: Path, target: Target, cfg, out_dir: Path, calibration=None) -> Path:
    if target.precision not in PRECISIONS:
        raise ConfigError(f"targets: onnxruntime cannot build precision {target.precision!r}")
    out = out_dir / MODEL_FILE
    if target.precision == "fp16":
        model = onnx.load(str(onnx_path))
        options = cfg.backends.onnxruntime
        converted = convert_fp16(model, list(options.fp16_keep_float_ops),
                                 float_nodes(model, list(options.fp16_keep_float_nodes)))
        onnx.save_model(converted, str(out))
        return out
    if target.precision == "int8":
        model = onnx.load(str(onnx_path))
        if not activations_to_uint8(model):
            raise ConfigError(f"{target.name} needs the Q/DQ model from the quantize stage, got {onnx_path}")
        onnx.save_model(model, str(out))
        return out
    shutil.copyfile(onnx_path, out)
    return out


def graph_precisions(path: Path) -> dict[str, int]:
    """Initializers by element type: what the CPU provider will compute in."""
    counts: dict[str, int] = {}
    for init in onnx.load(str(path), load_external_data=False).graph.initializer:
        name = _TYPE_NAMES.get(init.data_type)
        if name:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


class Runner:
    def __init__(self, artifact_dir: Path, target: Target, cfg) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = cfg.backends.onnxruntime.num_threads
        options.inter_op_num_threads = 1
        path = Path(artifact_dir) / MODEL_FILE
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        if self.session.get_providers()[0] != "CPUExecutionProvider":
            raise RuntimeMissingError(f"onnxruntime chose {self.session.get_providers()[0]}, not the CPU provider")
        self.inputs = {i.name: (i.type, i.shape) for i in self.session.get_inputs()}
        batch = next(iter(self.inputs.values()))[1][0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        for name, (dtype, _) in self.inputs.items():
            if dtype != "tensor(float)":
                raise ConfigError(f"{target.name}: input {name!r} is {dtype}, not float32")
        self.settings = {"provider": "CPUExecutionProvider", "intra_op_num_threads": options.intra_op_num_threads,
                         "execution_precision": graph_precisions(path)}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(feeds, {name: shape for name, (_, shape) in self.inputs.items()})
        return run_in_chunks(self._run, dict(feeds), self.fixed_batch)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, feeds)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self.output_names, outputs)}

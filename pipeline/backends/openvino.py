"""OpenVINO backend.

Artifact: `model.xml` + `model.bin` (OpenVINO IR from `openvino.convert_model` + `save_model`,
weights kept in fp32). Precisions: fp32. Tested with openvino 2026.4.
On CPUs with bf16 support (AVX512_BF16, AMX) OpenVINO executes in bf16 unless told otherwise, so the
runner sets INFERENCE_PRECISION_HINT from the target's precision and reports the precisions the
compiled model actually executes, read from its runtime graph; verification checks them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.backends import Target
from pipeline.backends.common import check_feeds
from pipeline.errors import ConfigError

PRECISIONS = ("fp32",)
MODEL_FILE = "model.xml"
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


def build(onnx_path: Path, target: Target, cfg, out_dir: Path) -> Path:
    import openvino as ov

    if target.precision not in PRECISIONS:
        raise ConfigError(f"targets: openvino cannot build precision {target.precision!r}")
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=False)
    return out_dir / MODEL_FILE


class Runner:
    def __init__(self, artifact_dir: Path, target: Target, cfg) -> None:
        import openvino as ov

        options = cfg.backends.openvino
        hint = options.inference_precision_hint or HINTS.get(target.precision)
        if hint not in HINTS.values():
            raise ConfigError(f"backends.openvino.inference_precision_hint={hint!r}; choose one of "
                              f"{', '.join(HINTS.values())} or leave it empty to follow the target")
        core = ov.Core()
        self.compiled = core.compile_model(str(Path(artifact_dir) / MODEL_FILE), options.device, {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": options.num_threads,
            "NUM_STREAMS": 1,
        })
        self.request = self.compiled.create_infer_request()
        self.inputs = {port.any_name: [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
                       for port in self.compiled.inputs}
        self.output_names = [port.any_name for port in self.compiled.outputs]
        self.settings = {
            "device": options.device,
            "inference_precision_hint": self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "inference_num_threads": options.num_threads,
            "execution_precision": self.execution_precisions(),
        }

    def execution_precisions(self) -> dict[str, int]:
        """Number of runtime-graph operations executing in each floating-point precision."""
        counts = Counter(str(op.get_rt_info()["runtimePrecision"].astype(str))
                         for op in self.compiled.get_runtime_model().get_ops())
        names = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
        return {names[p]: n for p, n in sorted(counts.items()) if p in names}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(feeds, self.inputs)
        results = self.request.infer(dict(feeds))
        return {name: np.array(results[name]) for name in self.output_names}

"""OpenVINO backend.

Artifact: `model.xml` + `model.bin` (IR from `openvino.convert_model` + `save_model`). Precisions:
- fp32: f32 weights, INFERENCE_PRECISION_HINT f32;
- fp16: f16 weights (`compress_to_fp16`), hint f16 where the CPU computes in f16 (AVX512_FP16/AMX),
  else f32 compute on the f16 weights;
- bf16: f32 weights, hint bf16; refused on CPUs without bf16 support;
- int8: NNCF post-training quantization (`nncf.quantize`) on the calibration set, hint f32 for the
  layers it leaves in float.
Tested with openvino 2026.4 and nncf 3.4. On CPUs with bf16 support OpenVINO computes in bf16 unless
told otherwise, so the runner always sets the hint and reports the precisions the compiled model
really executes, read from its runtime graph; verification checks them against the target.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.backends import BACKENDS, Target
from pipeline.backends.common import check_feeds
from pipeline.errors import ConfigError, RuntimeMissingError
from pipeline.onnx_io import run_in_chunks

PRECISIONS = BACKENDS["openvino"].precisions
MODEL_FILE = "model.xml"
_RUNTIME_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}


def cpu_capabilities(device: str = "CPU") -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES"))


def _require_bf16(device: str) -> None:
    capabilities = cpu_capabilities(device)
    if "BF16" not in capabilities:
        raise RuntimeMissingError(f"openvino-bf16 needs a device with bf16 support (AVX512_BF16 or AMX); {device} "
                                  f"offers {', '.join(capabilities)}; use openvino-fp16 or openvino-int8")


def _quantize_int8(model, calibration: np.ndarray, cfg):
    import nncf

    if calibration is None or len(calibration) == 0:
        raise ConfigError("openvino-int8 needs calibration data (calibration stage); none was given")
    prefixes = list(cfg.quantize.keep_float)
    ignored = nncf.IgnoredScope(patterns=[f"{p}.*" for p in prefixes], validate=False) if prefixes else None
    dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
    return nncf.quantize(model, dataset, subset_size=len(calibration), ignored_scope=ignored or nncf.IgnoredScope(),
                         preset=nncf.QuantizationPreset.PERFORMANCE)


def build(onnx_path: Path, target: Target, cfg, out_dir: Path, calibration=None) -> Path:
    import openvino as ov

    if target.precision not in PRECISIONS:
        raise ConfigError(f"targets: openvino cannot build precision {target.precision!r}")
    if target.precision == "bf16":
        _require_bf16(cfg.backends.openvino.device)
    model = ov.convert_model(str(onnx_path))
    if target.precision == "int8":
        model = _quantize_int8(model, calibration, cfg)
    ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=target.precision == "fp16")
    return out_dir / MODEL_FILE


def precision_hint(precision: str, device: str) -> str:
    if precision == "bf16":
        _require_bf16(device)
        return "bf16"
    if precision == "fp16" and "FP16" in cpu_capabilities(device):
        return "f16"
    return "f32"


class Runner:
    def __init__(self, artifact_dir: Path, target: Target, cfg) -> None:
        import openvino as ov

        options = cfg.backends.openvino
        hint = options.inference_precision_hint or precision_hint(target.precision, options.device)
        if hint not in _RUNTIME_NAMES:
            raise ConfigError(f"backends.openvino.inference_precision_hint={hint!r}; choose f32, f16 or bf16, "
                              "or leave it empty to follow the target")
        core = ov.Core()
        path = Path(artifact_dir) / MODEL_FILE
        self.compiled = core.compile_model(str(path), options.device, {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": options.num_threads,
            "NUM_STREAMS": 1,
        })
        self.request = self.compiled.create_infer_request()
        self.inputs = {port.any_name: [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
                       for port in self.compiled.inputs}
        self.output_names = [port.any_name for port in self.compiled.outputs]
        batch = next(iter(self.inputs.values()))[0]
        self.fixed_batch = batch if batch > 0 else None
        executed = self.execution_precisions()
        if target.precision == "fp16" and "fp16" not in executed:
            # f32 compute on f16 weights (CPU without f16 arithmetic): report the f16 weights.
            executed["fp16"] = sum(1 for op in core.read_model(str(path)).get_ops()
                                   if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16)
        self.settings = {
            "device": options.device,
            "inference_precision_hint": self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "inference_num_threads": options.num_threads,
            "execution_precision": executed,
        }

    def execution_precisions(self) -> dict[str, int]:
        """Number of runtime-graph operations executing in each precision that matters here."""
        counts: Counter[str] = Counter()
        for op in self.compiled.get_runtime_model().get_ops():
            name = _RUNTIME_NAMES.get(str(op.get_rt_info()["runtimePrecision"].astype(str)))
            if name:
                counts[name] += 1
        return dict(sorted(counts.items()))

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(feeds, self.inputs)
        return run_in_chunks(self._run, dict(feeds), self.fixed_batch)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer(feeds)
        return {name: np.asarray(results[name], dtype=np.float32) for name in self.output_names}

"""OpenVINO backend.

Artifact: `model.xml` + `model.bin` (IR from `openvino.convert_model` + `save_model`). Precisions:
- fp32: f32 weights, INFERENCE_PRECISION_HINT f32;
- fp16: f16 weights (`compress_to_fp16`), hint f16 where the CPU computes in f16 (AVX512_FP16/AMX),
  else f32 compute on the f16 weights;
- bf16: f32 weights, hint bf16; refused on CPUs without bf16 support;
- int8: NNCF post-training quantization (`nncf.quantize`) on the calibration set; the layers it leaves
  in float compute in bf16 on CPUs with native bf16 (AVX512_BF16 or AMX; `backends.openvino.int8_float_part`
  auto), else in f32. Verification judges the result either way.
Tested with openvino 2026.4 and nncf 3.4. On CPUs with bf16 support OpenVINO computes in bf16 unless
told otherwise, so the runner always sets the hint and reports the precisions the compiled model
really executes, read from its runtime graph (each layer's `runtimePrecision`; constants not counted, never
the weights the build wrote); verification checks them against the target.
Settings: `backends.openvino` (OpenVINOConfig); openvino-int8 is also given a `SelfCalibration` (the
calibration set, `quantize.keep_float`, `quantize.openvino_max_drift_px`, `verify.min_peak_margin`).

Peers (`peers`), saved as IR with float32 weights (which compiles to the same model as compiling the ONNX
file or the quantized model in memory) and compiled with no properties:
- `peer-openvino`: `openvino.convert_model(path)` of the plain export: OpenVINO's default precision for the
  CPU (bf16 where it has AVX512_BF16 or AMX, else f32) and its default LATENCY hint;
- `peer-openvino-nncf-int8`: `nncf.quantize(model, nncf.Dataset(calibration))` with every default
  (NNCF 3.x: preset PERFORMANCE, 300-sample subset, fast bias correction), on the int8 targets' calibration set.
With `static_shape` (benchmark.peer_static_shape, on by default) they are reshaped to a static [1,3,H,W]
before compiling, as OpenVINO's documentation advises for a model served one image at a time; a user who
keeps the dynamic batch gets a slower model, so the baseline is the stronger form. For throughput a user
is told to use the THROUGHPUT hint.

Runtime settings (pipeline/backends/runtime.py; a missing key leaves OpenVINO's default, so `{}` with
`inference_precision_hint: null` is a plain `compile_model(path, "CPU")`):
- `performance_hint`: `LATENCY` or `THROUGHPUT` (PERFORMANCE_HINT; OpenVINO then picks streams and threads);
- `inference_num_threads`, `num_streams`, `enable_cpu_pinning`: the CPU plugin's properties of those names;
- `static_batch`: `Model.reshape` to [static_batch,3,H,W] before compiling, so the plugin compiles
  static shapes; inputs of another batch run `static_batch` images per request;
- `inference_precision_hint`: absent: the target's (above); null: OpenVINO's default for the CPU;
- `requests`: throughput mode only: `AsyncInferQueue` size (0: the compiled model's
  OPTIMAL_NUMBER_OF_INFER_REQUESTS).
Tuned (`runtime_grid`): latency: LATENCY hint, one stream, {threads} x {dynamic, static batch};
throughput: the THROUGHPUT hint (OpenVINO picks streams) with static or dynamic batch.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.backends import BACKENDS, Target
from pipeline.backends.common import check_feeds
from pipeline.backends.interface import ArtifactFormat, Peer, SelfCalibration
from pipeline.backends.runtime import check_mode, resolve_runtime
from pipeline.config import OpenVINOConfig
from pipeline.core.errors import ConfigError, InputError, RuntimeMissingError
from pipeline.core.onnx_io import INPUT_NAME, get_metadata, run_in_chunks
from pipeline.model.decode import SIMCC_SPLIT_RATIO, confident_keypoints, simcc_argmax

PRECISIONS = BACKENDS["openvino"].precisions
SETTINGS = OpenVINOConfig
MODEL_FILE = "model.xml"
FILES = ArtifactFormat(MODEL_FILE, weights="model.bin")
# False: NNCF quantizes the float IR itself, from the calibration set (declared in the registry entry)
INT8_FROM_QDQ = BACKENDS["openvino"].int8_from_qdq
BOUND_TO_GPU = False
METADATA_KEY = "framework"  # convert_model keeps the ONNX's metadata_props under rt_info["framework"]
RUNTIME_KEYS = ("performance_hint", "inference_num_threads", "num_streams", "enable_cpu_pinning", "static_batch",
                "inference_precision_hint", "requests")
_RUNTIME_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}
# Runtime-graph layer types that hold or pass data without computing: not counted in `execution_precision`.
_NOT_EXECUTED = frozenset({"Const", "Input", "Output"})


def unavailable_reason(target: Target) -> str:
    """'' if the target can run on this CPU, else why its job is left out of the plan (bf16 needs the CPU's)."""
    if target.precision != "bf16" or importlib.util.find_spec("openvino") is None:
        return ""  # without the package, the build says which extra to install
    if "BF16" not in cpu_capabilities():
        return "openvino-bf16 needs a CPU with bf16 support (AVX512_BF16 or AMX); this one has none"
    return ""


def cpu_capabilities(device: str = "CPU") -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES"))


def _require_bf16(device: str) -> None:
    capabilities = cpu_capabilities(device)
    if "BF16" not in capabilities:
        raise RuntimeMissingError(f"openvino-bf16 needs a device with bf16 support (AVX512_BF16 or AMX); {device} "
                                  f"offers {', '.join(capabilities)}; use openvino-fp16 or openvino-int8")


def _keypoint_drift_metric(float_model, calibration: np.ndarray, min_peak_margin: float, split_ratio: float):
    """NNCF validation for accuracy control: (items, validation_fn). An item is one calibration crop, the
    float model's decoded keypoints on it and which of them are confident (both SimCC rows with a peak
    margin of at least `min_peak_margin`, as `verify` gates: pipeline/check/verify.py); the metric is the crop's
    diagonal minus the mean drift (px, SimCC bins over `split_ratio`) of the confident keypoints, so the
    float model scores the diagonal and NNCF's absolute `max_drop` is a drift budget in pixels. (A metric
    of 0 for the float model would not do: NNCF 3.4 divides by it for the relative drop, even when unused.)
    Per-sample values rank NNCF's sensitive layers."""
    import openvino as ov


    compiled = ov.Core().compile_model(float_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    items = []
    for i in range(len(calibration)):
        outputs = {port.any_name: value for port, value in compiled(calibration[i:i + 1]).items()}
        keypoints, _ = simcc_argmax(outputs["simcc_x"], outputs["simcc_y"], split_ratio)
        items.append((calibration[i:i + 1], keypoints[0], confident_keypoints(outputs, min_peak_margin)[0]))

    diagonal = float(np.hypot(*calibration.shape[2:]))

    def validation_fn(model, data) -> tuple[float, list[float]]:
        per_sample = []
        for image, reference, confident in data:
            outputs = model(image)
            keypoints, _ = simcc_argmax(outputs["simcc_x"], outputs["simcc_y"], split_ratio)
            drift = np.linalg.norm(keypoints[0] - reference, axis=-1)[confident]
            per_sample.append(diagonal - (float(drift.mean()) if drift.size else 0.0))
        return float(np.mean(per_sample)), per_sample

    return items, validation_fn


def _quantize_int8(model, calibration: SelfCalibration | None, split_ratio: float):
    """NNCF post-training quantization; with `quantize.openvino_max_drift_px` set, NNCF's accuracy
    control then returns the layers that move keypoints most to float until the drift is within budget."""
    import nncf

    if calibration is None or len(calibration.inputs) == 0:
        raise ConfigError("openvino-int8 needs calibration data (calibration stage); none was given")
    inputs, prefixes, budget = calibration.inputs, list(calibration.keep_float), calibration.max_drift_px
    ignored = nncf.IgnoredScope(patterns=[f"{p}.*" for p in prefixes], validate=False) if prefixes else None
    dataset = nncf.Dataset([inputs[i:i + 1] for i in range(len(inputs))])
    if budget is None:
        return nncf.quantize(model, dataset, subset_size=len(inputs),
                             ignored_scope=ignored or nncf.IgnoredScope(), preset=nncf.QuantizationPreset.PERFORMANCE)
    if budget <= 0:
        raise ConfigError(f"quantize.openvino_max_drift_px={budget}; set a drift budget in pixels > 0, or null")
    items, validation_fn = _keypoint_drift_metric(model, inputs, calibration.min_peak_margin, split_ratio)
    return nncf.quantize_with_accuracy_control(
        model, dataset, nncf.Dataset(items), validation_fn, max_drop=budget, drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(inputs), ignored_scope=ignored or nncf.IgnoredScope(),
        preset=nncf.QuantizationPreset.PERFORMANCE)


def _split_ratio(onnx_path: Path) -> float:
    """The SimCC split ratio the export recorded in the ONNX metadata (pipeline/graph/export.py)."""
    import onnx


    metadata = get_metadata(onnx.load(str(onnx_path), load_external_data=False))
    return float(metadata.get("simcc_split_ratio", SIMCC_SPLIT_RATIO))


def build(onnx_path: Path, target: Target, settings: OpenVINOConfig, out_dir: Path,
          calibration: SelfCalibration | None = None) -> Path:
    """The IR (model.xml + model.bin) of the simplified ONNX; int8 quantized by NNCF from `calibration`."""
    import openvino as ov

    if target.precision not in PRECISIONS:
        raise ConfigError(f"targets: openvino cannot build precision {target.precision!r}")
    if target.precision == "bf16":
        _require_bf16(settings.device)
    model = ov.convert_model(str(onnx_path))
    if target.precision == "int8":
        model = _quantize_int8(model, calibration, _split_ratio(onnx_path))
    ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=target.precision == "fp16")
    return out_dir / MODEL_FILE


def precision_hint(precision: str, device: str, int8_float_part: str = "auto") -> str:
    """INFERENCE_PRECISION_HINT for a target. For int8 it is the precision of the layers NNCF left in
    float: bf16 where the CPU computes bf16 natively (`int8_float_part` auto or bf16), else f32. The config
    schema has already refused any other `int8_float_part` (pipeline/config.py: INT8_FLOAT_PARTS)."""
    if precision == "bf16":
        _require_bf16(device)
        return "bf16"
    if precision == "int8":
        if int8_float_part == "bf16":
            _require_bf16(device)
            return "bf16"
        return "bf16" if int8_float_part == "auto" and "BF16" in cpu_capabilities(device) else "f32"
    if precision == "fp16" and "FP16" in cpu_capabilities(device):
        return "f16"
    return "f32"


def default_runtime(settings: OpenVINOConfig, mode: str = "latency") -> dict:
    """The settings of an artifact that records none: `backends.openvino` threads, one stream."""
    check_mode(mode)
    return {"inference_num_threads": settings.num_threads, "num_streams": 1}


def runtime_grid(mode: str, threads: list[int], static_batches: list[int]) -> list[dict]:
    """The settings `tune` tries, plainest first (module docstring)."""
    if mode == "latency":
        return [{"performance_hint": "LATENCY", "num_streams": 1, "inference_num_threads": t, "static_batch": s}
                for s in static_batches for t in threads]
    return [{"performance_hint": "THROUGHPUT", "static_batch": s} for s in static_batches]


def peers(export_onnx: Path, calibration: np.ndarray | None, out_dir: Path, static_shape: bool) -> list[Peer]:
    """`peer-openvino` and, given the int8 targets' calibration set, `peer-openvino-nncf-int8` (module
    docstring), their IR written under `out_dir`."""
    import openvino as ov

    static = {"static_batch": 1} if static_shape else {}
    shape_note = "static [1,3,H,W]" if static_shape else "dynamic batch"
    latency = {"inference_precision_hint": None, **static}
    throughput = {"inference_precision_hint": None, "performance_hint": "THROUGHPUT", **static}
    models = [("peer-openvino", "openvino-fp32", ov.convert_model(str(export_onnx)),
               f"plain export in OpenVINO, default precision and hint, {shape_note}")]
    if calibration is not None and len(calibration):
        import nncf

        dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
        models.append(("peer-openvino-nncf-int8", "openvino-int8", nncf.quantize(ov.convert_model(str(export_onnx)),
                                                                                 dataset),
                       f"plain export, nncf.quantize defaults on the same calibration set, OpenVINO defaults, "
                       f"{shape_note}"))
    found = []
    for name, target, model, description in models:
        folder = out_dir / name
        folder.mkdir(parents=True)
        ov.save_model(model, str(folder / MODEL_FILE), compress_to_fp16=False)
        found.append(Peer(name, target, folder, dict(latency), dict(throughput), description))
    return found


def recorded_metadata(model_file: Path) -> dict[str, str]:
    """The ONNX metadata_props an IR kept from its ONNX (`convert_model` puts them in rt_info["framework"])."""
    import openvino as ov

    try:
        model = ov.Core().read_model(str(model_file))
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or ["unknown error"])[0]
        raise InputError(f"{model_file} is not a readable OpenVINO IR: {reason}") from None
    recorded = model.get_rt_info([METADATA_KEY]).astype(dict) if model.has_rt_info([METADATA_KEY]) else {}
    props: dict[str, str] = {}
    for name, value in recorded.items():
        try:
            props[name] = value.astype(str)
        except (RuntimeError, TypeError):  # another converter's non-text entry: not ours
            continue
    return props


def sdk_tensor_names(artifact_dir: Path) -> tuple[str, dict[str, str]]:
    """The ONNX's own tensor names: MMDeploy's SDK needs no input or output map."""
    return INPUT_NAME, {}


def compile_properties(runtime: Mapping, hint: str | None) -> dict[str, object]:
    """CPU plugin properties for `runtime`; `hint` None leaves the precision to OpenVINO."""
    properties: dict[str, object] = {}
    if hint is not None:
        properties["INFERENCE_PRECISION_HINT"] = hint
    mode = runtime.get("performance_hint")
    if mode:
        if mode not in ("LATENCY", "THROUGHPUT"):
            raise ConfigError(f"openvino performance_hint={mode!r}; choose LATENCY or THROUGHPUT")
        properties["PERFORMANCE_HINT"] = mode
    for key, name in (("inference_num_threads", "INFERENCE_NUM_THREADS"), ("num_streams", "NUM_STREAMS"),
                      ("enable_cpu_pinning", "ENABLE_CPU_PINNING")):
        if runtime.get(key) is not None:
            properties[name] = runtime[key]
    return properties


class Runner:
    """A compiled model with one infer request (latency) or an AsyncInferQueue (throughput)."""

    def __init__(self, artifact_dir: Path, target: Target, settings: OpenVINOConfig, runtime: Mapping | None = None,
                 mode: str = "latency") -> None:
        import openvino as ov

        runtime = resolve_runtime(artifact_dir, mode, runtime, default_runtime(settings, mode), RUNTIME_KEYS,
                                  "openvino")
        if "inference_precision_hint" in runtime:
            hint = runtime["inference_precision_hint"]
        else:
            hint = settings.inference_precision_hint or precision_hint(target.precision, settings.device,
                                                                       settings.int8_float_part)
        if hint is not None and hint not in _RUNTIME_NAMES:
            raise ConfigError(f"backends.openvino.inference_precision_hint={hint!r}; choose f32, f16 or bf16, "
                              "or leave it empty to follow the target")
        core = ov.Core()
        path = Path(artifact_dir) / MODEL_FILE
        model = core.read_model(str(path))
        if runtime.get("static_batch"):
            model.reshape({port.any_name: [int(runtime["static_batch"]), *list(port.get_partial_shape())[1:]]
                           for port in model.inputs})
        self.compiled = core.compile_model(model, settings.device, compile_properties(runtime, hint))
        self.request = self.compiled.create_infer_request()
        self.queue = None
        if mode == "throughput":
            requests = int(runtime.get("requests", 0)) or self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
            self.queue = ov.AsyncInferQueue(self.compiled, requests)
        self.inputs = {port.any_name: [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
                       for port in self.compiled.inputs}
        self.output_names = [port.any_name for port in self.compiled.outputs]
        batch = next(iter(self.inputs.values()))[0]
        self.fixed_batch = batch if batch > 0 else None  # in the file or by the `static_batch` reshape
        executed = self.execution_precisions()
        self.runtime = dict(runtime)
        self.settings = {
            "device": settings.device,
            "mode": mode,
            "runtime": dict(runtime),
            "inference_precision_hint": self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "inference_num_threads": self.compiled.get_property("INFERENCE_NUM_THREADS"),
            "num_streams": int(self.compiled.get_property("NUM_STREAMS")),
            "performance_hint": str(self.compiled.get_property("PERFORMANCE_HINT")).split(".")[-1],
            "static_batch": self.fixed_batch,
            "execution_precision": executed,
        }

    def execution_precisions(self) -> dict[str, int]:
        """{precision: number of operations} of the compiled model's runtime graph, each counted in the
        precision the CPU plugin says it runs in (its rt_info `runtimePrecision`); constants, inputs and
        outputs execute nothing and are left out. A layer that reads f16 weights under f32 compute (a CPU
        without f16 arithmetic) is one the plugin reports as f16; every other layer is then f32."""
        counts: Counter[str] = Counter()
        for op in self.compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if str(info["layerType"].astype(str)) in _NOT_EXECUTED:
                continue
            name = _RUNTIME_NAMES.get(str(info["runtimePrecision"].astype(str)))
            if name:
                counts[name] += 1
        return dict(sorted(counts.items()))

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer(feeds)
        return {name: np.asarray(results[name], dtype=np.float32) for name in self.output_names}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(feeds, {name: [-1, *shape[1:]] for name, shape in self.inputs.items()})
        total = len(next(iter(feeds.values())))
        if self.queue is None or total == 1 or (self.fixed_batch and total % self.fixed_batch):
            # One request, in chunks of a fixed batch (a short last one padded: pipeline/core/onnx_io.py).
            return run_in_chunks(self._infer, dict(feeds), self.fixed_batch)
        # Throughput: one request per `batch` images (static) or per share of the queue (dynamic), in flight together.
        step = self.fixed_batch or -(-total // len(self.queue))
        parts: list[dict[str, np.ndarray]] = [{} for _ in range(0, total, step)]

        def done(request, index: int) -> None:
            parts[index] = {name: np.array(request.get_tensor(name).data, dtype=np.float32)
                            for name in self.output_names}

        self.queue.set_callback(done)
        for index, start in enumerate(range(0, total, step)):
            self.queue.start_async({name: array[start:start + step] for name, array in feeds.items()}, index)
        self.queue.wait_all()
        return {name: np.concatenate([part[name] for part in parts]) for name in self.output_names}

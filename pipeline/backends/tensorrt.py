"""TensorRT backend (optional extra `tensorrt`; NVIDIA GPU required).

Artifact: `model.engine` (serialized engine), `timing.cache` (the builder's timing cache, kept so a
rebuild on the same hardware is fast) and `engine.json` (hardware fingerprint, profile shapes).
Precisions: fp16 and int8, built as *strongly typed* networks: TensorRT 10 deprecated and
TensorRT 11 removed the builder precision flags, so precision comes from the ONNX graph itself:
an FP16 graph (pipeline/graph/fp16.py, the overflow-prone ops kept in float32) for fp16, the shared Q/DQ
graph (pipeline/graph/quantize.py) for int8. Optimization profile: min/opt/max batch from
`backends.tensorrt`. Uses only Python APIs present in both TensorRT 10 and 11 (`tensorrt.Builder`,
`OnnxParser`, `build_serialized_network`, `IExecutionContext.execute_async_v3`, the engine inspector;
`NetworkDefinitionCreationFlag.STRONGLY_TYPED` where it exists, see `network_flags`):
tests/backends/test_backend_tensorrt.py scans this file for the APIs TensorRT 11 (and 10) removed.
`engine_graph` is the ONNX each engine is built from; pipeline/check/preview.py runs it on CPU in
onnxruntime as a preview. Device memory comes from torch's CUDA allocator. Engines are
built with `ProfilingVerbosity.DETAILED`, so that the engine inspector reports each layer's output
type, from which the runner counts the precision the engine executes (`layer_precisions`).

Settings: `backends.tensorrt` (TensorRTConfig). No runtime settings to tune (the engine fixes its tactics
at build time) and no peer (a user without this pipeline would start from onnxruntime's or OpenVINO's).

TensorRT installs only from NVIDIA's package index, which the development machines here cannot
reach, so this module has not been run here: the plan leaves TensorRT jobs out on hosts without
an NVIDIA GPU, and CI's GPU workflow is where it runs (`pytest -m gpu`: the engine contract tests
in tests/backends/test_backend_tensorrt.py, then the pipeline's TensorRT stages).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from pipeline.backends import BACKENDS, Target
from pipeline.backends.common import check_feeds
from pipeline.backends.interface import ArtifactFormat, Peer, SelfCalibration
from pipeline.config import TensorRTConfig
from pipeline.core.errors import ConfigError, InputError, RuntimeMissingError
from pipeline.core.hardware import gpu_fingerprint, nvidia_gpu_present
from pipeline.core.onnx_io import INPUT_NAME, run_in_chunks
from pipeline.graph.fp16 import convert_fp16
from pipeline.graph.quantize import float_nodes

PRECISIONS = BACKENDS["tensorrt"].precisions
SETTINGS = TensorRTConfig
ENGINE_FILE, CACHE_FILE, INFO_FILE = "model.engine", "timing.cache", "engine.json"
# The runner reads engine.json too (fingerprint, profile), which also records the precision built for.
FILES = ArtifactFormat(ENGINE_FILE, companions=(INFO_FILE,), precision_record=(INFO_FILE, "precision"))
# True: strongly typed: the precision comes from the Q/DQ graph (declared in the registry entry)
INT8_FROM_QDQ = BACKENDS["tensorrt"].int8_from_qdq
BOUND_TO_GPU = True  # an engine runs only on the GPU, driver and TensorRT it was built with


def unavailable_reason(target: Target) -> str:
    """'' where an NVIDIA GPU is present, else why TensorRT's jobs are left out of the plan."""
    if not nvidia_gpu_present():
        return "TensorRT needs an NVIDIA GPU and this host has none (nvidia-smi lists no GPU)"
    return ""


def engine_graph(onnx_path: Path, target: Target, settings: TensorRTConfig) -> onnx.ModelProto:
    """The exact ONNX graph `build` hands TensorRT's parser for `target` (a strongly typed network takes
    every tensor's type from it).

    `onnx_path`: the simplified float32 ONNX (fp16) or the quantize stage's Q/DQ ONNX (int8).
    fp16: the graph converted by pipeline/graph/fp16.py: float tensors float16, except the outputs of
    `settings.fp16_keep_float_ops` / `fp16_keep_float_nodes` (and the Casts around them); graph input
    `input` [N,3,H,W] and outputs `simcc_x`/`simcc_y` stay float32, as the Runner feeds and reads them.
    int8: the Q/DQ graph unchanged (signed, symmetric int8; TensorRT's explicit quantization).
    It is plain ONNX: pipeline/check/preview.py runs it in onnxruntime on CPU.
    Raises ConfigError for an int8 target given a graph without QuantizeLinear nodes.
    """
    model = onnx.load(str(onnx_path))
    if target.precision == "fp16":
        return convert_fp16(model, list(settings.fp16_keep_float_ops),
                            float_nodes(model, list(settings.fp16_keep_float_nodes)))
    if not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        raise ConfigError(f"{target.name} needs the Q/DQ model from the quantize stage, got {onnx_path}")
    return model


def network_flags(trt) -> int:
    """`create_network` flags of a strongly typed network, for TensorRT 10 and 11 (`trt`: the tensorrt module).

    TensorRT 10 builds strongly typed only with NetworkDefinitionCreationFlag.STRONGLY_TYPED; TensorRT 11
    deprecated the flag and ignores it (every network is strongly typed: "Strongly typed networks are now
    the default", TensorRT 11.0.0 release notes), and a release without it gets 0, its default.
    """
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if flag is not None else 0


def _input_shape(model_bytes: bytes) -> tuple[int | None, int, int]:
    """(fixed batch or None, H, W) of the graph's image input."""
    dims = onnx.ModelProto.FromString(model_bytes).graph.input[0].type.tensor_type.shape.dim
    batch = int(dims[0].dim_value) if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return batch, int(dims[2].dim_value), int(dims[3].dim_value)


def build(onnx_path: Path, target: Target, settings: TensorRTConfig, out_dir: Path,
          calibration: SelfCalibration | None = None) -> Path:
    """A strongly typed engine of the fp16 or Q/DQ graph, its timing cache and engine.json; `calibration` is unused."""
    import tensorrt as trt

    if target.precision not in PRECISIONS:
        raise ConfigError(f"targets: tensorrt builds {', '.join(PRECISIONS)}, not {target.precision!r}")
    if not settings.min_batch <= settings.opt_batch <= settings.max_batch:
        raise ConfigError("backends.tensorrt needs min_batch <= opt_batch <= max_batch")
    graph = engine_graph(onnx_path, target, settings).SerializeToString()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(graph):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"{target.name}: TensorRT could not parse the ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_mib) << 20)
    # The engine inspector reports each layer's tensor formats and types only for engines built with
    # DETAILED verbosity (the default, LAYER_NAMES_ONLY, gives bare names): verify reads the executed
    # precision from them. TensorRT Python API, EngineInspector:
    # https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/EngineInspector.html
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    fixed, h, w = _input_shape(graph)
    # A fixed-batch graph admits only its own batch; the runner feeds it in chunks of that size.
    low, opt, high = (fixed, fixed, fixed) if fixed else (settings.min_batch, settings.opt_batch, settings.max_batch)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (low, 3, h, w), (opt, 3, h, w), (high, 3, h, w))
    config.add_optimization_profile(profile)
    previous = Path(settings.timing_cache) if settings.timing_cache else None
    cache = config.create_timing_cache(previous.read_bytes() if previous and previous.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ConfigError(f"{target.name}: TensorRT failed to build the engine (see the log above)")
    (out_dir / ENGINE_FILE).write_bytes(bytes(engine))
    (out_dir / CACHE_FILE).write_bytes(bytes(config.get_timing_cache().serialize()))
    info = {"fingerprint": gpu_fingerprint(), "tensorrt": trt.__version__, "strongly_typed": True,
            "profile": {"min": low, "opt": opt, "max": high},
            "precision": target.precision}
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir / ENGINE_FILE


def _precision_of(datatype: str) -> str | None:
    """Our precision name for an inspector type string: "Half", "Row major linear FP16 format", "Int8", ..."""
    text = datatype.lower()
    if "int8" in text:
        return "int8"
    if "bf16" in text or "bfloat16" in text:
        return "bf16"
    if "half" in text or "fp16" in text:
        return "fp16"
    if "float" in text or "fp32" in text:
        return "fp32"
    return None


def layer_precisions(engine_information: str) -> dict[str, int]:
    """Layers by the type of their outputs, from the engine inspector's JSON (LayerInformationFormat.JSON).

    A layer of a DETAILED engine is an object whose `Outputs` carry `Format/Datatype` (TensorRT 10) or
    `DataType` (TensorRT 11, which split that field). An engine built without DETAILED verbosity lists
    bare layer names, from which nothing can be measured: that raises InputError.
    """
    layers = json.loads(engine_information).get("Layers", [])
    if any(not isinstance(layer, dict) for layer in layers):
        raise InputError("the TensorRT engine lists layer names only (built without ProfilingVerbosity.DETAILED), "
                         "so the precision it executes cannot be read; rebuild it with this pipeline's build stage")
    counts: dict[str, int] = {}
    for layer in layers:
        for output in layer.get("Outputs", []):
            name = _precision_of(str(output.get("DataType") or output.get("Format/Datatype") or ""))
            if name:
                counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


RUNTIME_KEYS: tuple[str, ...] = ()  # the engine fixes its own tactics; no runtime settings to tune


def default_runtime(settings: TensorRTConfig, mode: str = "latency") -> dict:
    """Nothing: the engine fixes its own tactics."""
    return {}


def runtime_grid(mode: str, threads: list[int], static_batches: list[int]) -> list[dict]:
    """Nothing to tune (module docstring)."""
    return []


def peers(export_onnx: Path, calibration: np.ndarray | None, out_dir: Path, static_shape: bool) -> list[Peer]:
    """None (module docstring)."""
    return []


def recorded_metadata(model_file: Path) -> dict[str, str]:
    """Nothing: a serialized engine records no metadata (the artifact's artifact.json does)."""
    return {}


def sdk_tensor_names(artifact_dir: Path) -> tuple[str, dict[str, str]]:
    """The ONNX's own tensor names: MMDeploy's SDK needs no input or output map."""
    return INPUT_NAME, {}


class Runner:
    def __init__(self, artifact_dir: Path, target: Target, settings: TensorRTConfig, runtime=None,
                 mode: str = "latency") -> None:
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise RuntimeMissingError(f"{target.name} needs a CUDA GPU visible to torch; none is")
        info = json.loads((Path(artifact_dir) / INFO_FILE).read_text(encoding="utf-8"))
        if info["fingerprint"] != gpu_fingerprint():
            raise RuntimeMissingError(f"{target.name}: engine was built for {info['fingerprint']}, this host is "
                                      f"{gpu_fingerprint()}; rebuild it here (dvc repro)")
        self._torch = torch
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
            (Path(artifact_dir) / ENGINE_FILE).read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.inputs = {INPUT_NAME: list(self.engine.get_tensor_shape(INPUT_NAME))}
        self.settings = {"gpu": info["fingerprint"]["gpu"], "tensorrt": info["tensorrt"], "profile": info["profile"],
                         "execution_precision": self._layer_precisions()}

    def _layer_precisions(self) -> dict[str, int]:
        import tensorrt as trt

        inspector = self.engine.create_engine_inspector()
        return layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(feeds, self.inputs)
        profile = self.settings["profile"]
        total = len(feeds[INPUT_NAME])
        # The engine takes batches within its optimization profile: larger ones go in chunks of its maximum.
        chunk = profile["max"] if profile["min"] == profile["max"] or total > profile["max"] else None
        return run_in_chunks(self._run, dict(feeds), chunk)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        batch = torch.from_numpy(np.ascontiguousarray(feeds[INPUT_NAME])).cuda()
        self.context.set_input_shape(INPUT_NAME, tuple(batch.shape))
        self.context.set_tensor_address(INPUT_NAME, batch.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeMissingError("TensorRT execution failed")
        stream.synchronize()
        return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}

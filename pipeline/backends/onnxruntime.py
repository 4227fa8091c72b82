"""ONNX Runtime backend.

Artifact: `model.onnx`. Precisions:
- fp32: the simplified graph, unchanged;
- fp16: the graph converted to float16 (pipeline/graph/fp16.py), float32 I/O kept;
- int8: the shared Q/DQ graph from the `quantize` stage (pipeline/graph/quantize.py), its activations
  re-expressed exactly as uint8 (zero point 128), the form onnxruntime's x86 int8 kernels are fast at.
Runtime: `onnxruntime.InferenceSession`, CPU execution provider (tested with 1.32). The precision is
read from what the session executes, not from the file: `execution_precision` counts the nodes of one profiled
run (`SessionOptions.enable_profiling`) by the element type of the tensors each node reads. On x86 the CPU
provider has no float16 Conv or MatMul: it casts the fp16 graph's weights to float32 when the session is made
and runs them in float32, so onnxruntime-fp16 reports the few nodes that really run on float16 tensors
(rtmpose-t: 4 Shape/Split/Squeeze nodes) next to ~150 float32 ones, and its speed is float32's.
Settings: `backends.onnxruntime` (OnnxRuntimeConfig). Peer: the plain export in
`onnxruntime.InferenceSession(path)` with default SessionOptions (onnxruntime then uses one intra-op
thread per physical core and every graph optimization).

Runtime settings (pipeline/backends/runtime.py; a missing key leaves onnxruntime's own default, so `{}` is a
plain `InferenceSession(path)`):
- `intra_op_num_threads`, `inter_op_num_threads`: SessionOptions threads (0: onnxruntime's default);
- `graph_optimization_level`: `disable`, `basic`, `extended`, `layout` or `all` (onnxruntime's default);
- `allow_spinning`: session config `session.intra_op.allow_spinning` (worker threads spin between calls);
- `static_batch`: fixes the input's symbolic batch dimension at session creation
  (`add_free_dimension_override_by_name`), so shapes are static for the graph optimizer and kernels,
  without rewriting the file that consumers with batches still read; inputs of another batch are run
  in chunks of `static_batch` images, a short last chunk padded (pipeline/core/onnx_io.py `run_in_chunks`);
- `sessions`: throughput mode only: this many sessions, each fed its share of the images from its
  own thread (onnxruntime releases the GIL while it runs).
Tuned (`runtime_grid`): latency {threads} x {dynamic, static batch}; throughput one session with every
thread on the whole batch, or one single-thread static session per core.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx

from pipeline.backends import BACKENDS, Target
from pipeline.backends.common import check_feeds
from pipeline.backends.interface import ArtifactFormat, Peer, SelfCalibration
from pipeline.backends.runtime import check_mode, resolve_runtime
from pipeline.config import OnnxRuntimeConfig
from pipeline.core.errors import ConfigError, RuntimeMissingError
from pipeline.core.onnx_io import INPUT_NAME, get_metadata, load_onnx, run_in_chunks
from pipeline.graph.fp16 import convert_fp16
from pipeline.graph.quantize import activations_to_uint8, float_nodes

PRECISIONS = BACKENDS["onnxruntime"].precisions
SETTINGS = OnnxRuntimeConfig
MODEL_FILE = "model.onnx"
FILES = ArtifactFormat(MODEL_FILE)
# True: the Q/DQ graph, its activations re-expressed as uint8 (declared in the registry entry)
INT8_FROM_QDQ = BACKENDS["onnxruntime"].int8_from_qdq
BOUND_TO_GPU = False
RUNTIME_KEYS = ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level", "allow_spinning",
                "static_batch", "sessions")
OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "layout": "ORT_ENABLE_LAYOUT", "all": "ORT_ENABLE_ALL"}
# Element types in onnxruntime's profile (`input_type_shape`), lowest precision first: a node reading several
# (QLinearConv: uint8 activations, float scales) runs in the lowest.
_PROFILE_TYPES = {"int8": "int8", "uint8": "int8", "float16": "fp16", "bfloat16": "bf16", "float": "fp32"}
# A Cast reads one precision and writes another: it computes in neither (the fp16 converter puts one at each
# boundary of a node kept in float).
_NOT_COUNTED = frozenset({"Cast"})


def unavailable_reason(target: Target) -> str:
    """'' : every onnxruntime target runs on any x86 CPU."""
    return ""


def build(onnx_path: Path, target: Target, settings: OnnxRuntimeConfig, out_dir: Path,
          calibration: SelfCalibration | None = None) -> Path:
    """The artifact's model.onnx from the simplified (fp32, fp16) or Q/DQ (int8) ONNX; `calibration` is unused."""
    if target.precision not in PRECISIONS:
        raise ConfigError(f"targets: onnxruntime cannot build precision {target.precision!r}")
    out = out_dir / MODEL_FILE
    if target.precision == "fp16":
        model = onnx.load(str(onnx_path))
        converted = convert_fp16(model, list(settings.fp16_keep_float_ops),
                                 float_nodes(model, list(settings.fp16_keep_float_nodes)))
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


def node_precision(input_types: list[str]) -> str | None:
    """The precision a profiled node runs in: the lowest of the element types it reads (onnxruntime's names,
    e.g. ["float16", "int64"] -> "fp16"); None for a node that reads no float or 8-bit tensor (shape math)."""
    names = [_PROFILE_TYPES[t] for t in _PROFILE_TYPES if t in input_types]
    return names[0] if names else None


def profiled_precisions(profile: list[dict]) -> dict[str, int]:
    """{precision: nodes} from an onnxruntime profile (the JSON list `end_profiling` writes): every node event
    (`cat` Node, one per kernel run) counted by `node_precision` of its `args.input_type_shape`, Casts left out."""
    counts: dict[str, int] = {}
    for event in profile:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        if args.get("op_name") in _NOT_COUNTED:
            continue
        name = node_precision([dtype for shape in args.get("input_type_shape", []) for dtype in shape])
        if name:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


@functools.lru_cache(maxsize=32)
def _executed_precisions(path: str, stamp: tuple[int, int], runtime_items: tuple) -> dict[str, int]:
    import onnxruntime as ort

    runtime = dict(runtime_items)
    options = session_options(runtime, batch_dim_param(Path(path)))
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in i.shape], np.float32)
                 for i in session.get_inputs()}
        session.run(None, feeds)
        profile = json.loads(Path(session.end_profiling()).read_text())
    return profiled_precisions(profile)


def executed_precisions(path: Path, runtime: Mapping) -> dict[str, int]:
    """{precision: nodes} that a session of `path` with `runtime`'s settings executes (`profiled_precisions`
    of one profiled run on zeros, batch 1 or the fixed batch); measured once per file and settings."""
    stat = Path(path).stat()
    return dict(_executed_precisions(str(path), (stat.st_mtime_ns, stat.st_size),
                                     tuple(sorted((k, v) for k, v in runtime.items() if k != "sessions"))))


def default_runtime(settings: OnnxRuntimeConfig, mode: str = "latency") -> dict:
    """The settings of an artifact that records none: `backends.onnxruntime`, one session."""
    check_mode(mode)
    return {"intra_op_num_threads": settings.num_threads, "inter_op_num_threads": 1}


def runtime_grid(mode: str, threads: list[int], static_batches: list[int]) -> list[dict]:
    """The settings `tune` tries, plainest first (module docstring)."""
    if mode == "latency":
        return [{"intra_op_num_threads": t, "inter_op_num_threads": 1, "static_batch": s}
                for s in static_batches for t in threads]
    cores = max(threads)
    grid = [{"intra_op_num_threads": cores, "inter_op_num_threads": 1, "sessions": 1}]
    if cores > 1:
        grid.append({"intra_op_num_threads": 1, "inter_op_num_threads": 1, "sessions": cores, "static_batch": 1})
    return grid


def peers(export_onnx: Path, calibration: np.ndarray | None, out_dir: Path, static_shape: bool) -> list[Peer]:
    """The plain export in a default InferenceSession (module docstring), for every batch: one session fed
    the whole batch is what a user who wants throughput gets. `calibration` and `static_shape` are unused."""
    folder = out_dir / "peer-onnxruntime"
    folder.mkdir(parents=True)
    shutil.copyfile(export_onnx, folder / MODEL_FILE)
    return [Peer("peer-onnxruntime", "onnxruntime-fp32", folder, {}, {},
                 "plain export in onnxruntime, default SessionOptions")]


def recorded_metadata(model_file: Path) -> dict[str, str]:
    """The ONNX's metadata_props (the export records the model description there)."""
    return get_metadata(load_onnx(model_file))


def sdk_tensor_names(artifact_dir: Path) -> tuple[str, dict[str, str]]:
    """The ONNX's own tensor names: MMDeploy's SDK needs no input or output map."""
    return INPUT_NAME, {}


def session_options(runtime: Mapping, batch_dim: str | None):
    """SessionOptions for `runtime`; `batch_dim` is the input's symbolic batch dimension, if any."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if runtime.get("intra_op_num_threads"):
        options.intra_op_num_threads = int(runtime["intra_op_num_threads"])
    if runtime.get("inter_op_num_threads"):
        options.inter_op_num_threads = int(runtime["inter_op_num_threads"])
    level = runtime.get("graph_optimization_level")
    if level is not None:
        if level not in OPTIMIZATION_LEVELS:
            raise ConfigError(f"onnxruntime graph_optimization_level={level!r}; choose {', '.join(OPTIMIZATION_LEVELS)}")
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[level])
    if "allow_spinning" in runtime:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if runtime["allow_spinning"] else "0")
    if runtime.get("static_batch") and batch_dim:
        options.add_free_dimension_override_by_name(batch_dim, int(runtime["static_batch"]))
    return options


def batch_dim_param(path: Path) -> str | None:
    """The name of the input's symbolic batch dimension (the export calls it `batch`), or None if static."""
    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param if dim.HasField("dim_param") else None


class Runner:
    """A session (latency) or several sessions fed in parallel (throughput) for one artifact."""

    def __init__(self, artifact_dir: Path, target: Target, settings: OnnxRuntimeConfig, runtime: Mapping | None = None,
                 mode: str = "latency") -> None:
        import onnxruntime as ort

        runtime = resolve_runtime(artifact_dir, mode, runtime, default_runtime(settings, mode), RUNTIME_KEYS,
                                  "onnxruntime")
        path = Path(artifact_dir) / MODEL_FILE
        batch_dim = batch_dim_param(path)
        options = session_options(runtime, batch_dim)
        count = int(runtime.get("sessions", 1)) if mode == "throughput" else 1
        if count < 1:
            raise ConfigError(f"onnxruntime sessions={count}; set it to 1 or more")
        self.sessions = [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                         for _ in range(count)]
        self.session = self.sessions[0]
        self.pool = ThreadPoolExecutor(count) if count > 1 else None
        if self.session.get_providers()[0] != "CPUExecutionProvider":
            raise RuntimeMissingError(f"onnxruntime chose {self.session.get_providers()[0]}, not the CPU provider")
        self.inputs = {i.name: (i.type, i.shape) for i in self.session.get_inputs()}
        # A fixed batch, in the file or by the `static_batch` override; None when the session takes any batch.
        batch = next(iter(self.inputs.values()))[1][0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        for name, (dtype, _) in self.inputs.items():
            if dtype != "tensor(float)":
                raise ConfigError(f"{target.name}: input {name!r} is {dtype}, not float32")
        self.runtime = dict(runtime)
        self.settings = {"provider": "CPUExecutionProvider", "mode": mode, "runtime": dict(runtime),
                         "intra_op_num_threads": options.intra_op_num_threads, "static_batch": self.fixed_batch,
                         "execution_precision": executed_precisions(path, runtime)}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(feeds, {name: [-1, *shape[1:]] for name, (_, shape) in self.inputs.items()})
        total = len(next(iter(feeds.values())))
        if self.pool is None or total == 1:
            return self._run(self.session, feeds)
        # Throughput: split the images into one contiguous share per session, run the shares in parallel.
        bounds = np.linspace(0, total, len(self.sessions) + 1).astype(int)
        shares = [(s, {n: a[lo:hi] for n, a in feeds.items()})
                  for s, lo, hi in zip(self.sessions, bounds[:-1], bounds[1:]) if hi > lo]
        parts = list(self.pool.map(lambda share: self._run(*share), shares))
        return {name: np.concatenate([part[name] for part in parts]) for name in self.output_names}

    def _run(self, session, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One session on `feeds`, in chunks of its fixed batch where it has one (pipeline/core/onnx_io.py)."""
        def call(part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs = session.run(self.output_names, part)
            return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self.output_names, outputs)}

        return run_in_chunks(call, dict(feeds), self.fixed_batch)

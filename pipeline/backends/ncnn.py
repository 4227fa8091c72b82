"""ncnn backend.

Artifact: `model.ncnn.param` + `model.ncnn.bin` (ncnn graph and weights, converted from the simplified
ONNX by pnnx's `pnnx` executable with a fixed input shape [1,3,H,W]) and `io.json`, which maps our
tensor names to pnnx's blob names (`input` -> `in0`, `simcc_x` -> `out0`, `simcc_y` -> `out1`, in the
ONNX output order). ncnn runs one image at a time; the runner loops over the batch.
Precisions: fp32 (fp32 weights, every fp16/bf16/int8 option off), fp16 (fp16 weights in the .bin,
fp16 storage at run time, plus fp16 arithmetic where the CPU has it, i.e. ARMv8.2 asimdhp) and int8.
int8 is calibrated and written by the project (pipeline/backends/ncnn_int8.py, ncnn's int8 format: neither
the `ncnn` nor the `pnnx` wheel ships ncnn2table/ncnn2int8): the fp32 model runs the calibration crops in
`ncnn.Extractor` to give each Convolution/ConvolutionDepthWise/InnerProduct's input scale
(`backends.ncnn.int8_calibration`: kl or maxabs), weights get per-channel scales, and the layers of
`quantize.keep_float` (ONNX node-name prefixes; the GAU head by default) stay fp32. pnnx renames every layer,
so a layer is matched to its ONNX node by its weights' bytes, which pnnx copies. The artifact runs with
`use_int8_inference` (ncnn's int8 kernels: AVX2/AVX-VNNI/AVX-512 VNNI on x86, dot-product on ARM).
Upstream: `ncnn.Net`/`ncnn.Extractor` (PyPI `ncnn`, tested 1.0.20261020) and the `pnnx` executable
(PyPI `pnnx`, tested 20261020). The executable is called directly: `pnnx.convert()` ignores the exit
status and imports the Python file pnnx generates. pnnx writes the same bytes for the same ONNX.

Opsets: pnnx reads the Reduce operators' axes only as the attribute of opsets up to 17; from opset 18 they come
as an input, which pnnx ignores, so RTMPose's ScaleNorm (ReduceL2) reduces over every axis and the outputs are
off by up to 1e8. A graph above `MAX_OPSET` is lowered to it before pnnx (pipeline/graph/opset.py: constant axes
back into the attribute, exactly; an operator with no opset-17 form is refused, naming it).

Precision is set, not assumed. ncnn's defaults turn on fp16 storage/arithmetic (and pnnx's default
writes fp16 weights), so both are set from the target. The runner reports, per layer, the precision its
activations are stored in, derived like ncnn's `Net::convert_layout`: fp16 only where fp16 storage is
on, the layer supports it and the CPU is one where ncnn casts to fp16 (ARM asimdhp/vfpv4); bf16 where
bf16 storage is on and the layer supports it; fp32 otherwise. On x86 ncnn computes every layer of the
fp16 target in fp32 (only the weights are fp16-rounded), so `execution_precision` then reports the
fp16 weight blobs read from the .bin, as the openvino backend reports f16 weights under f32 compute.

fp16 overflow guard: `backends.ncnn.fp16_keep_float_layers` lists ncnn layer types or layer names of
the converted graph (e.g. `MatMul` for the GAU's q@k and kernel@v) that the fp16 build marks with the
feature mask `31=3`: no fp16 storage, no fp16 arithmetic (https://github.com/Tencent/ncnn/wiki/layer-feat-mask).
ScaleNorm's ReduceL2 becomes ncnn's generic `Reduction`, which has no fp16 path on ARM or x86, so ncnn
already casts its input back to fp32 there. Masks are honoured in the per-layer count.

Runtime settings (pipeline/backends/runtime.py): `num_threads` (ncnn's `opt.num_threads`). ncnn has no
streams or asynchronous requests, so throughput mode runs the same loop over the images. Tuned
(`runtime_grid`): latency {threads}; throughput every core. Settings: `backends.ncnn` (NcnnConfig).
No peer: ncnn runs no ONNX file, so a user without this pipeline would have none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.backends import BACKENDS, Target, ncnn_int8
from pipeline.backends.common import check_feeds
from pipeline.backends.interface import ArtifactFormat, Peer, SelfCalibration
from pipeline.backends.runtime import check_mode, resolve_runtime
from pipeline.config import NcnnConfig
from pipeline.core.errors import ConfigError, InputError, PipelineError, RuntimeMissingError
from pipeline.core.io import write_json
from pipeline.core.onnx_io import INPUT_NAME, OUTPUT_NAMES, load_onnx, save_onnx
from pipeline.graph.opset import lower_opset, model_opset

PRECISIONS = BACKENDS["ncnn"].precisions
SETTINGS = NcnnConfig
TOOLS = ("ncnn", "pnnx")  # distributions that make and run the artifact, for its recorded tool versions
PARAM_FILE = "model.ncnn.param"
BIN_FILE = "model.ncnn.bin"
IO_FILE = "io.json"
# io.json also records the precision of the weights; pnnx converts for one image [1,3,H,W].
FILES = ArtifactFormat(PARAM_FILE, weights=BIN_FILE, companions=(IO_FILE,), precision_record=(IO_FILE, "weights"),
                       one_image=True)
INT8_FROM_QDQ = BACKENDS["ncnn"].int8_from_qdq  # False: int8 calibrates itself (SelfCalibration)
BOUND_TO_GPU = False
FP16_WEIGHT_TAG = 0x01306B47  # ncnn ModelBin: the blob that follows holds fp16 values
RUNTIME_KEYS = ("num_threads",)
FEATMASK_KEY = "31"  # per-layer feature mask: bit 0 no fp16 arithmetic, bit 1 no fp16 storage, bit 2 no bf16
KEEP_FLOAT_MASK = 0b11
MAX_OPSET = 17  # the newest opset pnnx converts right (module docstring)


def unavailable_reason(target: Target) -> str:
    """'' : every ncnn target runs on any x86 CPU."""
    return ""


def _onnx_io(onnx_path: Path) -> tuple[str, list[int], list[tuple[str, list[int]]]]:
    """The ONNX's single input (name, [N,3,H,W]) and its outputs (name, dims) in graph order."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]

    def dims(value) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]

    if len(inputs) != 1 or len(dims(inputs[0])) != 4 or any(d <= 0 for d in dims(inputs[0])[1:]):
        raise InputError(f"{onnx_path}: ncnn needs one NCHW input with static C, H and W, "
                         f"got {[(v.name, dims(v)) for v in inputs]}")
    return inputs[0].name, dims(inputs[0]), [(value.name, dims(value)) for value in graph.output]


def _run_pnnx(onnx_path: Path, input_shape: list[int], fp16: bool, work_dir: Path) -> None:
    try:
        import pnnx
    except ImportError:
        raise RuntimeMissingError("the ncnn backend converts with the Python package 'pnnx', which is not "
                                  "installed; run `pip install \".[ncnn]\"`") from None
    model = load_onnx(onnx_path)
    if model_opset(model) > MAX_OPSET:
        save_onnx(lower_opset(model, MAX_OPSET, f"ncnn (pnnx reads opsets up to {MAX_OPSET}): {onnx_path}"),
                  work_dir / "model.onnx")
    else:
        shutil.copyfile(onnx_path, work_dir / "model.onnx")
    shape = ",".join(str(d) for d in input_shape)
    command = [pnnx.EXEC_PATH, "model.onnx", f"inputshape=[{shape}]f32", f"fp16={int(fp16)}", "device=cpu",
               f"ncnnparam={PARAM_FILE}", f"ncnnbin={BIN_FILE}"]
    result = subprocess.run(command, cwd=work_dir, capture_output=True, text=True)
    if result.returncode != 0 or not (work_dir / PARAM_FILE).is_file() or not (work_dir / BIN_FILE).is_file():
        log = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise PipelineError(f"pnnx could not convert {onnx_path} (exit {result.returncode}): {' | '.join(log)}")


def _load_net(param: Path, weights: Path, precision: str, num_threads: int):
    """An ncnn.Net with every precision option set from the target, before the model is loaded."""
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    opt.num_threads = num_threads
    opt.use_vulkan_compute = False
    fp16, int8 = precision == "fp16", precision == "int8"
    opt.use_fp16_storage = fp16
    opt.use_fp16_packed = fp16
    opt.use_fp16_arithmetic = fp16 and bool(ncnn.cpu_support_arm_asimdhp())
    opt.use_bf16_storage = False
    opt.use_bf16_packed = False
    # int8: ncnn's int8 kernels for the layers the .param marks (int8_scale_term); the others compute fp32.
    opt.use_int8_inference = int8
    opt.use_int8_storage = int8
    opt.use_int8_packed = int8
    opt.use_int8_arithmetic = False  # int8 activations between layers: not written by this project
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise InputError(f"ncnn could not load {param} + {weights}; rebuild the artifact")
    return net


def build(onnx_path: Path, target: Target, settings: NcnnConfig, out_dir: Path,
          calibration: SelfCalibration | None = None) -> Path:
    """ONNX -> ncnn param/bin with pnnx (in a scratch directory), plus io.json; int8 is then calibrated on
    `calibration` and rewritten (module docstring). Raises ConfigError for a precision ncnn does not build or an
    int8 target without calibration, PipelineError when pnnx or the int8 writer fails."""
    if target.precision not in PRECISIONS:
        raise ConfigError(f"targets: ncnn cannot build precision {target.precision!r}; choose one of "
                          f"{', '.join(PRECISIONS)}")
    if target.precision == "int8" and calibration is None:
        raise ConfigError("ncnn-int8 needs calibration data (calibration stage); none was given")
    input_name, input_dims, outputs = _onnx_io(Path(onnx_path))
    if input_dims[0] > 1:
        raise ConfigError(f"{target.name}: ncnn runs one image at a time, but {onnx_path} has a static batch of "
                          f"{input_dims[0]}; set export.dynamic_batch=true or export.static_batch=1")
    with tempfile.TemporaryDirectory(prefix="pnnx-") as scratch:
        work_dir = Path(scratch)
        _run_pnnx(Path(onnx_path), [1, *input_dims[1:]], target.precision == "fp16", work_dir)
        shutil.copyfile(work_dir / PARAM_FILE, out_dir / PARAM_FILE)
        shutil.copyfile(work_dir / BIN_FILE, out_dir / BIN_FILE)

    if target.precision == "fp16":
        keep_layers_float(out_dir / PARAM_FILE, list(settings.fp16_keep_float_layers))
    quantized = {}
    if target.precision == "int8":
        quantized = _write_int8(Path(onnx_path), out_dir, calibration, settings.int8_calibration)
    found = fp16_weight_blobs(out_dir / BIN_FILE) if target.precision != "int8" else 0
    if (found > 0) != (target.precision == "fp16"):
        raise PipelineError(f"pnnx wrote {found} fp16 weight blobs for {target.name}; its fp16 option was not applied")
    # pnnx names blobs in0.. and out0.. in the ONNX's input and output order; check that, then the shapes.
    blobs = {name: f"out{i}" for i, (name, _) in enumerate(outputs)}
    net = _load_net(out_dir / PARAM_FILE, out_dir / BIN_FILE, target.precision, 1)
    if list(net.input_names()) != ["in0"] or sorted(net.output_names()) != sorted(blobs.values()):
        raise PipelineError(f"pnnx named the blobs {list(net.input_names())} -> {list(net.output_names())}, "
                            f"not in0 -> {sorted(blobs.values())}; this pnnx version is untested")
    results = _forward(net, {"in0": np.zeros(input_dims[1:], np.float32)}, blobs.values())
    for name, dims in outputs:
        if list(results[blobs[name]].shape) != dims[1:]:
            raise PipelineError(f"ncnn output {blobs[name]} has shape {list(results[blobs[name]].shape)}, "
                                f"but ONNX output {name!r} is {dims}")
    io = {"inputs": {input_name: {"blob": "in0", "shape": [-1, *input_dims[1:]]}},
          "outputs": {name: {"blob": blobs[name], "shape": [-1, *dims[1:]]} for name, dims in outputs},
          "weights": target.precision}
    if quantized:
        io["int8"] = quantized
    write_json(out_dir / IO_FILE, io)
    return out_dir / PARAM_FILE


def _onnx_weight_owners(onnx_path: Path) -> dict[bytes, str]:
    """The float32 bytes of every Conv/Gemm/MatMul weight initializer (and its transpose, for 2-D ones) -> the
    ONNX node that owns it: pnnx copies these bytes into the layers it makes, under names of its own."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {init.name: init for init in graph.initializer}
    owners: dict[bytes, str] = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in initializers:
            array = numpy_helper.to_array(initializers[node.input[1]]).astype("<f4")
            owners.setdefault(array.tobytes(), node.name)
            if array.ndim == 2:
                owners.setdefault(np.ascontiguousarray(array.T).tobytes(), node.name)
    return owners


def _write_int8(onnx_path: Path, out_dir: Path, calibration: SelfCalibration, method: str) -> dict:
    """Rewrite the fp32 .param/.bin in `out_dir` to int8 (pipeline/backends/ncnn_int8.py): every quantizable layer
    except those of `calibration.keep_float`. Returns what io.json records: layers, method, samples."""
    param, weights = out_dir / PARAM_FILE, out_dir / BIN_FILE
    layers, blob_count = ncnn_int8.read_param(param)
    data = ncnn_int8.locate_blobs(layers, weights)
    owners = _onnx_weight_owners(onnx_path)
    chosen, kept, unmatched = [], [], []
    for layer in layers:
        if layer.type not in ncnn_int8.QUANTIZABLE or not layer.blobs:
            continue
        node = owners.get(ncnn_int8.fp32_weights(data, layer.blobs[0]).tobytes())
        if node is None:
            unmatched.append(layer.name)
        elif any(node.startswith(prefix) for prefix in calibration.keep_float):
            kept.append(layer.name)
        else:
            chosen.append(layer)
    if unmatched and calibration.keep_float:
        raise PipelineError(f"ncnn-int8: layers {unmatched} match no ONNX node's weights, so quantize.keep_float "
                            f"{list(calibration.keep_float)} cannot be applied to them; this pnnx changed the weights")
    if not chosen:
        raise PipelineError(f"ncnn-int8: quantize.keep_float {list(calibration.keep_float)} leaves no layer to "
                            "quantize")
    net = _load_net(param, weights, "fp32", 1)
    input_blob = next(iter(net.input_names()))

    def forward(image: np.ndarray, blobs) -> dict[str, np.ndarray]:
        return _forward(net, {input_blob: image}, blobs, intermediate=True)

    inputs = np.asarray(calibration.inputs, np.float32)
    scales = ncnn_int8.activation_scales(forward, inputs, sorted({layer.bottoms[0] for layer in chosen}), method)
    rewritten = ncnn_int8.quantize(layers, data, chosen, scales)
    ncnn_int8.write_param(param, layers, blob_count)
    weights.write_bytes(rewritten)
    return {"layers": len(chosen), "kept_float": kept, "calibration": method, "calibration_samples": len(inputs)}


def keep_layers_float(param: Path, keep: list[str]) -> None:
    """Give the layers named in `keep` (ncnn layer types or layer names) the feature mask that keeps them in
    fp32: no fp16 storage, no fp16 arithmetic. ncnn casts their inputs back to fp32 (Net::convert_layout)."""
    if not keep:
        return
    lines = param.read_text(encoding="utf-8").splitlines()
    matched: set[str] = set()
    for i, line in enumerate(lines[2:], start=2):
        fields = line.split()
        hits = {fields[0], fields[1]} & set(keep)
        if not hits:
            continue
        matched |= hits
        mask = KEEP_FLOAT_MASK
        for field in fields[4:]:
            if field.startswith(FEATMASK_KEY + "="):
                mask |= int(field.split("=", 1)[1])
        fields = [f for f in fields if not f.startswith(FEATMASK_KEY + "=")] + [f"{FEATMASK_KEY}={mask}"]
        lines[i] = " ".join(fields)
    unknown = sorted(set(keep) - matched)
    if unknown:
        types = sorted({line.split()[0] for line in lines[2:] if line.strip()})
        raise ConfigError(f"backends.ncnn.fp16_keep_float_layers: {unknown} match no layer type or name in the "
                          f"converted model; its layer types are {', '.join(types)}")
    param.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _forward(net, feeds: Mapping[str, np.ndarray], outputs, intermediate: bool = False) -> dict[str, np.ndarray]:
    """One image through an Extractor; blob name -> float32 array (fp16/bf16 blobs are converted back).
    `intermediate`: blobs inside the net are asked for, so the extractor keeps every blob it computed (ncnn's
    light mode frees a blob once its consumers ran)."""
    import ncnn

    extractor = net.create_extractor()
    extractor.set_light_mode(not intermediate)
    for blob, array in feeds.items():
        extractor.input(blob, ncnn.Mat(np.ascontiguousarray(array)))
    results = {}
    for blob in outputs:
        status, mat = extractor.extract(blob)
        if status != 0:
            raise PipelineError(f"ncnn failed to compute blob {blob!r} (status {status})")
        results[blob] = np.array(mat, dtype=np.float32)
    return results


def _featmasks(param: Path) -> dict[str, int]:
    """Layer name -> its `31=` feature mask, read from the .param text."""
    masks = {}
    for line in param.read_text(encoding="utf-8").splitlines()[2:]:
        fields = line.split()
        for field in fields[4:]:
            if field.startswith(FEATMASK_KEY + "="):
                masks[fields[1]] = int(field.split("=", 1)[1])
    return masks


def layer_precisions(net, featmasks: Mapping[str, int], int8_layers: Mapping[str, str] | None = None) -> dict[str, int]:
    """Layers by the precision ncnn computes them in: int8 for the layers the .param marks int8 (`int8_layers`,
    ncnn_int8.int8_layers) when `use_int8_inference` is on, else the precision ncnn stores their activations
    in, following Net::convert_layout."""
    int8_layers = int8_layers or {}
    import ncnn

    opt = net.opt
    cpu_fp16 = bool(ncnn.cpu_support_arm_asimdhp() or ncnn.cpu_support_arm_vfpv4())
    counts: Counter[str] = Counter()
    for layer in net.layers():
        mask = featmasks.get(layer.name, 0)
        if layer.name in int8_layers and opt.use_int8_inference:
            counts["int8"] += 1
        elif opt.use_fp16_storage and not mask & 2 and cpu_fp16 and layer.support_fp16_storage:
            counts["fp16"] += 1
        elif opt.use_bf16_storage and not mask & 4 and layer.support_bf16_storage:
            counts["bf16"] += 1
        else:
            counts["fp32"] += 1
    return dict(sorted(counts.items()))


def fp16_weight_blobs(weights: Path) -> int:
    """Weight blobs stored as fp16 in a .bin: each starts with ncnn's fp16 tag, 4-byte aligned."""
    words = np.fromfile(weights, dtype="<u4", count=weights.stat().st_size // 4)
    return int(np.count_nonzero(words == FP16_WEIGHT_TAG))


def default_runtime(settings: NcnnConfig, mode: str = "latency") -> dict:
    """The settings of an artifact that records none: `backends.ncnn.num_threads`."""
    check_mode(mode)
    return {"num_threads": settings.num_threads}


def runtime_grid(mode: str, threads: list[int], static_batches: list[int]) -> list[dict]:
    """The settings `tune` tries, plainest first (module docstring); the batch is always one image."""
    return [{"num_threads": t} for t in (threads if mode == "latency" else [max(threads)])]


def peers(export_onnx: Path, calibration: np.ndarray | None, out_dir: Path, static_shape: bool) -> list[Peer]:
    """None (module docstring)."""
    return []


def recorded_metadata(model_file: Path) -> dict[str, str]:
    """Nothing: a .param file records no metadata (the artifact's artifact.json does)."""
    return {}


def sdk_tensor_names(artifact_dir: Path) -> tuple[str, dict[str, str]]:
    """pnnx renames the blobs (`in0`, `out0`, ...); io.json records which is which."""
    io = json.loads((Path(artifact_dir) / IO_FILE).read_text(encoding="utf-8"))
    return io["inputs"][INPUT_NAME]["blob"], {name: io["outputs"][name]["blob"] for name in OUTPUT_NAMES}


class Runner:
    def __init__(self, artifact_dir: Path, target: Target, settings: NcnnConfig, runtime: Mapping | None = None,
                 mode: str = "latency") -> None:
        if target.precision not in PRECISIONS:
            raise ConfigError(f"targets: ncnn cannot run precision {target.precision!r}")
        runtime = resolve_runtime(artifact_dir, mode, runtime, default_runtime(settings, mode), RUNTIME_KEYS, "ncnn")
        num_threads = int(runtime.get("num_threads", settings.num_threads))
        if num_threads < 1:
            raise ConfigError(f"ncnn num_threads={num_threads}; set it to 1 or more")
        self.runtime = dict(runtime)
        artifact_dir = Path(artifact_dir)
        io = json.loads((artifact_dir / IO_FILE).read_text(encoding="utf-8"))
        if io["weights"] != target.precision:
            raise ConfigError(f"{artifact_dir} holds {io['weights']} weights, but the target is {target.name}")
        self.inputs = io["inputs"]
        self.outputs = io["outputs"]
        self.net = _load_net(artifact_dir / PARAM_FILE, artifact_dir / BIN_FILE, target.precision, num_threads)
        opt = self.net.opt
        marked_int8 = ncnn_int8.int8_layers(artifact_dir / PARAM_FILE)
        if (target.precision == "int8") != bool(marked_int8):
            raise ConfigError(f"{artifact_dir} has {len(marked_int8)} int8 layers, but the target is {target.name}")
        layers = layer_precisions(self.net, _featmasks(artifact_dir / PARAM_FILE), marked_int8)
        weights = fp16_weight_blobs(artifact_dir / BIN_FILE) if target.precision != "int8" else 0
        executed = dict(layers)
        if weights and not layers.get("fp16"):
            # fp32 compute on fp16-rounded weights (x86): report the fp16 weights, as the openvino backend does.
            executed["fp16"] = weights
        self.settings = {
            "mode": mode,
            "runtime": dict(runtime),
            "num_threads": opt.num_threads,
            "use_fp16_storage": opt.use_fp16_storage,
            "use_fp16_packed": opt.use_fp16_packed,
            "use_fp16_arithmetic": opt.use_fp16_arithmetic,
            "use_bf16_storage": opt.use_bf16_storage,
            "use_int8_inference": opt.use_int8_inference,
            "int8_layers": dict(Counter(marked_int8.values())),
            "layer_precision": layers,
            "fp16_weight_blobs": weights,
            "execution_precision": dict(sorted(executed.items())),
        }

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(feeds, {name: spec["shape"] for name, spec in self.inputs.items()})
        batch = {len(array) for array in feeds.values()}
        if len(batch) != 1 or 0 in batch:
            raise InputError(f"inputs {sorted(feeds)} need one common, non-zero batch size, got {sorted(batch)}")
        blobs = [spec["blob"] for spec in self.outputs.values()]
        results: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}
        for i in range(batch.pop()):
            image = _forward(self.net, {self.inputs[name]["blob"]: array[i] for name, array in feeds.items()}, blobs)
            for name, spec in self.outputs.items():
                results[name].append(image[spec["blob"]])
        return {name: np.stack(arrays) for name, arrays in results.items()}

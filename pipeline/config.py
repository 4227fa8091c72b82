"""Config schemas (dataclasses), merging a composed config into them, and composing `conf/` with Hydra.

The validated `RunConfig` is obtained in one place, `pipeline.run.configure.load_config` (which also
derives the plan). Every default lives in these dataclasses; `conf/` only selects and overrides.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.core.errors import ConfigError, PipelineError
from pipeline.model.presets import preset_spec

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
PARAMS_FILE = REPO_ROOT / "params.yaml"
# The demo-data stage's COCO keypoint set, the default for calibration and evaluation (its own config,
# conf/train_demo.yaml, which DVC reads, states it too: tests/demo/test_demo.py holds the two equal).
DEMO_COCO_DIR = "artifacts/demo/coco"

# The allowed values of the enum-like string fields (`choice`), checked on load by `to_schema`.
SIMPLIFY_TOOLS = ("onnxslim", "onnxsim", "none")
CALIBRATION_SOURCES = ("coco", "images", "blank")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")  # onnxruntime's calibrators
INT8_FLOAT_PARTS = ("auto", "f32", "bf16")  # openvino-int8's unquantized layers; auto: bf16 where the CPU has it
NCNN_INT8_CALIBRATIONS = ("kl", "maxabs")  # ncnn-int8 input scales (pipeline/backends/ncnn_int8.py), as ncnn2table
PRECISION_HINTS = ("", "f32", "f16", "bf16")  # OpenVINO's inference precision; "": the target's


def choice(default: str, choices: tuple[str, ...]) -> Any:
    """A string field that must be one of `choices`: a typo fails on load (`to_schema`) naming the key and
    the choices. (OmegaConf 2.3 has no Literal type, and an Enum would change what YAML and code compare.)"""
    return field(default=default, metadata={"choices": choices})


@dataclass
class ModelConfig:
    """The model to convert: a file that describes itself, or a released preset (pipeline/sources/describe.py)."""

    preset: Optional[str] = None  # rtmpose-<scale>_<keypoints>_<H>x<W>; with a file, a claim checked against it
    checkpoint: Optional[str] = None  # .pth, .onnx, or MMDeploy SDK folder/.zip; None: preset with synthetic weights
    name: Optional[str] = None  # names the artifacts; None: derived (preset, experiment name, file name)
    trust_pickle: bool = False  # allow whole-model pickles, which run code from the file
    synthetic_seed: int = 0
    # What a file may leave open (a bare state_dict, an ONNX without metadata); None: as the file says.
    input_size: Optional[list[int]] = None  # [W, H] in input pixels
    simcc_split_ratio: Optional[float] = None
    mean: Optional[list[float]] = None  # in the network's channel order
    std: Optional[list[float]] = None
    bgr_to_rgb: Optional[bool] = None  # True: the network takes RGB
    keypoint_names: Optional[list[str]] = None


@dataclass
class ExportConfig:
    opset: int = 17  # MMDeploy uses 11; <= 18 so that mmdeploy-runtime's bundled onnxruntime 1.15 reads it
    dynamic_batch: bool = True  # false bakes in static_batch, as some consumers need
    static_batch: int = 1  # batch size baked in when dynamic_batch is false


@dataclass
class SimplifyConfig:
    tool: str = choice("onnxslim", SIMPLIFY_TOOLS)  # conf/simplify/ selects one
    atol: float = 1e-4  # simplified vs unsimplified, both run in onnxruntime fp32


@dataclass
class Tolerance:
    """Limits of one precision (pipeline/check/verify.py applies them; conf/verify/default.yaml sets them).
    `scale` is an output's max |reference| over the golden inputs, so every elementwise limit follows the
    model's logit size."""

    # Elementwise, rule "reference-error" (used when set and the reference has a float64 run):
    # max|artifact - float64| <= error_factor x max|float32 reference - float64| + error_floor x scale.
    error_factor: Optional[float] = None
    error_floor: float = 0.0
    # Typical error, the same rule on the root mean square (used where set and the reference has a float64 run):
    # rms|artifact - float64| <= rms_factor x rms|float32 reference - float64| + error_floor x rms(reference).
    # The maximum follows one element's rounding; the rms follows every element, so a layer computed wrongly
    # shows there long before its largest element leaves the rounding of a noisy deep model.
    rms_factor: Optional[float] = None
    # Elementwise, rule "output-scale": max|artifact - reference| <= max_error x scale. The rule where
    # error_factor is unset (int8) or reference.npz has no float64 run (written before supplied graphs had one).
    max_error: float = MISSING
    min_cosine: float = MISSING  # cosine similarity of each output, all golden inputs flattened
    # Cosine, rule "reference-error" (used where set, with error_factor, and the reference has a float64 run):
    # 1 - cosine <= max(1 - min_cosine, cosine_factor x (1 - cosine of the float32 reference against float64)).
    # 1 - cosine grows with the square of the error, so cosine_factor is in rms_factor's units squared.
    cosine_factor: Optional[float] = None
    # Decoded keypoints, over the keypoints the reference is confident about (VerifyConfig.min_peak_margin):
    max_mean_drift_px: float = MISSING  # mean displacement, model input pixels
    agreement_px: float = MISSING  # a keypoint "agrees" when it moved at most this far ...
    min_agreement: float = MISSING  # ... and at least this share of keypoints must agree
    max_score_change: float = MISSING  # largest change of a keypoint score (min of the SimCC maxima), x scale


@dataclass
class VerifyConfig:
    """The golden set and the gate (pipeline/check/verify.py); the tolerances per precision, with the
    measurements behind them, are in conf/verify/default.yaml."""

    num_figures: int = 4  # procedural figure crops (the demo checkpoint's kind of image) after the 3 photo crops
    num_random: int = 4  # seeded N(0,1) tensors after the images
    seed: int = 0
    # A keypoint is "confident" where both of the reference's SimCC rows have one clear peak: its peak
    # margin (pipeline/model/decode.py: peak_margin, scale-free, 0 to 1) is at least this; only the
    # confident keypoints of the image inputs are gated. Measured (10th-90th percentile): the demo
    # checkpoint's figure crops 0.25-0.50 (median 0.41), its photos 0.06-0.47 (unlike its training images);
    # the fixtures 7-77 confident keypoints of their 119-931; untrained models with noisy SimCC rows at
    # most 0.16 (seeded synthetic weights) and 0.10 (in-process), however large their logits: nothing of
    # theirs is gated.
    min_peak_margin: float = 0.25
    tolerances: dict[str, Tolerance] = field(default_factory=dict)  # keyed by precision


@dataclass
class CalibrationConfig:
    """INT8 calibration crops (pipeline/inputs/calibration.py): COCO person boxes or an image folder."""

    source: str = choice("coco", CALIBRATION_SOURCES)  # blank only proves that verification catches it
    coco_dir: str = DEMO_COCO_DIR  # COCO keypoint set: annotations.json + images
    images_dir: Optional[str] = None  # for source=images: every image used whole
    num_samples: int = 64
    seed: int = 0


@dataclass
class QuantizeConfig:
    """Q/DQ quantization (pipeline/graph/quantize.py) and NNCF's (openvino-int8). Measured on the demo
    checkpoint (keypoint AP drop on the demo COCO set, onnxruntime / openvino): minmax with everything int8
    0.0135 / 0.0072; percentile with the head in float 0.0031 / 0.0010. The head (final 7x7 conv, ScaleNorm,
    GAU, SimCC classifiers) is under 1% of the compute."""

    calibrate_method: str = choice("percentile", CALIBRATE_METHODS)
    per_channel: bool = True
    # Node-name prefixes kept in float (no Q/DQ, NNCF ignored scope), e.g. the GAU head.
    keep_float: list[str] = field(default_factory=lambda: ["/head/"])
    # openvino-int8 only: NNCF accuracy control (quantize_with_accuracy_control) returns the layers that
    # move keypoints most to float until the mean drift of confident keypoints on the calibration crops,
    # against the float model, is at most this many pixels; null: plain nncf.quantize.
    openvino_max_drift_px: Optional[float] = None


@dataclass
class BenchmarkConfig:
    """pipeline/measure/benchmark.py: every candidate (our targets and the peers: what a user gets without
    the pipeline) in its own process, timed in blocks that alternate across candidates."""
    warmup: int = 5  # untimed calls at the start of every block
    calls: int = 30  # timed batch-1 calls per block
    blocks: int = 5  # blocks per candidate, alternating across candidates, order rotated every round
    settle_s: float = 0.3  # pause before each block, so the previous worker's threads are idle
    throughput_images: int = 16  # images per throughput round, several in flight (0: no throughput)
    throughput_rounds: int = 2  # timed throughput rounds per block
    # Time what a user gets without the pipeline (pipeline/measure/peers.py) in the same run: the plain
    # export in onnxruntime's and OpenVINO's defaults, and NNCF's int8 defaults.
    peers: bool = True
    peer_static_shape: bool = True  # OpenVINO peers reshaped to [1,3,H,W], the faster form a user may choose
    seed: int = 0


@dataclass
class TuneConfig:
    """pipeline/measure/tune.py: the measured search for each target's runtime settings, written beside the
    artifact (<variant>/tune/<target>.json) and into the released artifact.json and detail.json."""
    enabled: bool = True  # false: nothing measured or recorded; artifacts run with `backends.*` settings
    threads: list[int] = field(default_factory=lambda: [1, 0])  # thread counts to try; 0: every usable core
    static_batch: bool = True  # also try the input batch fixed to 1 (latency) before compilation
    warmup: int = 5
    calls: int = 20
    blocks: int = 3
    settle_s: float = 0.2
    throughput_images: int = 16  # 0: no throughput settings tuned (and none recorded)
    throughput_rounds: int = 2
    min_gain: float = 0.03  # a less plain setting must be this much faster (3%) to be chosen
    # A tune on a busy machine keeps the backend's defaults (pipeline/measure/tune.py, `busy_reason`).
    # Others' CPU use, in cores per usable core, sampled over `load_probe_s` before and after the timing: above
    # 0.5 a setting using every core shares one with another runnable thread at least half the time, which slows
    # it (its threads wait for each other) far more than the `min_gain` tune looks for, while one thread escapes
    # (issue 20: load 2.3 on 2 cores chose 1 thread, 9.8 ms against 5.5 ms for the defaults at rest).
    max_load_per_core: float = 0.5
    # Block medians of one setting apart by more than this ((max - min) / median): the machine changed under the
    # timing. 0.5: the benchmark on this 2-core shared VM spreads 7-38% with nothing else running (README, Speed).
    max_block_spread: float = 0.5
    load_probe_s: float = 1.0  # seconds of /proc/stat sampled before and after the timing (0: load average only)


@dataclass
class EvaluateConfig:
    enabled: bool = False  # the optional `evaluate` stage: COCO keypoint AP of every target vs the reference
    dataset_dir: str = DEMO_COCO_DIR  # COCO keypoint set: annotations.json (person boxes) + images
    max_ap_drop: float = 0.01  # AP on the 0-1 scale; a target further below the reference fails the stage
    batch_size: int = 8  # crops per inference call (a static-batch model uses its own batch size)


@dataclass
class OnnxRuntimeConfig:
    num_threads: int = 2
    # fp16 target: op types and node-name prefixes (e.g. /head/) kept in float32 (overflow-prone reductions).
    fp16_keep_float_ops: list[str] = field(default_factory=list)
    fp16_keep_float_nodes: list[str] = field(default_factory=list)


@dataclass
class OpenVINOConfig:
    device: str = "CPU"
    num_threads: int = 2
    inference_precision_hint: str = choice("", PRECISION_HINTS)  # "" follows the target; verify measures what ran
    int8_float_part: str = choice("auto", INT8_FLOAT_PARTS)


@dataclass
class NcnnConfig:
    num_threads: int = 2
    # fp16 target: ncnn layer types or layer names kept in fp32 (feature mask 31=3), e.g. ["MatMul"].
    fp16_keep_float_layers: list[str] = field(default_factory=list)
    # int8 target: how each quantized layer's input scale is found (pipeline/backends/ncnn_int8.py).
    int8_calibration: str = choice("maxabs", NCNN_INT8_CALIBRATIONS)


@dataclass
class TensorRTConfig:
    """An optional extra: tensorrt-* jobs are left out of the plan on hosts without an NVIDIA GPU."""

    min_batch: int = 1  # optimization profile for the dynamic batch axis
    opt_batch: int = 1
    max_batch: int = 8
    workspace_mib: int = 1024
    timing_cache: Optional[str] = None  # a previous timing.cache to start from
    fp16_keep_float_ops: list[str] = field(default_factory=lambda: ["ReduceL2"])  # ScaleNorm's norm overflows in fp16
    fp16_keep_float_nodes: list[str] = field(default_factory=list)


@dataclass
class BackendsConfig:
    onnxruntime: OnnxRuntimeConfig = field(default_factory=OnnxRuntimeConfig)
    openvino: OpenVINOConfig = field(default_factory=OpenVINOConfig)
    ncnn: NcnnConfig = field(default_factory=NcnnConfig)
    tensorrt: TensorRTConfig = field(default_factory=TensorRTConfig)


# Deployment targets, `<backend>-<precision>`; every one is built and verified for the model. The defaults
# run on any x86 CPU, so the composed plan (params.yaml) and its artifacts are the same on every machine;
# tensorrt-* are left out of the plan on hosts without an NVIDIA GPU (the report says why). openvino-bf16 is
# opt-in (`targets=[...,openvino-bf16]`) on CPUs with AVX512_BF16 or AMX; elsewhere it is left out with the
# reason. ncnn-int8 is calibrated and written by the project (pipeline/backends/ncnn_int8.py).
DEFAULT_TARGETS = ("onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8", "openvino-fp32", "openvino-fp16",
                   "openvino-int8", "ncnn-fp32", "ncnn-fp16", "ncnn-int8", "tensorrt-fp16", "tensorrt-int8")


@dataclass
class RunConfig:
    """The whole config: conf/config.yaml composes onto it (`register_schema`). Fields are in params.yaml's
    order: what the defaults list selects first (model, matrix, simplify, verify), then the rest."""

    model: ModelConfig = field(default_factory=ModelConfig)
    extra_variants: list[str] = field(default_factory=list)  # more variants besides the model (conf/matrix/)
    simplify: SimplifyConfig = field(default_factory=SimplifyConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    out_dir: str = "artifacts"
    export: ExportConfig = field(default_factory=ExportConfig)
    backends: BackendsConfig = field(default_factory=BackendsConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # Derived by `rtmpose_hardware`: GPU, compute capability, driver, TensorRT version (or "none").
    hardware: dict[str, Any] = field(default_factory=dict)
    # Derived by the `rtmpose_plan` resolver from model and targets; dvc.yaml iterates over it.
    plan: dict[str, Any] = field(default_factory=dict)


SCHEMA_NAME = "run_config"  # conf/config.yaml's first default: RunConfig as the schema it composes onto


def register_schema() -> None:
    """Store `RunConfig` in Hydra's ConfigStore as `run_config`, once per process: conf/config.yaml composes
    onto it, so every default comes from these dataclasses and a misspelled key fails at composition."""
    store = ConfigStore.instance()
    if f"{SCHEMA_NAME}.yaml" not in store.repo:
        store.store(name=SCHEMA_NAME, node=RunConfig)


def to_schema(schema: type, raw: DictConfig | dict, source: str = "config", hint: str = "") -> Any:
    """Merge a composed config into its dataclass schema; a bad key, type or choice names the key."""
    try:
        if isinstance(raw, DictConfig):  # plain data: a key Hydra added to a typed node (`+export.opsett=11`) fails
            raw = OmegaConf.to_container(raw, resolve=True)
        loaded = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw))
    except OmegaConfBaseException as exc:
        cause = _pipeline_cause(exc)
        if cause is not None:  # a resolver (the plan) refused the config: its own one line, not OmegaConf's wrapper
            raise cause from None
        key = getattr(exc, "full_key", None) or ""
        reason = str(exc).splitlines()[0]
        message = f"{source} key {key!r}: {reason}" if key else f"{source}: {reason}"
        raise ConfigError(message + (f"; {hint}" if hint else "")) from None
    _check_choices(loaded, source)
    return loaded


def _pipeline_cause(exc: BaseException) -> PipelineError | None:
    """The PipelineError that an OmegaConf error wraps (raised by a resolver while interpolating), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, PipelineError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _check_choices(section: Any, source: str = "config", prefix: str = "") -> None:
    """Raise ConfigError if a `choice` field of the dataclass `section`, or of one nested in it, holds another value."""
    for item in dataclasses.fields(section):
        value, key = getattr(section, item.name), prefix + item.name
        choices = item.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{source} key {key!r}: {value!r} is not one of {', '.join(map(repr, choices))}")
        nested = value.items() if isinstance(value, dict) else [("", value)]
        for name, child in nested:
            if dataclasses.is_dataclass(child):
                _check_choices(child, source, f"{key}.{name}." if name else f"{key}.")


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """Compose `conf/<config_name>.yaml` with Hydra and resolve its interpolations.

    Resolvers it names must be registered first (`pipeline.run.configure.compose` registers the plan's).
    Raises ConfigError with one line (a missing group option names the choices), or the PipelineError a
    resolver raised."""
    register_schema()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        cause = _pipeline_cause(exc)
        if cause is not None:  # a resolver (the plan: describing the model file) raised it: keep its kind
            raise cause from None
        raise ConfigError(_one_line(exc)) from None
    return cfg


def _pipeline_cause(exc: BaseException) -> PipelineError | None:
    """The PipelineError a resolver raised, wrapped by OmegaConf/Hydra, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, PipelineError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    missing = re.search(r"Could not find '([\w/]+)/([^'/]+)'", text)
    if missing and missing.group(1) == "model":
        preset_spec(missing.group(2))  # raises with the scale/keypoints/size that is wrong
    if missing:  # Hydra lists every option; name the group and its few choices instead
        group = missing.group(1)
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        return f"{group}={missing.group(2)} is not an option; choose one of {', '.join(options)}"
    return text[:400]


def dump_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)

"""Shared fixtures: one seeded rtmpose-t (the smallest released variant) per session, exported once.

Everything a test writes goes under pytest's tmp directories; nothing touches artifacts/ or params.yaml.
Helpers write checkpoints in the forms users hold them (mmpose zip/legacy, bare state_dict, pickled
model) and run entry points as subprocesses, the way DVC and users run them. Files made by mmpose's
own code (every RTMPose-family kind and file layout) come from the `mmpose_files` fixture
(tests/mmpose_files.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pipeline.config import RunConfig
from pipeline.core.hardware import nvidia_gpu_present
from pipeline.graph.export import export_onnx
from pipeline.inputs.golden import golden_crops, photo_crops, random_inputs
from pipeline.model.preprocess import normalize
from pipeline.model.presets import preset_spec
from pipeline.model.rtmpose import build_network
from pipeline.model.spec import ModelSpec
from pipeline.model.synthetic import synthetic_state_dict
from pipeline.package.dropin import pipeline_json
from pipeline.run.configure import load_config
from pipeline.sources.weights import build_reference_model

from mmpose_files import mmpose_files  # noqa: F401  (session fixture: mmpose-made model files)

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
VARIANT = "rtmpose-t_coco17_256x192"
FP32_TARGETS = ("onnxruntime-fp32", "openvino-fp32")


# --------------------------------------------------------------------------------------------- the gpu marker

# Set (to 1) on GPU runners: a `gpu` test that cannot run there fails the session instead of skipping.
REQUIRE_GPU = "PIPELINE_REQUIRE_GPU"


def gpu_unavailable_reason() -> str:
    """'' where `gpu` tests can run (an NVIDIA GPU, TensorRT, a torch that sees CUDA), else why not."""
    if not nvidia_gpu_present():
        return "needs an NVIDIA GPU: nvidia-smi lists none on this host"
    if importlib.util.find_spec("tensorrt") is None:
        return "needs TensorRT: pip install -e '.[tensorrt]' --extra-index-url https://pypi.nvidia.com"
    if not torch.cuda.is_available():
        return "needs a CUDA build of torch: torch.cuda.is_available() is False"
    return ""


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip with the reason where they cannot run (fail where PIPELINE_REQUIRE_GPU=1)."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    reason = gpu_unavailable_reason() if marked else ""
    if not reason:
        return
    if os.environ.get(REQUIRE_GPU) == "1":
        raise pytest.UsageError(f"{REQUIRE_GPU}=1 but {len(marked)} gpu test(s) cannot run: {reason}")
    for item in marked:
        item.add_marker(pytest.mark.skip(reason=reason))


# --------------------------------------------------------------------------------------------- config,
# model and ONNX, built once per session


@pytest.fixture(scope="session")
def t_cfg(tmp_path_factory) -> RunConfig:
    """The composed config for synthetic rtmpose-t, outputs redirected to a temporary directory."""
    return load_config(["model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"out_dir={tmp_path_factory.mktemp('out')}"])


@pytest.fixture(scope="session")
def t_variant() -> ModelSpec:
    return preset_spec(VARIANT)


@pytest.fixture(scope="session")
def t_state_dict(t_variant) -> "OrderedDict[str, torch.Tensor]":
    return synthetic_state_dict(t_variant, seed=0)


@pytest.fixture(scope="session")
def t_model(t_cfg) -> torch.nn.Module:
    model, _ = build_reference_model(t_cfg.model, preset_spec(VARIANT))
    return model


def photo_inputs(spec: ModelSpec) -> np.ndarray:
    """[P,3,H,W] float32 crops of the bundled photos, preprocessed as `spec` says."""
    return normalize(photo_crops(spec), spec.preprocess)


def golden_inputs(spec: ModelSpec, num_figures: int, num_random: int, seed: int) -> np.ndarray:
    """Photos, then figures, then random tensors, as the reference stage makes them: the first photos +
    figures inputs are images, preprocessed as `spec` says."""
    return np.concatenate([normalize(golden_crops(spec, num_figures), spec.preprocess),
                           random_inputs(spec.input_hw, num_random, seed)])


@pytest.fixture(scope="session")
def golden(t_variant) -> np.ndarray:
    """Three photo crops, one procedural figure and one seeded random tensor, [5,3,256,192] float32."""
    return golden_inputs(t_variant, num_figures=1, num_random=1, seed=0)


@pytest.fixture(scope="session")
def torch_outputs(t_model, golden) -> dict[str, np.ndarray]:
    return torch_forward(t_model, golden)


@pytest.fixture(scope="session")
def t_onnx(t_cfg, t_model, t_variant, tmp_path_factory) -> Path:
    """rtmpose-t exported with the default export config (opset 17, dynamic batch)."""
    _, info = build_reference_model(t_cfg.model, t_variant)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(t_model, t_variant, info, t_cfg.export, path)
    return path


@pytest.fixture(scope="session")
def ort_dir(t_onnx, tmp_path_factory) -> Path:
    """An onnxruntime artifact folder of `t_onnx` that records no runtime settings (read only)."""
    folder = tmp_path_factory.mktemp("ort")
    shutil.copyfile(t_onnx, folder / "model.onnx")
    return folder


# The committed demo checkpoint: a trained rtmpose-t whose SimCC outputs have clear peaks. Tests that compare
# keypoints across runtimes use it; synthetic weights give flat outputs whose argmax any rounding can move.
DEMO_CHECKPOINT = REPO_ROOT / "checkpoints" / f"{VARIANT}_demo.pth"
# Two runtimes (or two CPUs) differ by about 1e-5 in the fp32 logits (README: 5e-6 to 1.4e-5 max |Δ| on the
# demo checkpoint), so an argmax whose bin beats every other bin of its row by this much cannot move.
ARGMAX_MARGIN = 1e-3


@pytest.fixture(scope="session")
def demo_model() -> torch.nn.Module:
    """The demo checkpoint in PyTorch (the reference of every keypoint comparison across runtimes)."""
    cfg = load_config([f"model.checkpoint={DEMO_CHECKPOINT}"])
    model, info = build_reference_model(cfg.model, preset_spec(VARIANT))
    assert info.sha256 and info.source != "synthetic"
    return model


@pytest.fixture(scope="session")
def demo_onnx(demo_model, tmp_path_factory) -> Path:
    """The demo checkpoint exported with the default export config (opset 17, dynamic batch)."""
    cfg = load_config([f"model.checkpoint={DEMO_CHECKPOINT}"])
    _, info = build_reference_model(cfg.model, preset_spec(VARIANT))
    path = tmp_path_factory.mktemp("demo_onnx") / "model.onnx"
    export_onnx(demo_model, preset_spec(VARIANT), info, cfg.export, path)
    return path


def unambiguous_keypoints(simcc_x: np.ndarray, simcc_y: np.ndarray, margin: float = ARGMAX_MARGIN) -> np.ndarray:
    """[..., K] bool: keypoints whose SimCC maxima beat the runner-up bin of their row by at least `margin` in
    both rows and whose score is above `margin` (mmpose's decode masks scores <= 0). Another runtime or CPU
    decodes these to the same bins; elsewhere a near-tie may go either way."""
    def lead(logits: np.ndarray) -> np.ndarray:
        top2 = np.sort(logits, axis=-1)[..., -2:]
        return top2[..., 1] - top2[..., 0]

    score = np.minimum(simcc_x.max(-1), simcc_y.max(-1))
    return (lead(simcc_x) >= margin) & (lead(simcc_y) >= margin) & (score > margin)


def renamed(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    """A copy of an ONNX model with one tensor renamed everywhere it appears."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        for field in (node.input, node.output):
            names = [new if n == old else n for n in field]
            del field[:]
            field.extend(names)
    for value in (*out.graph.input, *out.graph.output):
        if value.name == old:
            value.name = new
    onnx.checker.check_model(out)
    return out


def mmdeploy_style_export(model: torch.nn.Module, path: Path, dynamic: bool,
                          input_hw: tuple[int, int] = (256, 192)) -> onnx.ModelProto:
    """`model` exported as MMDeploy's torch2onnx writes it (opset 11, no metadata, K left symbolic) or with
    a fixed batch of 1 (DWPose's and many released files), to `path`; the graph."""
    axes = {n: {0: "batch"} for n in ("input", "simcc_x", "simcc_y")} if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, *input_hw),), str(path), dynamo=False, opset_version=11,
                          input_names=["input"], output_names=["simcc_x", "simcc_y"], dynamic_axes=axes)
    return onnx.load(str(path))


def sdk_package(spec: ModelSpec, onnx_path: Path, folder: Path, to_rgb: bool = True) -> Path:
    """An MMDeploy SDK model folder as OpenMMLab distributes them: end2end.onnx + deploy/pipeline/detail.json."""
    folder.mkdir(parents=True)
    (folder / "end2end.onnx").write_bytes(onnx_path.read_bytes())
    pre = dataclasses.replace(spec.preprocess, bgr_to_rgb=to_rgb)
    pipeline = pipeline_json(dataclasses.replace(spec, preprocess=pre), "input", {})
    deploy = {"version": "1.3.1", "task": "PoseDetector", "customs": [],
              "models": [{"name": "topdownposeestimator", "net": "end2end.onnx", "weights": "",
                          "backend": "onnxruntime", "precision": "FP32", "batch_size": 1, "dynamic_shape": True}]}
    (folder / "pipeline.json").write_text(json.dumps(pipeline))
    (folder / "deploy.json").write_text(json.dumps(deploy))
    (folder / "detail.json").write_text(json.dumps({"version": "1.3.1", "codebase": {"codebase": "mmpose"}}))
    return folder


def torch_forward(model: torch.nn.Module, inputs: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        simcc_x, simcc_y = model(torch.from_numpy(inputs))
    return {"simcc_x": simcc_x.numpy(), "simcc_y": simcc_y.numpy()}


def run_onnx(model: Path | onnx.ModelProto, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """onnxruntime CPU with default options, outputs keyed by name."""
    import onnxruntime as ort

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": inputs})))


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert set(a) == set(b)
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------- checkpoints


class HistoryBuffer:
    """Stands in for mmengine's HistoryBuffer so the file has the same pickle globals as a real one."""

    def __init__(self) -> None:
        self._log_history = np.linspace(0.1, 0.01, 5)
        self._count_history = np.ones(5)
        self.max_length = 1000000


HistoryBuffer.__module__ = "mmengine.logging.history_buffer"


@contextlib.contextmanager
def _mmengine_importable():
    """pickle saves a class by reference and checks it can import it back; register it briefly."""
    module = types.ModuleType(HistoryBuffer.__module__)
    module.HistoryBuffer = HistoryBuffer
    sys.modules[module.__name__] = module
    try:
        yield
    finally:
        del sys.modules[module.__name__]


def mmpose_checkpoint(state_dict: dict[str, torch.Tensor], variant: ModelSpec) -> dict:
    """What mmengine's runner saves: numpy values in meta and training state next to the weights."""
    k = variant.num_keypoints
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = [v for key, v in state_dict.items() if not key.endswith(buffers)]
    optimizer = {  # torch.optim.AdamW(...).state_dict() after training: moments per parameter
        "state": {i: {"step": torch.tensor(420.0), "exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v)}
                  for i, v in enumerate(params)},
        "param_groups": [{"lr": 4e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.05, "amsgrad": False,
                          "params": list(range(len(params)))}],
    }
    meta = {
        "mmengine_version": "0.10.3",
        "epoch": 420,
        "iter": 123456,
        "seed": np.int64(21),
        "cfg": "model = dict(type='TopdownPoseEstimator', ...)",
        "dataset_meta": {
            "dataset_name": variant.keypoints.dataset_name,
            "num_keypoints": k,
            "keypoint_id2name": dict(enumerate(variant.keypoint_names)),
            "sigmas": np.full(k, 0.079, dtype=np.float32),
            "dataset_keypoint_weights": np.ones(k, dtype=np.float64),
            "keypoint_colors": np.zeros((k, 3), dtype=np.uint8),
            "bbox_score_thr": np.float64(0.3),
        },
    }
    return {
        "meta": meta,
        "state_dict": OrderedDict(state_dict),
        "optimizer": optimizer,
        "param_schedulers": [{"last_epoch": 420, "base_values": [4e-3]}],
        "message_hub": {
            "log_scalars": {"train/loss": HistoryBuffer()},
            "runtime_info": {"epoch": 420, "iter": 123456},
            "resumed_keys": {"epoch": True},
        },
    }


CHECKPOINT_FORMS = ("mmpose-zip", "mmpose-legacy", "state_dict", "state_dict-module.", "state_dict-model.")


def write_checkpoint(path: Path, form: str, state_dict: dict[str, torch.Tensor], variant: ModelSpec) -> Path:
    """Write weights in one of CHECKPOINT_FORMS, or as a whole pickled model ("pickled-model")."""
    path = Path(path)
    if form.startswith("mmpose"):
        with _mmengine_importable():
            torch.save(mmpose_checkpoint(state_dict, variant), path,
                       _use_new_zipfile_serialization=form == "mmpose-zip")
    elif form.startswith("state_dict"):
        prefix = form.partition("-")[2]
        torch.save(OrderedDict((prefix + k, v) for k, v in state_dict.items()), path)
    elif form == "pickled-model":
        model = build_network(variant)
        model.load_state_dict(state_dict)
        torch.save(model, path)
    else:
        raise ValueError(form)
    return path


# --------------------------------------------------------------------------------------------- subprocesses


def run_python(*args: str, cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python <args>` with this interpreter; stdout and stderr captured as text.

    This checkout comes first on PYTHONPATH, so the subprocess imports the `pipeline` under test even
    where the interpreter has another checkout installed in editable mode (a git worktree).
    """
    path = os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH"))))
    return subprocess.run([PYTHON, *args], cwd=cwd, env={**os.environ, "PYTHONPATH": path, **(env or {})},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    """The `error: ...` lines of a stage's stderr (pipeline/run/cli.py prints one for a PipelineError)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error line of a failed stage: exit 1, exactly one `error:` line, no traceback. Other stderr lines (an
    unpinned tool's deprecation warning) are not the stage's outcome and are not judged."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    print(lines[0])  # shown with `pytest -rP`: the line a user gets
    return lines[0]


def run_stage(stage: str, name: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python stages/<stage>.py <variant-or-job> [overrides]`, run from `cwd` (a tmp directory)."""
    return run_python(str(REPO_ROOT / "stages" / f"{stage}.py"), name, *overrides, cwd=cwd)


# --------------------------------------------------------------------------------------------- the demo
# checkpoint through every target this host can build


DEMO_CHECKPOINT = REPO_ROOT / "checkpoints" / f"{VARIANT}_demo.pth"


@dataclass
class DemoChain:
    """`python -m pipeline` on the demo checkpoint (a trained, peaked model) with every target."""

    out_dir: Path
    overrides: tuple[str, ...]  # what the chain ran with: stage scripts given these find the same plan
    result: subprocess.CompletedProcess
    variant: str = VARIANT

    @property
    def variant_dir(self) -> Path:
        return self.out_dir / self.variant

    def metrics(self, target: str) -> dict:
        return json.loads((self.variant_dir / "metrics" / f"{target}.json").read_text())

    def copy(self, root: Path) -> "DemoChain":
        """A copy of the outputs under `root`, for a test that breaks something."""
        out = root / "out"
        shutil.copytree(self.out_dir, out)
        overrides = tuple(o for o in self.overrides if not o.startswith("out_dir=")) + (f"out_dir={out}",)
        return DemoChain(out, overrides, self.result, self.variant)


@pytest.fixture(scope="session")
def demo_chain(tmp_path_factory) -> DemoChain:
    """Every target (`pipeline.backends.TARGETS`; the plan leaves out what this host cannot run) built
    and verified from the demo checkpoint, INT8 calibrated on 32 crops of a small procedural set."""
    from pipeline.backends import TARGETS

    root = tmp_path_factory.mktemp("demo_chain")
    coco = root / "coco"
    data = run_python("-m", "stages.demo_data", f"demo_coco_dir={coco}", "coco_images=40", cwd=root)
    assert data.returncode == 0, data.stderr
    # tune.enabled=false: no test of this chain is about tuning (tests/measure/test_tune.py is); the artifacts run
    # with `backends.*` settings.
    overrides = (f"model.checkpoint={DEMO_CHECKPOINT}", f"targets=[{','.join(TARGETS)}]",
                 f"calibration.coco_dir={coco}", "calibration.num_samples=32", f"out_dir={root / 'out'}",
                 "tune.enabled=false")
    result = run_python("-m", "pipeline", *overrides, cwd=root, timeout=1800)
    return DemoChain(root / "out", overrides, result)

"""The export and the simplified ONNX are the same bytes on every x86 CPU (issue 13).

Two ways to catch a regression on one machine:
- structurally: every float weight of the export is a checkpoint tensor, moved or transposed, or a
  BatchNorm fold computed by exact float64 code; the simplifier adds no float value of its own. A
  float kernel (torch's, onnxruntime's) computing a weight would show here on any CPU.
- by switching the kernels this machine can run: the export and simplification in subprocesses
  under ATen's other CPU capability, one thread, MKL limited to SSE4.2 and, where a C compiler
  exists, MKL on its Intel code paths (an LD_PRELOAD of `mkl_serv_intel_cpu_true`: MKL otherwise
  runs a generic path on non-Intel CPUs, which is how the exporter's own BatchNorm fold gave an AMD
  EPYC and a Xeon different weights).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from pipeline.config import SimplifyConfig
from pipeline.graph.simplify import simplify_onnx

from conftest import REPO_ROOT, run_python

# Export and simplify the seeded rtmpose-t; print the sha256 of both files and of torch's float32
# sqrt/exp on a fixed array (which shows whether the environment switched torch's kernels).
SCRIPT = """
import hashlib, sys
from pathlib import Path
import numpy as np, torch
from pipeline.config import SimplifyConfig
from pipeline.run.configure import load_config
from pipeline.graph.export import export_onnx
from pipeline.inputs.golden import golden_crops, random_inputs
from pipeline.model.preprocess import normalize
from pipeline.graph.simplify import simplify_onnx
from pipeline.sources.weights import build_reference_model
import onnx

out = Path(sys.argv[1])
cfg = load_config(["model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"out_dir={out}"])
from pipeline.planning.plan import spec_of
variant = spec_of(cfg, "rtmpose-t_coco17_256x192")
model, info = build_reference_model(cfg.model, variant)
export_onnx(model, variant, info, cfg.export, out / "export.onnx")
crops = normalize(golden_crops(variant, 1), variant.preprocess)
inputs = np.concatenate([crops, random_inputs(variant.input_hw, 1, 0)])
for tool in ("onnxslim", "onnxsim"):
    simplify_onnx(onnx.load(str(out / "export.onnx")), variant, SimplifyConfig(tool=tool), inputs,
                  out / f"{tool}.onnx")
x = torch.from_numpy(np.linspace(0.01, 4.0, 100_003, dtype=np.float32))
kernels = hashlib.sha256(x.sqrt().numpy().tobytes() + x.exp().numpy().tobytes()).hexdigest()
files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.onnx"))}
print(kernels, *(f"{k}={v}" for k, v in files.items()))
"""

FAKE_INTEL = "int mkl_serv_intel_cpu_true(void) { return 1; }\nint mkl_serv_intel_cpu(void) { return 1; }\n"


def float_values(model: onnx.ModelProto) -> list[tuple[str, np.ndarray]]:
    """Float initializers and float Constant-node tensors, by name."""
    values = [(init.name, onnx.numpy_helper.to_array(init)) for init in model.graph.initializer]
    values += [(node.output[0], onnx.numpy_helper.to_array(attr.t)) for node in model.graph.node
               if node.op_type == "Constant" for attr in node.attribute if attr.name == "value"]
    return [(name, array) for name, array in values if array.dtype == np.float32]


def bn_folds(state_dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """conv prefix -> (weight, bias) of conv -> BatchNorm folded in float64 and rounded once."""
    sd = {k: v.numpy().astype(np.float64) for k, v in state_dict.items() if v.is_floating_point()}
    folds = {}
    for key in sd:
        if key.endswith(".bn.running_var"):
            prefix = key[:-len(".bn.running_var")]
            scale = sd[f"{prefix}.bn.weight"] / np.sqrt(sd[key] + 1e-5)
            weight = sd[f"{prefix}.conv.weight"] * scale[:, None, None, None]
            bias = sd[f"{prefix}.bn.bias"] - sd[f"{prefix}.bn.running_mean"] * scale
            folds[prefix] = (weight.astype(np.float32), bias.astype(np.float32))
    return folds


def test_every_export_weight_is_a_checkpoint_tensor_or_an_exact_fold(t_onnx, t_state_dict):
    model = onnx.load(str(t_onnx))
    expected = [v.numpy() for v in t_state_dict.values() if v.is_floating_point()]
    expected += [a.T for a in expected if a.ndim == 2]  # Linear weights become MatMul's transposed operand
    folds = bn_folds(t_state_dict)
    for weight, bias in folds.values():
        expected += [weight, bias]
    by_bytes = {hashlib.sha256(a.tobytes()).hexdigest() + str(a.shape) for a in expected}
    unexplained = [name for name, array in float_values(model) if array.size > 1 and
                   hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() + str(array.shape) not in by_bytes]
    assert not unexplained, f"float weights computed by a kernel, not taken from the checkpoint: {unexplained}"
    # every BatchNorm was folded (no BatchNormalization left, one biased Conv per fold)
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    fold_biases = {hashlib.sha256(b.tobytes()).hexdigest() for _, b in folds.values()}
    conv_biases = {hashlib.sha256(initializers[n.input[2]].tobytes()).hexdigest()
                   for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2}
    assert len(folds) == 33 and fold_biases <= conv_biases


@pytest.mark.parametrize("tool", ["onnxslim", "onnxsim"])
def test_the_simplifier_adds_no_float_value_of_its_own(tool, t_onnx, t_variant, golden, tmp_path):
    pytest.importorskip(tool)
    source = onnx.load(str(t_onnx))
    simplify_onnx(source, t_variant, SimplifyConfig(tool=tool), golden, tmp_path / "model.onnx")
    before = {(np.ascontiguousarray(a).tobytes(), a.size) for _, a in float_values(source)}
    after = float_values(onnx.load(str(tmp_path / "model.onnx")))
    new = [name for name, a in after if (np.ascontiguousarray(a).tobytes(), a.size) not in before]
    assert not new, f"{tool} computed float values (constant folding with onnxruntime's kernels?): {new}"


def _fake_intel_library(tmp_path: Path) -> Path | None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = tmp_path / "fake_intel.c"
    source.write_text(FAKE_INTEL, encoding="utf-8")
    library = tmp_path / "fake_intel.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


def _export_and_simplify(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[str, dict[str, str]]:
    out = tmp_path / name
    out.mkdir()
    result = run_python("-c", SCRIPT, str(out), cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT), **env},
                        timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    kernels, *files = result.stdout.split()[-4:]
    return kernels, dict(item.split("=", 1) for item in files)


@pytest.fixture(scope="module")
def kernel_runs(tmp_path_factory) -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (sha256 of torch's sqrt/exp, {file: sha256}) under each kernel selection."""
    tmp_path = tmp_path_factory.mktemp("kernels")
    envs = {"default": {},
            "aten-default-1-thread": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"},
            "mkl-sse4.2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}}
    library = _fake_intel_library(tmp_path)
    if library is not None:
        envs["mkl-intel-path"] = {"LD_PRELOAD": str(library)}
    return {name: _export_and_simplify(tmp_path, name, env) for name, env in envs.items()}


def test_export_and_simplify_are_the_same_bytes_under_every_kernel_selection(kernel_runs):
    files = {name: run[1] for name, run in kernel_runs.items()}
    assert set(files["default"]) == {"export.onnx", "onnxslim.onnx", "onnxsim.onnx"}
    differing = {name: sorted(k for k in f if f[k] != files["default"][k]) for name, f in files.items()}
    assert not any(differing.values()), f"bytes depend on the CPU kernels: {differing}"


def test_mkl_intel_path_changes_torch_float_kernels_on_a_non_intel_cpu(kernel_runs):
    """The cause of issue 13, shown on one machine: on a non-Intel CPU MKL runs its generic path, and
    forced onto its Intel path it computes torch's float32 sqrt/exp differently. So the comparison
    above does run different kernels here, as an AMD and an Intel CPU do."""
    vendor = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("vendor_id")), "")
    if vendor == "GenuineIntel" or "mkl-intel-path" not in kernel_runs:
        pytest.skip(f"needs a non-Intel x86 CPU and a C compiler (vendor {vendor!r})")
    assert kernel_runs["mkl-intel-path"][0] != kernel_runs["default"][0]

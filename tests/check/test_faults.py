"""Broken conversions that verification must fail, each with the one `error:` line a user sees.

Every fault is made on a copy of a correct build of the demo checkpoint (conftest.demo_chain), by the
means it happens in reality: a built artifact whose weights were altered, an artifact that records the
wrong preprocessing (its consumers feed it BGR or mis-normalised images although the network is
right), and a target that computes in bf16. INT8 calibrated on blank images: tests/check/test_int8_gate.py.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline.core.io import read_npz
from pipeline.core.onnx_io import get_metadata, set_metadata
from pipeline.model.spec import PreprocessSpec
from pipeline.run.configure import load_config

from conftest import DEMO_CHECKPOINT, VARIANT, DemoChain, mmdeploy_style_export, one_line_error, run_python, run_stage

MEAN_RGB, STD_RGB = PreprocessSpec().mean, PreprocessSpec().std
from pipeline.check.verify import Golden, compare, summary_lines

FP32_TARGETS = ("onnxruntime-fp32", "openvino-fp32", "ncnn-fp32")
# The file holding each fp32 artifact's weights, as float32 in the ONNX layout (OIHW).
WEIGHT_FILES = {"onnxruntime-fp32": "model.onnx", "openvino-fp32": "model.bin", "ncnn-fp32": "model.ncnn.bin"}


def verify(chain, target: str):
    """The verify stage script on a (modified) copy of the chain; its result and metrics."""
    result = run_stage("verify", f"{chain.variant}.{target}", *chain.overrides, cwd=chain.out_dir.parent)
    return result, chain.metrics(target)


def largest_conv_weight(onnx_path) -> tuple[str, np.ndarray]:
    model = onnx.load(str(onnx_path))
    inits = {i.name: i for i in model.graph.initializer}
    weights = [(n.name, numpy_helper.to_array(inits[n.input[1]])) for n in model.graph.node
               if n.op_type == "Conv" and n.input[1] in inits]
    return max(weights, key=lambda item: item[1].size)


def perturb_weights_in_file(path, weights: np.ndarray, relative: float, seed: int = 0) -> None:
    """Find one layer's float32 weights by their bytes in a built artifact and scale each by 1 + N(0, relative)."""
    data = bytearray(path.read_bytes())
    raw = weights.astype("<f4").tobytes()
    at = data.find(raw)
    assert at >= 0 and data.find(raw, at + 1) < 0, f"the layer's weights are not stored once, as float32, in {path}"
    noise = 1 + relative * np.random.default_rng(seed).standard_normal(weights.shape)
    data[at:at + len(raw)] = (weights * noise).astype("<f4").tobytes()
    path.write_bytes(bytes(data))


def verify_with_one_layer_perturbed(chain, target: str) -> tuple[str, dict, float]:
    """Perturb the largest conv's weights by 1% in the built artifact of `target`, run verify, check its one line
    names the float64 rule and the factor it needed, and check that factor is far outside, not borderline;
    (the line, the metrics, the needed error_factor)."""
    layer, weights = largest_conv_weight(chain.variant_dir / "simplified" / "model.onnx")
    perturb_weights_in_file(chain.variant_dir / target / WEIGHT_FILES[target], weights, relative=0.01)
    result, metrics = verify(chain, target)
    line = one_line_error(result)
    assert line.startswith(f"error: {chain.variant}.{target} failed verification: simcc_")
    assert " vs float64 > atol " in line and "needs error_factor ≥ " in line
    needs = max(o["needs_error_factor"] for o in metrics["outputs"].values())
    assert needs > 10 * metrics["tolerance"]["error_factor"], (layer, needs)
    return line, metrics, needs


@pytest.mark.parametrize("target", FP32_TARGETS)
def test_one_layer_perturbed_by_one_percent_fails(target, demo_chain, tmp_path):
    _, metrics, _ = verify_with_one_layer_perturbed(demo_chain.copy(tmp_path), target)
    assert metrics["passed"] is False


def edit_pipeline_json(artifact_dir, change) -> None:
    path = artifact_dir / "pipeline.json"
    data = json.loads(path.read_text())
    for task in data["pipeline"]["tasks"]:
        for transform in task.get("transforms", []):
            if transform["type"] == "Normalize":
                change(transform)
    path.write_text(json.dumps(data))


def test_an_artifact_recording_bgr_input_fails(demo_chain, tmp_path):
    """pipeline.json says to_rgb: false, so the MMDeploy SDK feeds the network BGR: the poses move."""
    chain = demo_chain.copy(tmp_path)
    edit_pipeline_json(chain.variant_dir / "onnxruntime-fp32", lambda t: t.update(to_rgb=False))
    result, metrics = verify(chain, "onnxruntime-fp32")
    line = one_line_error(result)
    assert line.startswith(f"error: {VARIANT}.onnxruntime-fp32 failed verification: [images preprocessed as "
                           "pipeline.json records: BGR mean [123.675, 116.28, 103.53]")
    assert "the reference model expects RGB mean [123.675, 116.28, 103.53]" in line and " vs float64 > atol " in line
    assert metrics["preprocessing"]["runs"][0]["normalization"]["channels"] == "BGR"
    moved = metrics["keypoints"]["confident"]
    assert moved["max_drift_px"] > 1.0, moved  # what users would see, written whatever failed first
    assert any(b.startswith("[images preprocessed as pipeline.json") and "keypoints" in b for b in metrics["breaches"])
    # The ONNX metadata still records RGB: that record's own run passes.
    (other,) = metrics["other_runs"]
    assert other["sources"] == ["ONNX metadata"] and other["breaches"] == []


def test_an_artifact_recording_mean_and_std_in_bgr_order_fails(demo_chain, tmp_path):
    """The ONNX metadata lists mean/std in BGR order under `mean_rgb`/`std_rgb`."""
    chain = demo_chain.copy(tmp_path)
    path = chain.variant_dir / "onnxruntime-fp32" / "model.onnx"
    model = onnx.load(str(path))
    meta = get_metadata(model)
    bgr_order = {"mean": json.dumps(list(MEAN_RGB[::-1])), "std": json.dumps(list(STD_RGB[::-1]))}
    set_metadata(model, {**meta, **bgr_order})
    onnx.save_model(model, str(path))
    result, metrics = verify(chain, "onnxruntime-fp32")
    line = one_line_error(result)
    assert "[images preprocessed as ONNX metadata records: RGB mean [103.53, 116.28, 123.675] std [57.375, 57.12, " \
           "58.395]; the reference model expects RGB mean [123.675, 116.28, 103.53]" in line
    assert " vs float64 > atol " in line
    (other,) = metrics["other_runs"]
    assert other["sources"] == ["ONNX metadata"] and other["keypoints"]["confident"]["mean_drift_px"] > 0


def test_an_fp32_target_computing_in_bf16_fails_on_any_cpu(demo_chain):
    """What openvino-fp32 gives where the CPU silently computes in bf16 (tests/run/test_stages.py shows that
    end to end on CPUs with bf16): the model run in bfloat16 by PyTorch, which any CPU can do."""
    import copy

    import torch

    from pipeline.planning.plan import spec_of
    from pipeline.sources.weights import build_reference_model

    cfg = load_config([f"model.checkpoint={DEMO_CHECKPOINT}", "out_dir=unused"])
    golden = Golden.from_arrays(read_npz(demo_chain.variant_dir / "reference.npz"))
    model, _ = build_reference_model(cfg.model, spec_of(cfg, next(iter(cfg.plan["variants"]))))
    with torch.no_grad():
        outputs = copy.deepcopy(model).to(torch.bfloat16)(torch.from_numpy(golden.inputs).to(torch.bfloat16))
    bf16 = {name: t.float().numpy() for name, t in zip(("simcc_x", "simcc_y"), outputs)}
    metrics = compare(golden.reference, bf16, cfg.verify.tolerances["fp32"], cfg.verify.min_peak_margin,
                      reference_float32=golden.float32, images=len(golden.crops))
    assert not metrics["passed"]
    first = metrics["breaches"][0]
    assert first.startswith("simcc_x max|Δ| ") and " vs float64 > atol " in first
    assert min(o["needs_error_factor"] for o in metrics["outputs"].values()) > 100
    lines = summary_lines("openvino-fp32 computing in bf16", metrics)
    print("\n".join(lines))
    assert any(line.startswith("FAILED openvino-fp32 computing in bf16 simcc_x max|Δ|") for line in lines)


# --------------------------------------------------------------------------------------------- a supplied ONNX
# Its reference is the graph itself: onnxruntime in float32 and the graph evaluated in float64
# (pipeline/graph/float64.py), so the reference-error rule judges it as it judges a checkpoint.

SUPPLIED = "rtmpose-t-demo-mmdeploy"  # the variant takes the name of the file's folder, as MMDeploy's work dirs
SUPPLIED_TARGETS = ("onnxruntime-fp32", "openvino-fp32", "onnxruntime-fp16", "openvino-fp16")


@pytest.fixture(scope="module")
def supplied_chain(demo_model, tmp_path_factory) -> DemoChain:
    """The demo checkpoint exported as MMDeploy does (opset 11, no metadata) and supplied as the model."""
    root = tmp_path_factory.mktemp("supplied_chain")
    (root / SUPPLIED).mkdir()
    mmdeploy_style_export(demo_model, root / SUPPLIED / "end2end.onnx", dynamic=True)
    overrides = (f"model.checkpoint={root / SUPPLIED / 'end2end.onnx'}", f"targets=[{','.join(SUPPLIED_TARGETS)}]",
                 "benchmark.calls=2", "benchmark.blocks=1", "benchmark.warmup=1", "benchmark.settle_s=0",
                 "benchmark.peers=false", "tune.enabled=false", f"out_dir={root / 'out'}")
    result = run_python("-m", "pipeline", *overrides, cwd=root, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return DemoChain(root / "out", overrides, result, SUPPLIED)


def test_a_supplied_onnx_gets_a_float64_reference_and_its_correct_targets_pass(supplied_chain):
    golden = Golden.from_arrays(read_npz(supplied_chain.variant_dir / "reference.npz"))
    assert golden.float64 is not None and all(v.dtype == np.float64 for v in golden.float64.values())
    for target in SUPPLIED_TARGETS:
        metrics = supplied_chain.metrics(target)
        assert metrics["passed"], (target, metrics["breaches"])
        assert {o["rule"] for o in metrics["outputs"].values()} == {"reference-error"}
        print(target, {name: f"max|Δ| {o['needs_atol'] / o['reference_error']:.3g} × the float32 reference's own, "
                             f"{o['needs_max_error']:.2g} × scale" for name, o in metrics["outputs"].items()})


@pytest.mark.parametrize("target", ["onnxruntime-fp32", "openvino-fp32"])
def test_a_supplied_onnx_whose_artifact_has_one_layer_perturbed_by_one_percent_fails(target, supplied_chain,
                                                                                     tmp_path):
    """Under the output-scale rule, all a supplied ONNX had before, this passed (8.6e-4 x scale < 1e-3)."""
    chain = supplied_chain.copy(tmp_path)
    assert chain.variant == SUPPLIED
    _, metrics, needs = verify_with_one_layer_perturbed(chain, target)
    print(target, "perturbed: needs error_factor", round(needs, 1),
          "max_error", max(o["needs_max_error"] for o in metrics["outputs"].values()))

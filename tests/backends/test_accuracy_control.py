"""openvino-int8 with NNCF accuracy control (`quantize.openvino_max_drift_px`) on the trained demo
checkpoint: the layers that move keypoints most go back to float until the drift on the calibration
crops (NNCF's validation set) is within the budget, and only those; on held-out crops NNCF never saw, the
controlled model drifts less than the all-int8 one (the control generalises, it does not only fit its
validation set)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import REPO_ROOT, VARIANT, golden_inputs

pytestmark = pytest.mark.slow  # NNCF ranks every quantizer: minutes on 2 cores
from pipeline.core.errors import ConfigError
from pipeline.graph.export import export_onnx
from pipeline.inputs.figures import render_batch
from pipeline.inputs.golden import FIGURE_SEED
from pipeline.model.decode import confident_keypoints, simcc_argmax
from pipeline.model.preprocess import normalize
from pipeline.planning.plan import model_config, spec_of
from pipeline.run.configure import load_config
from pipeline.sources.weights import build_reference_model

DEMO_CHECKPOINT = REPO_ROOT / "checkpoints" / f"{VARIANT}_demo.pth"


CALIBRATION_FIGURES, HELD_OUT_FIGURES = 4, 8


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo rtmpose-t as ONNX, its calibration crops (photos and the first figures), and the config
    (nothing kept in float)."""
    cfg = load_config([f"model.checkpoint={DEMO_CHECKPOINT}", "quantize.keep_float=[]"])
    (variant,) = cfg.plan["variants"]
    spec = spec_of(cfg, variant)
    model, info = build_reference_model(model_config(cfg, variant), spec)
    path = tmp_path_factory.mktemp("demo") / "model.onnx"
    export_onnx(model, spec, info, cfg.export, path)
    crops = golden_inputs(spec, num_figures=CALIBRATION_FIGURES, num_random=0, seed=0)
    return cfg, path, crops


@pytest.fixture(scope="module")
def held_out(demo):
    """[8,3,H,W] figure crops NNCF never validates on: the ones after the calibration's (same seed, later indices)."""
    cfg, _, crops = demo
    spec = spec_of(cfg, next(iter(cfg.plan["variants"])))
    images = np.stack([s.image for s in render_batch(FIGURE_SEED, CALIBRATION_FIGURES, HELD_OUT_FIGURES,
                                                      spec.input_hw)])
    inputs = normalize(images, spec.preprocess)
    assert not any(np.array_equal(a, b) for a in inputs for b in crops)
    return inputs


def _quantize(cfg, path, crops):
    import openvino as ov

    from pipeline.backends.interface import SelfCalibration
    from pipeline.backends.openvino import _quantize_int8, _split_ratio

    calibration = SelfCalibration(crops, tuple(cfg.quantize.keep_float), cfg.quantize.openvino_max_drift_px,
                                  cfg.verify.min_peak_margin)
    quantized = _quantize_int8(ov.convert_model(str(path)), calibration, _split_ratio(path))
    quantizers = sum(1 for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize")
    return ov.Core().compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), quantizers


def _drift(compiled, path, crops, min_peak_margin) -> float:
    """Mean drift (px) of the keypoints the float model is confident about (pipeline/check/verify.py's gate)."""
    import openvino as ov

    from pipeline.backends.openvino import _split_ratio

    reference = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    split_ratio = _split_ratio(path)
    drifts = []
    for i in range(len(crops)):
        ref = {k: reference(crops[i:i + 1])[k] for k in ("simcc_x", "simcc_y")}
        ref_kpts, _ = simcc_argmax(ref["simcc_x"], ref["simcc_y"], split_ratio)
        act_kpts, _ = simcc_argmax(*(compiled(crops[i:i + 1])[k] for k in ("simcc_x", "simcc_y")), split_ratio)
        drifts.append(np.linalg.norm(act_kpts - ref_kpts, axis=-1)[confident_keypoints(ref, min_peak_margin)])
    return float(np.mean(np.concatenate(drifts)))


def test_accuracy_control_keeps_float_only_what_the_budget_needs(demo, held_out):
    cfg, path, crops = demo
    margin = cfg.verify.min_peak_margin
    plain, plain_quantizers = _quantize(cfg, path, crops)
    plain_drift = _drift(plain, path, crops, margin)
    assert plain_drift > 0  # all-int8 moves some confident keypoint: there is something to control
    budget = plain_drift / 4
    controlled, controlled_quantizers = _quantize(replace(cfg, quantize=replace(cfg.quantize, openvino_max_drift_px=budget)),
                                            path, crops)
    assert _drift(controlled, path, crops, margin) <= budget  # NNCF's guarantee, on its own validation crops
    assert plain_quantizers / 2 < controlled_quantizers < plain_quantizers  # a few layers went back to float
    # Held-out crops: the layers put back in float reduce the drift on images NNCF never measured, too.
    plain_held_out, controlled_held_out = (_drift(m, path, held_out, margin) for m in (plain, controlled))
    assert controlled_held_out < plain_held_out, (controlled_held_out, plain_held_out)


def test_a_non_positive_budget_is_a_config_error(demo):
    cfg, path, crops = demo
    with pytest.raises(ConfigError, match="openvino_max_drift_px"):
        _quantize(replace(cfg, quantize=replace(cfg.quantize, openvino_max_drift_px=0.0)), path, crops)

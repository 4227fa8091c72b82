"""The optional evaluate stage: COCO keypoint AP of each target vs the PyTorch reference, drop limit, metrics file.

The targets hold the demo checkpoint, trained on procedural figures like the evaluation scenes here: its keypoints
have clear peaks, so fp32 targets land on the reference's keypoints on any CPU."""

from __future__ import annotations

import copy
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from pipeline.check.evaluate import (
    Instance,
    apply_limit,
    coco_results,
    evaluate,
    instance_score,
    keypoint_ap,
    load_dataset,
)
from pipeline.config import EvaluateConfig
from pipeline.core.errors import ConfigError, InputError, VerificationError
from pipeline.inputs.figures import write_coco

from conftest import REPO_ROOT, VARIANT, one_line_error, run_stage
from fp32_artifacts import TARGETS, build_fp32_artifacts, copy_fp32_artifacts, fp32_overrides

pytest.importorskip("pycocotools", reason="the evaluate extra (pycocotools) is not installed")


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    return write_coco(tmp_path_factory.mktemp("eval") / "coco", num_images=8, seed=11, image_size=(384, 288))


def evaluate_settings(dataset_dir: Path, max_ap_drop: float, batch_size: int = 4):
    """`cfg.evaluate` (pipeline/config.py's EvaluateConfig), enabled."""
    return EvaluateConfig(enabled=True, dataset_dir=str(dataset_dir), max_ap_drop=max_ap_drop, batch_size=batch_size)


@pytest.fixture()
def eval_cfg(demo_onnx, tmp_path_factory, tmp_path, coco):
    """The built fp32 artifacts, evaluated into tmp_path (a copy of the shared cfg, so nothing leaks)."""
    cfg = copy.deepcopy(build_fp32_artifacts(demo_onnx, tmp_path_factory.getbasetemp() / "fp32-artifacts"))
    cfg.plan["evaluations"] = {VARIANT: {"evaluate": str(tmp_path / "evaluate" / f"{VARIANT}.json"),
                                         "dataset_dir": str(coco)}}
    return cfg


def test_ground_truth_as_predictions_scores_ap_one(coco):
    """The pycocotools wiring: the labels themselves, as results, must score AP = AR = 1."""
    data, instances = load_dataset(coco, 17)
    assert len(instances) == 8 and instances[0] == Instance(1, coco / "images" / "000000.png", instances[0].box_xyxy)
    by_image = {a["image_id"]: np.array(a["keypoints"], np.float64).reshape(17, 3) for a in data["annotations"]}
    keypoints = np.stack([by_image[i.image_id][:, :2] for i in instances])
    result = keypoint_ap(data, coco_results(instances, keypoints, np.ones((len(instances), 17))))
    assert result["ap"] == pytest.approx(1.0) and result["ar"] == pytest.approx(1.0)
    moved = keypoint_ap(data, coco_results(instances, keypoints + 25.0, np.ones((len(instances), 17))))
    assert moved["ap"] < 0.5


def test_instance_score_follows_mmpose_rescoring():
    assert instance_score(np.array([0.9, 0.5, 0.1, -1.0])) == pytest.approx(0.7)  # scores > 0.2 only
    assert instance_score(np.array([0.1, 0.2])) == 0.0


def test_evaluate_writes_metrics_and_fails_beyond_the_limit(eval_cfg, coco, capsys):
    """A limit of -1 (the target must beat PyTorch by a whole AP) fails; the metrics are written anyway."""
    eval_cfg.evaluate = evaluate_settings(coco, max_ap_drop=-1.0)
    with pytest.raises(VerificationError, match="evaluate.max_ap_drop=-1") as failure:
        evaluate(eval_cfg, VARIANT)
    message = str(failure.value)
    assert "\n" not in message and "evaluate.max_ap_drop=-1" in message and "more target" in message
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith(f"evaluate {VARIANT} on 8 persons in 8 images")
    assert "it/s" not in err, "no progress bar when stderr is not a terminal"

    path = Path(eval_cfg.plan["evaluations"][VARIANT]["evaluate"])
    text = path.read_text()
    metrics = json.loads(text)
    assert text == json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    assert metrics["passed"] is False and len(metrics["breaches"]) == len(TARGETS)
    assert metrics["dataset"]["instances"] == 8 and metrics["reference"]["weights_source"] == "demo"
    assert 0.0 <= metrics["reference"]["ap"] <= 1.0
    assert set(metrics["targets"]) == set(TARGETS)
    for result in metrics["targets"].values():
        assert 0.0 <= result["ap"] <= 1.0 and result["passed"] is False
        assert result["ap_drop"] == pytest.approx(metrics["reference"]["ap"] - result["ap"])
        assert result["mean_drift_px"] < 1.0, "fp32 targets land on the reference's keypoints"

    assert apply_limit(metrics, 1.0) == [] and metrics["passed"] is True


def test_apply_limit_compares_the_drop():
    metrics = {"variant": VARIANT, "reference": {"ap": 0.70, "weights_source": "checkpoint"},
               "targets": {"openvino-int8": {"ap": 0.66, "ap_drop": 0.04},
                           "openvino-fp16": {"ap": 0.699, "ap_drop": 0.001}}}
    (breach,) = apply_limit(metrics, 0.02)
    assert breach.startswith(f"{VARIANT}.openvino-int8 keypoint AP 0.6600 is 0.0400 below the PyTorch reference")
    assert metrics["targets"]["openvino-fp16"]["passed"] and not metrics["passed"]


def test_static_batch_models_get_padded_batches(coco):
    """A model with a fixed batch of 3 sees only full batches; each of the 8 boxes is decoded once, in order."""
    from pipeline.check.evaluate import predict
    from pipeline.model.presets import preset_spec

    _, instances = load_dataset(coco, 17)
    seen, advanced = [], []

    def forward(batch):
        assert batch.shape == (3, 3, 256, 192)
        seen.append(batch)
        simcc_x, simcc_y = np.zeros((3, 17, 384), np.float32), np.zeros((3, 17, 512), np.float32)
        simcc_x[:, :, 192] = simcc_y[:, :, 256] = 1.0  # every keypoint at the crop centre
        return {"simcc_x": simcc_x, "simcc_y": simcc_y}

    keypoints, scores = predict(forward, instances, preset_spec(VARIANT), 8, 3, advanced.append)
    assert len(seen) == 3 and not seen[-1][2].any(), "the last batch is padded with zeros"
    assert keypoints.shape == (8, 17, 2) and scores.shape == (8, 17) and advanced == list(range(8))
    centres = np.array([[(x1 + x2) / 2, (y1 + y2) / 2] for x1, y1, x2, y2 in (i.box_xyxy for i in instances)])
    np.testing.assert_allclose(keypoints[:, 0], centres, atol=1e-6)


def test_bad_inputs_name_the_key(eval_cfg, tmp_path):
    eval_cfg.evaluate = evaluate_settings(tmp_path / "nowhere", max_ap_drop=0.01)
    with pytest.raises(InputError, match="evaluate.dataset_dir=.*annotations.json"):
        evaluate(eval_cfg, VARIANT)
    eval_cfg.plan["evaluations"] = {}
    with pytest.raises(ConfigError, match="evaluate.enabled=true"):
        evaluate(eval_cfg, VARIANT)


def test_stage_script_composes_and_fails_with_one_line(demo_onnx, tmp_path_factory, coco, tmp_path):
    shared = build_fp32_artifacts(demo_onnx, tmp_path_factory.getbasetemp() / "fp32-artifacts")
    out_dir = Path(copy_fp32_artifacts(shared, tmp_path).out_dir)  # the stage writes its metrics beside them
    assert {f.name for f in fields(EvaluateConfig)} >= {"enabled", "dataset_dir", "max_ap_drop", "batch_size"}
    result = run_stage("evaluate", VARIANT, *fp32_overrides(out_dir), "evaluate.enabled=true",
                       f"evaluate.dataset_dir={coco}", "evaluate.max_ap_drop=-1", cwd=tmp_path)
    assert "keypoint AP" in one_line_error(result)
    assert (out_dir / "evaluate" / f"{VARIANT}.json").is_file()
    assert REPO_ROOT.joinpath("stages", "evaluate.py").is_file()

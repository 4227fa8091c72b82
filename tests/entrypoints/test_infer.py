"""`python -m pipeline.infer`: artifact directories and bare files, mmpose preprocessing and decode, errors.

The artifacts hold the demo checkpoint (a trained model with clear SimCC peaks); keypoints of two runtimes are
compared where the reference's argmax is unambiguous (conftest.unambiguous_keypoints), which holds on any CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from pipeline.core.errors import InputError
from pipeline.infer import draw_pose, estimate, main, open_artifact
from pipeline.model.keypoints import COCO17, COCO17_SKELETON
from pipeline.model.preprocess import load_rgb

from conftest import REPO_ROOT, VARIANT, run_python
from fp32_artifacts import BOX, IMAGE, TARGETS, artifact_dir, build_fp32_artifacts, reference_pose


@pytest.fixture(scope="module")
def built(demo_onnx, tmp_path_factory):
    return build_fp32_artifacts(demo_onnx, tmp_path_factory.getbasetemp() / "fp32-artifacts")


def run_main(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.mark.parametrize("target", TARGETS)
def test_artifact_dir_matches_pytorch(built, demo_model, target):
    artifact = open_artifact(artifact_dir(built, target), built)
    assert (artifact.target.name, artifact.spec.name) == (target, VARIANT)
    keypoints, scores = estimate(artifact, load_rgb(IMAGE), BOX)
    ref_keypoints, ref_scores, same = reference_pose(demo_model)
    assert keypoints.shape == (17, 2) and scores.shape == (17,)
    np.testing.assert_allclose(keypoints[same], ref_keypoints[same], atol=1e-6)  # the same bins
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)


def test_cli_prints_json_and_draws(built, demo_model, tmp_path):
    """The command users type, as a subprocess: JSON on stdout, the drawing on disk."""
    saved = tmp_path / "pose.png"
    result = run_python("-m", "pipeline.infer", str(artifact_dir(built, "openvino-fp32")), str(IMAGE),
                        "--box", *(str(v) for v in BOX), "--save", str(saved), "--min-score", "-100",
                        cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    pose = json.loads(result.stdout)
    assert list(pose) == ["variant", "target", "box", "keypoints", "scores", "keypoint_names"]
    assert (pose["variant"], pose["target"], pose["box"]) == (VARIANT, "openvino-fp32", list(BOX))
    assert pose["keypoint_names"] == list(COCO17)
    ref_keypoints, ref_scores, same = reference_pose(demo_model)
    np.testing.assert_allclose(np.array(pose["keypoints"])[same], ref_keypoints[same], atol=1e-3)
    np.testing.assert_allclose(pose["scores"], ref_scores, atol=1e-4)
    drawing, image = cv2.imread(str(saved)), cv2.imread(str(IMAGE))
    assert drawing.shape == image.shape and not np.array_equal(drawing, image)


def test_default_box_is_the_whole_image(built, demo_model, capsys):
    code, pose, _ = run_main(capsys, artifact_dir(built, "onnxruntime-fp32"), IMAGE)
    assert code == 0
    h, w = load_rgb(IMAGE).shape[:2]
    assert pose["box"] == [0.0, 0.0, float(w), float(h)]
    ref_keypoints, _, same = reference_pose(demo_model, (0, 0, w, h))
    np.testing.assert_allclose(np.array(pose["keypoints"])[same], ref_keypoints[same], atol=1e-3)


def test_bare_files_under_any_name(built, demo_model, tmp_path, capsys):
    """A bare .onnx runs on onnxruntime, a bare .xml (+ .bin) on openvino; the variant is read from the file."""
    onnx_file = tmp_path / "end2end.onnx"
    shutil.copyfile(artifact_dir(built, "onnxruntime-fp32") / "model.onnx", onnx_file)
    ir_dir = tmp_path / "ir"
    ir_dir.mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copyfile(artifact_dir(built, "openvino-fp32") / f"model{suffix}", ir_dir / f"pose{suffix}")
    poses = {}
    for path in (onnx_file, ir_dir / "pose.xml", ir_dir):
        code, poses[path], err = run_main(capsys, path, IMAGE, "--box", *BOX)
        assert code == 0, err
        assert poses[path]["variant"] == VARIANT
    assert poses[onnx_file]["target"] == "onnxruntime-fp32"
    assert poses[ir_dir / "pose.xml"]["target"] == poses[ir_dir]["target"] == "openvino-fp32"
    same = reference_pose(demo_model)[2]
    np.testing.assert_allclose(np.array(poses[onnx_file]["keypoints"])[same], np.array(poses[ir_dir]["keypoints"])[same],
                               atol=1e-3)


def test_model_file_inside_an_artifact_dir_uses_its_artifact_json(built, capsys):
    code, pose, _ = run_main(capsys, artifact_dir(built, "openvino-fp32") / "model.xml", IMAGE)
    assert code == 0 and pose["target"] == "openvino-fp32"


@pytest.fixture(scope="module")
def no_metadata_onnx(built, tmp_path_factory) -> Path:
    proto = onnx.load(str(artifact_dir(built, "onnxruntime-fp32") / "model.onnx"))
    del proto.metadata_props[:]
    path = tmp_path_factory.mktemp("bare") / "anonymous.onnx"
    onnx.save_model(proto, str(path))
    return path


def test_model_flag_names_an_onnx_that_records_nothing(no_metadata_onnx, capsys):
    code, anonymous, err = run_main(capsys, no_metadata_onnx, IMAGE)  # described by its I/O alone
    assert code == 0, err
    assert anonymous["variant"] == "anonymous" and anonymous["keypoint_names"] == [f"kpt_{i}" for i in range(17)]
    code, pose, _ = run_main(capsys, no_metadata_onnx, IMAGE, "--model", VARIANT)
    assert code == 0 and pose["variant"] == VARIANT and pose["keypoint_names"] == list(COCO17)
    assert pose["keypoints"] == anonymous["keypoints"]


def _bad_onnx(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    return tmp_path / "broken.onnx", IMAGE, []


def _no_image(tmp_path):
    return None, tmp_path / "missing.png", []


def _not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    return None, tmp_path / "notes.png", []


def _engine_without_tensorrt(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    (tmp_path / "model.engine").write_bytes(b"\0")
    return tmp_path / "model.engine", IMAGE, []


@pytest.mark.parametrize("case, message", [
    (_no_image, "cannot read image"),
    (_not_an_image, "not a decodable image"),
    (_bad_onnx, "not a readable ONNX model"),
    (_engine_without_tensorrt, "needs the Python package 'tensorrt'"),
    (lambda tmp: (tmp / "model.tflite", IMAGE, []), "does not exist"),
    (lambda tmp: (None, IMAGE, ["--box", 10, 10, 5, 50]), "is empty"),
    (lambda tmp: (None, IMAGE, ["--model", "rtmpose-t_coco17_384x288"]), "not --model rtmpose-t_coco17_384x288"),
    (lambda tmp: (None, IMAGE, ["--model", "rtmpose-q_coco17_256x192"]), "unknown scale 'q'"),
    (lambda tmp: (None, IMAGE, ["--save", tmp / "missing-dir" / "out.png"]), "cannot write --save"),
])
def test_errors_are_one_line(built, tmp_path, capsys, case, message):
    artifact, image, extra = case(tmp_path)
    code, _, err = run_main(capsys, artifact or artifact_dir(built, "onnxruntime-fp32"), image, *extra)
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_a_model_flag_that_contradicts_the_file_names_both(no_metadata_onnx, capsys):
    code, _, err = run_main(capsys, no_metadata_onnx, IMAGE, "--model", "rtmpose-t_coco17_384x288")
    assert code == 1 and "17 keypoints at 192x256" in err and "384x288" in err and err.count("\n") == 1
    code, _, err = run_main(capsys, no_metadata_onnx, IMAGE, "--model", "rtmpose-t_halpe26_256x192")
    assert code == 1 and "17 keypoints" in err and "halpe26" in err


def test_unknown_file_type_is_refused(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(InputError, match="unknown model file type"):
        open_artifact(tmp_path / "weights.pt", None)


def test_a_bare_model_file_is_staged_under_its_backends_file_names(tmp_path):
    """A bare ncnn file under another name: the weights of its stem and io.json are linked under the names its
    Runner opens (the backend's FILES), io.json says the precision, and a missing companion is named."""
    from pipeline.infer import _bare_precision, _stage_files

    bare, staging = tmp_path / "bare", tmp_path / "staging"
    bare.mkdir()
    staging.mkdir()
    (bare / "pose.param").write_text("param")
    (bare / "pose.bin").write_text("bin")
    (bare / "io.json").write_text(json.dumps({"weights": "fp16"}))
    assert _stage_files(bare / "pose.param", "ncnn", staging) == staging
    linked = {"model.ncnn.param": "pose.param", "model.ncnn.bin": "pose.bin", "io.json": "io.json"}
    assert {p.name: p.resolve() for p in staging.iterdir()} == {k: (bare / v).resolve() for k, v in linked.items()}
    assert _bare_precision(bare / "pose.param", "ncnn") == "fp16"
    assert _bare_precision(bare / "pose.onnx", "onnxruntime") == "fp32"  # nothing beside an ONNX records it
    (bare / "io.json").unlink()
    with pytest.raises(InputError, match="needs io.json beside it"):
        _stage_files(bare / "pose.param", "ncnn", staging)


def test_draw_pose_draws_limbs_only_between_confident_points():
    image = np.zeros((100, 100, 3), np.uint8)
    keypoints = np.array([[10.0 + 4 * i, 10.0 + 4 * i] for i in range(17)])
    confident = draw_pose(image, keypoints, np.ones(17), COCO17_SKELETON, (0, 0, 99, 99))
    doubtful = draw_pose(image, keypoints, np.zeros(17), COCO17_SKELETON, (0, 0, 99, 99))
    assert not image.any(), "the input is not drawn on"
    assert np.count_nonzero(confident) > np.count_nonzero(doubtful) > 0  # the box is always drawn
    points_only = draw_pose(image, keypoints[:5], np.ones(5), (), (0, 0, 99, 99))  # a set without a skeleton
    assert np.count_nonzero(points_only) < np.count_nonzero(confident)

"""MMDeploy SDK files beside each artifact and the rtmlib zip: fields, determinism, and loading them as consumers do."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.backends import Target
from pipeline.core.errors import InputError
from pipeline.infer import estimate, open_artifact
from pipeline.inputs.golden import DATA_DIR
from pipeline.model.preprocess import crop, load_rgb, normalize
from pipeline.model.presets import preset_spec
from pipeline.model.spec import PreprocessSpec
from pipeline.package.dropin import RTMLIB_ONNX, RTMLIB_ZIP, write_dropin
from pipeline.sources.sdk import SDK_FILES

from conftest import VARIANT, photo_inputs
from fp32_artifacts import TARGETS, artifact_dir, build_fp32_artifacts, copy_fp32_artifacts, reference_pose

BOX = [20, 10, 370, 512]


@pytest.fixture(scope="module")
def built(demo_onnx, tmp_path_factory):
    """The drop-in files written beside a copy of the shared fp32 artifacts (tests/fp32_artifacts.py)."""
    shared = build_fp32_artifacts(demo_onnx, tmp_path_factory.getbasetemp() / "fp32-artifacts")
    cfg = copy_fp32_artifacts(shared, tmp_path_factory.mktemp("dropin"))
    for target in TARGETS:
        meta = json.loads((artifact_dir(cfg, target) / "artifact.json").read_text())
        write_dropin(artifact_dir(cfg, target), target, meta["variant"], meta["onnx_metadata"])
    return cfg


def read(directory: Path, name: str) -> dict:
    return json.loads((directory / name).read_text())


@pytest.fixture(scope="module")
def extracted(built, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rtmlib")
    with zipfile.ZipFile(artifact_dir(built, "onnxruntime-fp32") / RTMLIB_ZIP) as archive:
        archive.extractall(out)
    return out


@pytest.mark.parametrize("target, backend, net, weights, precision", [
    ("onnxruntime-fp32", "onnxruntime", "model.onnx", "", "FP32"),
    ("openvino-fp32", "openvino", "model.xml", "model.bin", "FP32"),
])
def test_deploy_json_names_backend_precision_and_files(built, target, backend, net, weights, precision):
    directory = artifact_dir(built, target)
    deploy = read(directory, "deploy.json")
    assert deploy["task"] == "PoseDetector" and deploy["customs"] == []
    (model,) = deploy["models"]
    assert (model["backend"], model["net"], model["weights"], model["precision"]) == (backend, net, weights, precision)
    assert model["name"] == "topdownposeestimator" and model["batch_size"] == 1 and model["dynamic_shape"] is True
    assert (directory / net).is_file() and (not weights or (directory / weights).is_file())


@pytest.mark.parametrize("target", TARGETS)
def test_pipeline_json_preprocessing_and_decode(built, target):
    tasks = read(artifact_dir(built, target), "pipeline.json")["pipeline"]["tasks"]
    assert [t["module"] for t in tasks] == ["Transform", "Net", "mmpose"]
    transforms = {t["type"]: t for t in tasks[0]["transforms"]}
    assert list(transforms) == ["LoadImageFromFile", "TopDownGetBboxCenterScale", "TopDownAffine", "Normalize",
                                "ImageToTensor", "Collect"]
    assert transforms["TopDownGetBboxCenterScale"]["padding"] == 1.25
    assert transforms["TopDownAffine"]["image_size"] == [192, 256], "sizes are (W, H)"
    normalize = transforms["Normalize"]
    assert (normalize["mean"], normalize["std"], normalize["to_rgb"]) == (list(PreprocessSpec().mean), list(PreprocessSpec().std), True)
    assert tasks[1]["input_map"] == {"img": "input"} and tasks[1]["output_map"] == {}
    decode = tasks[2]
    assert decode["component"] == "SimCCLabelDecode"
    assert decode["params"]["simcc_split_ratio"] == 2.0 and decode["params"]["input_size"] == [192, 256]
    assert decode["input"] == ["prep_output", "infer_output"] and decode["output"] == ["post_output"]


@pytest.mark.parametrize("target", TARGETS)
def test_detail_json_records_io_and_opset(built, target):
    detail = read(artifact_dir(built, target), "detail.json")
    assert detail["codebase"]["codebase"] == "mmpose" and detail["codebase"]["task"] == "PoseDetection"
    onnx_config = detail["onnx_config"]
    assert onnx_config["input_names"] == ["input"] and onnx_config["output_names"] == ["simcc_x", "simcc_y"]
    assert onnx_config["input_shape"] == [192, 256] and onnx_config["dynamic_axes"]["input"] == {"0": "batch"}
    assert detail["backend_config"]["type"] == target.split("-")[0]
    assert detail["rtmpose_pipeline"]["variant"] == VARIANT
    if target.startswith("onnxruntime"):
        assert onnx_config["opset_version"] == 17


def test_only_onnx_artifacts_get_an_rtmlib_zip(built):
    assert (artifact_dir(built, "onnxruntime-fp32") / RTMLIB_ZIP).is_file()
    assert not (artifact_dir(built, "openvino-fp32") / RTMLIB_ZIP).exists()


def test_zip_holds_end2end_onnx_and_is_deterministic(built, tmp_path):
    directory = artifact_dir(built, "onnxruntime-fp32")
    first = (directory / RTMLIB_ZIP).read_bytes()
    meta = json.loads((directory / "artifact.json").read_text())
    write_dropin(directory, "onnxruntime-fp32", VARIANT, meta["onnx_metadata"])
    assert (directory / RTMLIB_ZIP).read_bytes() == first
    with zipfile.ZipFile(directory / RTMLIB_ZIP) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == sorted([RTMLIB_ONNX, *SDK_FILES])
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert archive.read(RTMLIB_ONNX) == (directory / "model.onnx").read_bytes()
        assert json.loads(archive.read("deploy.json"))["models"][0]["net"] == RTMLIB_ONNX
        assert json.loads(archive.read("detail.json"))["onnx_config"]["save_file"] == RTMLIB_ONNX


def test_zip_loads_as_rtmlib_loads_it(built, extracted):
    """rtmlib: onnxruntime session, the first input, outputs by position (simcc_x, then simcc_y)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(extracted / RTMLIB_ONNX), providers=["CPUExecutionProvider"])
    crops = photo_inputs(preset_spec(VARIANT))[:1]
    simcc_x, simcc_y = session.run([o.name for o in session.get_outputs()], {session.get_inputs()[0].name: crops})
    assert simcc_x.shape == (1, 17, 384) and simcc_y.shape == (1, 17, 512)
    artifact = open_artifact(artifact_dir(built, "onnxruntime-fp32"), built)
    expected = artifact.runner({"input": crops})
    np.testing.assert_array_equal(simcc_x, expected["simcc_x"])
    np.testing.assert_array_equal(simcc_y, expected["simcc_y"])


def test_rtmlib_pose_matches_pipeline_infer(built, extracted, demo_model):
    """rtmlib's own RTMPose on the extracted model agrees with `pipeline.infer`.

    Read from rtmlib 0.0.16's source: its crop is the same padded, aspect-fixed affine warp (cv2, bilinear)
    and gives identical pixels here; it normalises in float64 where we use float32 (|Δ| ≤ 3e-7 per input);
    it maps keypoints back with center/scale arithmetic instead of the inverse matrix; and its score is the
    *mean* of the two SimCC maxima where mmpose (and we) take the *min*. rtmlib also normalises the array as
    given, with no BGR->RGB swap, so it is handed RGB here, as the model was trained. So: keypoints agree
    closely (not bit for bit) wherever the argmax is unambiguous, scores differ by design.
    """
    rtmlib = pytest.importorskip("rtmlib")
    image = load_rgb(DATA_DIR / "astronaut.png")
    body = rtmlib.RTMPose(onnx_model=str(extracted / RTMLIB_ONNX), model_input_size=(192, 256),
                          backend="onnxruntime", device="cpu")
    keypoints, scores = body(image, bboxes=[BOX])
    assert keypoints.shape == (1, 17, 2) and scores.shape == (1, 17)
    ours, our_scores = estimate(open_artifact(artifact_dir(built, "onnxruntime-fp32"), built), image, BOX)
    same = reference_pose(demo_model, tuple(BOX))[2]
    np.testing.assert_allclose(keypoints[0][same], ours[same], atol=1e-3)
    assert np.all(scores[0] >= our_scores - 1e-5), "rtmlib's mean of the maxima is at least mmpose's min"
    patch, _ = crop(image, BOX, (256, 192))
    outputs = open_artifact(artifact_dir(built, "onnxruntime-fp32"), built).runner({"input": normalize(patch)[None]})
    np.testing.assert_allclose(scores[0], 0.5 * (outputs["simcc_x"].max(-1) + outputs["simcc_y"].max(-1))[0], atol=1e-4)


def test_mmdeploy_sdk_loads_the_directory(built):
    """MMDeploy's SDK (`mmdeploy-runtime`, ONNX Runtime build) runs the artifact directory as it is.

    Not bit-equal to `pipeline.infer`: the SDK takes box widths as right - left + 1 and crops an
    integer-rounded ROI (csrc/mmdeploy/codebase/mmpose/topdown_affine.cpp, CropResizePad) where mmpose warps
    exactly; with mmdeploy-runtime 1.3.1 a reimplementation of that arithmetic matched the SDK to 1e-4 px,
    and it moves keypoints by up to ~2.5 px on this box. Its wheel needs numpy < 2, so it usually lives in
    another environment than this one.
    """
    mmdeploy_runtime = pytest.importorskip("mmdeploy_runtime")
    import cv2

    detector = mmdeploy_runtime.PoseDetector(model_path=str(artifact_dir(built, "onnxruntime-fp32")),
                                             device_name="cpu", device_id=0)
    poses = np.asarray(detector(cv2.imread(str(DATA_DIR / "astronaut.png")), [BOX]))
    assert poses.shape == (1, 17, 3)
    ours, our_scores = estimate(open_artifact(artifact_dir(built, "onnxruntime-fp32"), built),
                                load_rgb(DATA_DIR / "astronaut.png"), BOX)
    np.testing.assert_allclose(poses[0, :, :2], ours, atol=3.0)
    np.testing.assert_allclose(poses[0, :, 2], our_scores, atol=0.05)


def test_ncnn_maps_pnnx_blob_names(tmp_path):
    """pnnx names blobs in0/out0/out1; the SDK must be pointed at them (from io.json)."""
    for name in ("model.ncnn.param", "model.ncnn.bin"):
        (tmp_path / name).write_bytes(b"")
    io = {"inputs": {"input": {"blob": "in0", "shape": [-1, 3, 256, 192]}},
          "outputs": {"simcc_x": {"blob": "out0", "shape": [-1, 17, 384]},
                      "simcc_y": {"blob": "out1", "shape": [-1, 17, 512]}}, "weights": "fp16"}
    (tmp_path / "io.json").write_text(json.dumps(io))
    written = write_dropin(tmp_path, Target("ncnn", "fp16"), VARIANT, {"variant": VARIANT, "dynamic_batch": "true"})
    assert [p.name for p in written] == sorted(SDK_FILES)
    (model,) = read(tmp_path, "deploy.json")["models"]
    assert (model["backend"], model["net"], model["weights"], model["precision"]) == (
        "ncnn", "model.ncnn.param", "model.ncnn.bin", "FP16")
    assert model["dynamic_shape"] is False
    net = read(tmp_path, "pipeline.json")["pipeline"]["tasks"][1]
    assert net["input_map"] == {"img": "in0"} and net["output_map"] == {"simcc_x": "out0", "simcc_y": "out1"}


def test_tensorrt_engine(tmp_path):
    (tmp_path / "model.engine").write_bytes(b"")
    write_dropin(tmp_path, Target("tensorrt", "int8"), VARIANT, {"dynamic_batch": "true"})
    (model,) = read(tmp_path, "deploy.json")["models"]
    assert (model["backend"], model["net"], model["weights"], model["precision"]) == (
        "tensorrt", "model.engine", "", "INT8")


def test_refuses_a_missing_model_or_another_variant(tmp_path):
    with pytest.raises(InputError, match="has no model.xml"):
        write_dropin(tmp_path, "openvino-fp16", VARIANT, {})
    (tmp_path / "model.engine").write_bytes(b"")
    with pytest.raises(InputError, match="rtmpose-s_coco17_256x192"):
        write_dropin(tmp_path, Target("tensorrt", "fp16"), VARIANT, {"variant": "rtmpose-s_coco17_256x192"})


def test_no_rtmlib_zip_at_a_split_ratio_rtmlib_cannot_decode(tmp_path):
    """rtmlib decodes at a fixed split ratio 2.0 (mmdeploy#2696): a ratio-3 model ships no rtmlib.zip, says why,
    and its SDK pipeline.json carries its own ratio."""
    import dataclasses

    import onnx
    from onnx import TensorProto, helper

    from pipeline.package.dropin import not_shipped

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["simcc_x"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 256, 192])],
                              [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 3, 256, 192])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "model.onnx")
    preset = preset_spec(VARIANT)
    spec = dataclasses.replace(preset, codec=dataclasses.replace(preset.codec, simcc_split_ratio=3.0))
    target = Target("onnxruntime", "fp32")
    written = write_dropin(tmp_path, target, spec, {})
    assert [p.name for p in written] == sorted(SDK_FILES) and not (tmp_path / RTMLIB_ZIP).exists()
    assert not_shipped(target, spec) == {RTMLIB_ZIP: "rtmlib decodes at split ratio 2.0; this model's is 3.0"}
    assert read(tmp_path, "pipeline.json")["pipeline"]["tasks"][2]["params"]["simcc_split_ratio"] == 3.0
    assert not_shipped(target, preset) == {} and not_shipped(Target("openvino", "fp32"), spec) == {}

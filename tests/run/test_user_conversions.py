"""Users' files through the whole chain: `python -m pipeline model.checkpoint=<file>` and nothing else.

Files made by mmpose 1.3.2 itself (tests/mmpose_files.py) with logits of several hundred, and ONNX
files in the forms other exporters write them (MMDeploy: opset 11, dynamic batch, K left symbolic;
a fixed batch of 1, as DWPose's and many released files). Every fp32 target is built and must pass
verification: the artifact equals the source model within what float32 allows.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from pipeline.model.rtmpose import build_network

from conftest import REPO_ROOT, run_python
from mmpose_files import KINDS

pytestmark = pytest.mark.slow  # a whole chain per file (a minute or two each)

FP32 = ("onnxruntime-fp32", "openvino-fp32", "ncnn-fp32")


def convert(tmp_path: Path, checkpoint: Path, *extra: str) -> tuple[str, dict]:
    """Run the chain from a scratch directory; (the model's name, {target: metrics})."""
    result = run_python("-m", "pipeline", f"model.checkpoint={checkpoint}", f"targets=[{','.join(FP32)}]",
                        "benchmark.calls=2", "benchmark.blocks=1", "benchmark.warmup=1", "benchmark.settle_s=0",
                        "benchmark.peers=false", "tune.enabled=false", "hydra.run.dir=hydra", *extra,
                        cwd=tmp_path, timeout=1800, env={"PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (name,) = [p.name for p in (tmp_path / "artifacts").iterdir() if (p / "reference.npz").is_file()]
    metrics = {t: json.loads((tmp_path / "artifacts" / name / "metrics" / f"{t}.json").read_text()) for t in FP32}
    return name, metrics


def assert_fp32_equals_the_source(metrics: dict) -> None:
    for target, m in metrics.items():
        assert m["passed"], (target, m["breaches"])
        for name, output in m["outputs"].items():
            assert output["cosine"] > 0.999999, (target, name)


@pytest.mark.parametrize("kind", ["rtmpose-m_hand21_256x256", "rtmpose-m_custom38_256x192",
                                  "rtmpose-m_coco17_320x240", "rtmw-m_wholebody133_256x192",
                                  "rtmpose-m_lapa106_256x256", "dwpose-l_wholebody133_256x192"])
def test_an_mmpose_file_converts_from_the_file_alone(kind, mmpose_files, tmp_path):
    path = mmpose_files.path(kind, "publish")
    name, metrics = convert(tmp_path, path)
    assert_fp32_equals_the_source(metrics)
    # large logits: the gate is the reference's own float32 error, not a fixed atol
    assert max(m["outputs"]["simcc_x"]["scale"] for m in metrics.values()) > 100
    assert {m["rule"] for m in metrics.values()} == {"reference-error"}
    manifest = json.loads((tmp_path / "artifacts" / "release" / name / "manifest.json").read_text())
    assert sorted(manifest["targets"]) == sorted(FP32)
    assert len(manifest["keypoint_names"]) == KINDS[kind].num_keypoints


def test_a_training_checkpoint_converts_without_mmengine_code(mmpose_files, tmp_path):
    path = mmpose_files.path("rtmpose-s_coco17_256x192", "train")
    name, metrics = convert(tmp_path, path)
    assert name == "rtmpose-s_8xb256-420e_coco-256x192"
    assert_fp32_equals_the_source(metrics)


def mmdeploy_style_onnx(path: Path, dynamic: bool) -> Path:
    """rtmpose-t exported as MMDeploy's torch2onnx does (opset 11, K symbolic) or with a fixed batch of 1."""
    from pipeline.model.presets import preset_spec
    from pipeline.model.synthetic import synthetic_state_dict

    spec = preset_spec("rtmpose-t_coco17_256x192")
    model = build_network(spec).eval()
    model.load_state_dict(synthetic_state_dict(spec, 3))
    axes = {n: {0: "batch"} for n in ("input", "simcc_x", "simcc_y")} if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 256, 192),), str(path), dynamo=False, opset_version=11,
                          input_names=["input"], output_names=["simcc_x", "simcc_y"], dynamic_axes=axes)
    return path


@pytest.mark.parametrize("dynamic", [True, False], ids=["symbolic-keypoints", "static-batch-1"])
def test_an_onnx_of_another_exporter_converts_with_itself_as_reference(dynamic, tmp_path):
    folder = tmp_path / "rtmpose-t-mmdeploy"
    folder.mkdir()
    path = mmdeploy_style_onnx(folder / "end2end.onnx", dynamic)
    name, metrics = convert(tmp_path, path)
    assert name == "rtmpose-t-mmdeploy"
    assert_fp32_equals_the_source(metrics)
    assert {m["rule"] for m in metrics.values()} == {"reference-error"}  # the graph itself in float64


def test_an_mmpose_rtmpose_m_converts_to_ncnn_int8_and_is_judged_by_the_gate(mmpose_files, tmp_path):
    """ncnn-int8 of another scale, keypoint set and input size (rtmpose-m hand21 256x256), from the file alone: the
    project calibrates and writes it, verify judges it. These weights are mmpose's seeded, untrained ones (logits
    of several hundred, keypoints that no calibration on person crops represents), so the measured verdict here is
    a failure, as for onnxruntime-int8 (cosine 0.43-0.50): one line naming the breached figure, nothing shipped."""
    path = mmpose_files.path("rtmpose-m_hand21_256x256", "publish")
    result = run_python("-m", "pipeline", f"model.checkpoint={path}", "targets=[ncnn-int8]", "tune.enabled=false",
                        "benchmark.peers=false", "benchmark.calls=2", "benchmark.blocks=1", "benchmark.warmup=1",
                        "hydra.run.dir=hydra", cwd=tmp_path, timeout=1800, env={"PYTHONPATH": str(REPO_ROOT)})
    name = "rtmpose-m_8xb256-210e_hand5-256x256"
    shown = result.stdout[-2500:] + result.stderr[-1500:]  # what a failing assertion below prints
    artifact = tmp_path / "artifacts" / name / "ncnn-int8"
    assert (artifact / "io.json").is_file(), shown
    io = json.loads((artifact / "io.json").read_text())
    assert io["weights"] == "int8" and io["int8"]["layers"] > 50  # rtmpose-m: every conv and linear outside the head
    metrics = json.loads((tmp_path / "artifacts" / name / "metrics" / "ncnn-int8.json").read_text())
    assert metrics["runtime_settings"]["execution_precision"]["int8"] == io["int8"]["layers"]
    summary = [line for line in result.stdout.splitlines() if line.startswith(f"{name}.ncnn-int8 ")]
    assert len(summary) == 1, shown
    if metrics["passed"]:
        assert result.returncode == 0 and summary[0].split()[-1] == "passed", shown
    else:
        assert result.returncode != 0 and "Traceback" not in result.stderr, shown
        assert re.search(r"failed verification: simcc_[xy] (max\|Δ\||cosine|rms)", summary[0]), shown
        manifest = json.loads((tmp_path / "artifacts" / "release" / name / "manifest.json").read_text())
        assert "ncnn-int8" in manifest["withheld"]


@pytest.mark.parametrize("keep_io_types", [True, False], ids=["float32-io", "fp16-io"])
def test_an_fp16_onnx_converts_in_its_float32_form(keep_io_types, tmp_path):
    """An fp16 file as onnxconverter-common writes it (rknn-toolkit2#236) is used in its float32 form: the fp16
    pass runs once, OpenVINO gets the standard I/O names, and every target passes against the file itself."""
    float16 = pytest.importorskip("onnxconverter_common.float16", reason="onnxconverter-common (dev extra) is absent")
    import onnx

    folder = tmp_path / "rtmpose-t-fp16"
    folder.mkdir()
    source = onnx.load(str(mmdeploy_style_onnx(folder / "fp32.onnx", dynamic=True)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(float16.convert_float_to_float16(source, keep_io_types=keep_io_types), str(folder / "end2end.onnx"))
    targets = ("onnxruntime-fp32", "onnxruntime-fp16", "openvino-fp32")
    result = run_python("-m", "pipeline", f"model.checkpoint={folder / 'end2end.onnx'}",
                        f"targets=[{','.join(targets)}]",
                        "benchmark.calls=2", "benchmark.blocks=1", "benchmark.warmup=1", "benchmark.settle_s=0",
                        "benchmark.peers=false", "tune.enabled=false", "hydra.run.dir=hydra",
                        cwd=tmp_path, timeout=1800, env={"PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    metrics_dir = tmp_path / "artifacts" / "rtmpose-t-fp16" / "metrics"
    metrics = {t: json.loads((metrics_dir / f"{t}.json").read_text()) for t in targets}
    assert all(m["passed"] for m in metrics.values()), {t: m["breaches"] for t, m in metrics.items()}
    assert_fp32_equals_the_source({t: m for t, m in metrics.items() if t.endswith("fp32")})


def test_a_split_ratio_3_file_converts_from_the_file_alone_and_ships_no_rtmlib_zip(mmpose_files, tmp_path):
    """mmdeploy#2696: codec and head at simcc_split_ratio 3.0 in meta.cfg. The file alone converts; the released
    ONNX decodes (at the spec's ratio) to mmpose's own decode of mmpose's logits; rtmlib, whose decode is fixed at
    2.0, gets no zip, and the manifest says why."""
    import numpy as np
    import onnxruntime as ort

    from pipeline.model.decode import decode_simcc
    from mmpose_files import photo_crops

    path = mmpose_files.path("rtmpose-m_coco17_256x192-ratio3", "publish")
    result = run_python("-m", "pipeline", f"model.checkpoint={path}", "targets=[onnxruntime-fp32]",
                        "benchmark.calls=2", "benchmark.blocks=1", "benchmark.warmup=1", "benchmark.settle_s=0",
                        "benchmark.peers=false", "tune.enabled=false", "hydra.run.dir=hydra",
                        cwd=tmp_path, timeout=1800, env={"PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (name,) = [p.name for p in (tmp_path / "artifacts" / "release").iterdir()]
    release = tmp_path / "artifacts" / "release" / name
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["model"]["codec"]["simcc_split_ratio"] == 3.0
    shipped = manifest["targets"]["onnxruntime-fp32"]
    assert shipped["not_shipped"] == {"rtmlib.zip": "rtmlib decodes at split ratio 2.0; this model's is 3.0"}
    assert not (release / "onnxruntime-fp32" / "rtmlib.zip").exists() and "rtmlib.zip" not in shipped["files"]
    assert "without rtmlib.zip (rtmlib decodes at split ratio 2.0" in result.stdout
    sdk = json.loads((release / "onnxruntime-fp32" / "pipeline.json").read_text())
    assert sdk["pipeline"]["tasks"][2]["params"]["simcc_split_ratio"] == 3.0

    crops = photo_crops(KINDS["rtmpose-m_coco17_256x192"].input_size).reshape(-1, 3, 256, 192)
    mmpose = mmpose_files.reference(path, crops, decoded=True)
    assert mmpose["simcc_x"].shape[-1] == 192 * 3 and mmpose["simcc_y"].shape[-1] == 256 * 3
    session = ort.InferenceSession(str(release / "onnxruntime-fp32" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    simcc_x, simcc_y = session.run(["simcc_x", "simcc_y"], {"input": crops})
    keypoints, scores = decode_simcc(simcc_x, simcc_y, manifest["model"]["codec"]["simcc_split_ratio"])
    np.testing.assert_allclose(keypoints, mmpose["keypoints"], atol=1e-4)
    np.testing.assert_allclose(scores, mmpose["scores"], rtol=1e-4, atol=1e-3)


def test_a_dark_codec_is_refused_with_one_line(mmpose_files, tmp_path):
    """mmdeploy#2316: codec.use_dark=True decodes differently from this project's argmax; refused, not converted."""
    path = mmpose_files.path("rtmpose-m_coco17_256x192-dark", "publish")
    result = run_python("-m", "pipeline", f"model.checkpoint={path}", "targets=[onnxruntime-fp32]",
                        "tune.enabled=false", "benchmark.peers=false", "hydra.run.dir=hydra",
                        cwd=tmp_path, timeout=600, env={"PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "use_dark" in line]
    assert len(lines) == 1 and "codec.use_dark=True: DARK refinement is not implemented" in lines[0], result.stderr
    assert not (tmp_path / "artifacts").exists() or not list((tmp_path / "artifacts").rglob("model.onnx"))

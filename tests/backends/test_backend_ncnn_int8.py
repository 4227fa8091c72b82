"""ncnn-int8, calibrated and written by the project (pipeline/backends/ncnn_int8.py): the files round-trip through
ncnn's own loader, the quantized layers really are int8 in the file and in ncnn's kernels, `quantize.keep_float`
is honoured, the build is byte-deterministic, the writer refuses what it cannot read, and wrong activation scales
fail verification with one line. Blank-image calibration: tests/check/test_int8_gate.py.

Measured on the demo checkpoint (2-core Intel Xeon, AVX-512 VNNI/AMX; conf/verify/default.yaml, int8): a correct
build has cosine 0.985-0.986, mean drift 1.4 px, agreement 0.9. One activation scale x4 (ncnn's scales multiply, so
x4 clips at a quarter of the calibrated range): the first layer's fails (cosine 0.83); a middle layer's passes
(cosine 0.985, within calibration's own variation, as for the Q/DQ graph's), x16 there fails (cosine 0.91)."""

from __future__ import annotations

import hashlib
import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ncnn", reason="the ncnn extra is not installed")
pytest.importorskip("pnnx", reason="the ncnn extra (pnnx) is not installed")

from pipeline.backends import Target  # noqa: E402
from pipeline.backends import ncnn as ncnn_backend  # noqa: E402
from pipeline.backends import ncnn_int8  # noqa: E402
from pipeline.backends.interface import SelfCalibration  # noqa: E402
from pipeline.config import NcnnConfig  # noqa: E402
from pipeline.core.errors import ConfigError, PipelineError  # noqa: E402
from pipeline.model.presets import preset_spec  # noqa: E402

from conftest import VARIANT, golden_inputs, one_line_error, run_stage, torch_forward  # noqa: E402

INT8 = Target("ncnn", "int8")
FP32 = Target("ncnn", "fp32")
CFG = NcnnConfig(num_threads=2)
HEAD = ("/head/",)  # quantize.keep_float's default


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Calibration crops: the bundled photos and 12 procedural figures, [15,3,256,192] float32."""
    return golden_inputs(preset_spec(VARIANT), num_figures=12, num_random=0, seed=0)


def build(onnx_path: Path, out: Path, crops: np.ndarray, keep_float=HEAD, cfg: NcnnConfig = CFG) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    ncnn_backend.build(onnx_path, INT8, cfg, out, SelfCalibration(crops, tuple(keep_float), None, 0.0))
    return out


@pytest.fixture(scope="module")
def int8_dir(demo_onnx, crops, tmp_path_factory) -> Path:
    return build(demo_onnx, tmp_path_factory.mktemp("ncnn_int8") / "int8", crops)


@pytest.fixture(scope="module")
def fp32_dir(demo_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ncnn_fp32")
    ncnn_backend.build(demo_onnx, FP32, CFG, out)
    return out


def layers_of(folder: Path) -> list[ncnn_int8.Layer]:
    layers, _ = ncnn_int8.read_param(folder / "model.ncnn.param")
    ncnn_int8.locate_blobs(layers, folder / "model.ncnn.bin")
    return layers


def is_int8(layer: ncnn_int8.Layer) -> bool:
    return layer.type in ncnn_int8.QUANTIZABLE and bool(layer.int_param(ncnn_int8.INT8_SCALE_KEY))


def weight_tag(folder: Path, layer: ncnn_int8.Layer) -> int:
    data = (folder / "model.ncnn.bin").read_bytes()
    return struct.unpack_from("<I", data, layer.blobs[0][0])[0]


def test_the_int8_files_load_in_ncnn_and_give_the_outputs_shapes(int8_dir, crops):
    import ncnn

    net = ncnn.Net()
    net.opt.use_int8_inference = True
    assert net.load_param(str(int8_dir / "model.ncnn.param")) == 0
    assert net.load_model(str(int8_dir / "model.ncnn.bin")) == 0
    outputs = ncnn_backend.Runner(int8_dir, INT8, CFG)({"input": crops[:2]})
    assert outputs["simcc_x"].shape == (2, 17, 384) and outputs["simcc_y"].shape == (2, 17, 512)
    assert all(np.isfinite(v).all() for v in outputs.values())


def test_every_quantizable_layer_outside_the_head_is_int8_in_the_file(int8_dir, fp32_dir):
    quantizable = [layer for layer in layers_of(fp32_dir) if layer.type in ncnn_int8.QUANTIZABLE]
    written = {layer.name: layer for layer in layers_of(int8_dir)}
    int8 = [name for name, layer in written.items() if is_int8(layer)]
    assert len(int8) == len(quantizable) - 1  # the head's 7x7 conv is the only one in /head/
    for name in int8:
        assert weight_tag(int8_dir, written[name]) == ncnn_int8.TAG_INT8, name
    io = json.loads((int8_dir / "io.json").read_text())
    assert io["weights"] == "int8" and io["int8"]["layers"] == len(int8)
    # rtmpose-t: 6.3 of 13.3 MB; the head (7x7 conv, GAU and classifiers: 4.0 MB in fp32) stays fp32.
    assert (int8_dir / "model.ncnn.bin").stat().st_size < 0.5 * (fp32_dir / "model.ncnn.bin").stat().st_size


def test_ncnn_runs_its_int8_kernels_and_the_numbers_show_it(int8_dir, fp32_dir, crops):
    """A writer that silently left every layer fp32 fails here twice: no int8 layers counted, and outputs equal
    to the fp32 model's within float rounding."""
    runner = ncnn_backend.Runner(int8_dir, INT8, CFG)
    settings = runner.settings
    assert settings["use_int8_inference"] is True
    assert settings["execution_precision"]["int8"] == sum(settings["int8_layers"].values()) >= 30
    assert set(settings["int8_layers"]) == {"Convolution", "ConvolutionDepthWise", "InnerProduct"}
    int8 = runner({"input": crops})
    fp32 = ncnn_backend.Runner(fp32_dir, FP32, CFG)({"input": crops})
    for name in ("simcc_x", "simcc_y"):
        scale = np.abs(fp32[name]).max()
        error = np.abs(int8[name] - fp32[name]).max() / scale
        cosine = float(np.dot(int8[name].ravel(), fp32[name].ravel())
                       / np.linalg.norm(int8[name]) / np.linalg.norm(fp32[name]))
        assert 1e-3 < error < 0.5, (name, error)  # far beyond fp32 rounding (1e-6), within int8's gate
        assert cosine > 0.96, (name, cosine)


def test_keypoints_follow_the_pytorch_model(int8_dir, demo_model, crops):
    outputs = ncnn_backend.Runner(int8_dir, INT8, CFG)({"input": crops})
    reference = torch_forward(demo_model, crops)
    agree = [np.abs(outputs[n].argmax(-1) - reference[n].argmax(-1)) <= 4 for n in ("simcc_x", "simcc_y")]
    assert np.mean(agree[0] & agree[1]) > 0.8  # within 2 input pixels (split ratio 2)


def test_keep_float_is_honoured(demo_onnx, crops, tmp_path, fp32_dir):
    everything = layers_of(build(demo_onnx, tmp_path / "all", crops, keep_float=()))
    quantizable = sum(layer.type in ncnn_int8.QUANTIZABLE for layer in everything)
    assert sum(is_int8(layer) for layer in everything) == quantizable
    stem = build(demo_onnx, tmp_path / "stem", crops, keep_float=("/backbone/stem/", "/head/"))
    kept = [layer for layer in layers_of(stem) if layer.type in ncnn_int8.QUANTIZABLE and not is_int8(layer)]
    assert len(kept) == 4  # the stem's three 3x3 convs and the head's 7x7 conv
    assert all(weight_tag(stem, layer) == ncnn_int8.TAG_FP32 for layer in kept)
    assert json.loads((stem / "io.json").read_text())["int8"]["kept_float"] == [layer.name for layer in kept]


def test_keep_float_that_leaves_nothing_is_refused(demo_onnx, crops, tmp_path):
    with pytest.raises(PipelineError, match="leaves no layer to quantize"):
        build(demo_onnx, tmp_path / "none", crops, keep_float=("/",))


def test_the_build_is_byte_deterministic(demo_onnx, crops, int8_dir, tmp_path):
    again = build(demo_onnx, tmp_path / "again", crops)
    for name in ("model.ncnn.param", "model.ncnn.bin", "io.json"):
        assert hashlib.sha256((again / name).read_bytes()).digest() == \
            hashlib.sha256((int8_dir / name).read_bytes()).digest(), name


def test_kl_calibration_builds_a_working_model(demo_onnx, crops, tmp_path):
    out = build(demo_onnx, tmp_path / "kl", crops, cfg=NcnnConfig(num_threads=2, int8_calibration="kl"))
    assert json.loads((out / "io.json").read_text())["int8"]["calibration"] == "kl"
    outputs = ncnn_backend.Runner(out, INT8, CFG)({"input": crops[:2]})
    assert all(np.isfinite(v).all() for v in outputs.values())


def test_weights_quantize_per_channel_as_ncnn_rounds():
    layer = ncnn_int8.Layer("Convolution", "c", ["a"], ["b"], {0: "2", 1: "1", 6: "4"})
    weights = np.array([0.5, -1.0, 0.25, 1.0 / 254, 2.0, 1.0, -2.0, 0.0], np.float32)
    scales = ncnn_int8.weight_scales(layer, weights)
    assert scales.tolist() == [127.0, 63.5]
    assert ncnn_int8.quantize_weights(weights, scales).tolist() == [64, -127, 32, 1, 127, 64, -127, 0]
    # 3x3, stride 1, dilation 1: 6-bit weights (ncnn's int8 Winograd)
    winograd = ncnn_int8.Layer("Convolution", "w", ["a"], ["b"], {0: "1", 1: "3", 6: "9"})
    assert ncnn_int8.weight_scales(winograd, np.linspace(-2, 2, 9, dtype=np.float32)).tolist() == [15.5]


def test_kl_clips_a_long_tail_and_keeps_a_bounded_range():
    rng = np.random.default_rng(0)
    tailed = ncnn_int8.BlobStatistics()
    values = np.concatenate([rng.normal(size=200_000), [40.0]]).astype(np.float32)
    tailed.absmax = float(np.abs(values).max())
    tailed.add_histogram(values)
    assert 127 / tailed.scale("kl") < 0.2 * tailed.absmax  # the lone outlier at 40 is clipped
    bounded = ncnn_int8.BlobStatistics()
    values = rng.uniform(-1, 1, 200_000).astype(np.float32)
    bounded.absmax = float(np.abs(values).max())
    bounded.add_histogram(values)
    assert 127 / bounded.scale("kl") > 0.9 * bounded.absmax


def test_a_layer_of_unknown_weight_layout_is_named(tmp_path):
    (tmp_path / "m.param").write_text("7767517\n2 2\nInput in0 0 1 in0\nDeconvolution d 1 1 in0 out0 0=4 6=16\n")
    (tmp_path / "m.bin").write_bytes(b"\0" * 68)
    layers, _ = ncnn_int8.read_param(tmp_path / "m.param")
    with pytest.raises(PipelineError, match="layer d of type Deconvolution: its weight layout is unknown"):
        ncnn_int8.locate_blobs(layers, tmp_path / "m.bin")


def test_a_bin_that_does_not_match_its_param_is_refused(int8_dir, tmp_path):
    layers, _ = ncnn_int8.read_param(int8_dir / "model.ncnn.param")
    (tmp_path / "short.bin").write_bytes((int8_dir / "model.ncnn.bin").read_bytes()[:-8])
    with pytest.raises(PipelineError, match="the .param and .bin differ|ends inside"):
        ncnn_int8.locate_blobs(layers, tmp_path / "short.bin")


def test_an_int8_artifact_opened_as_fp32_is_refused(int8_dir):
    with pytest.raises(ConfigError, match="int8 weights, but the target is ncnn-fp32"):
        ncnn_backend.Runner(int8_dir, FP32, CFG)


# ------------------------------------------------------------------ wrong scales through the real verify stage

def scale_inputs(folder: Path, which: list[int], factor: float) -> list[str]:
    """Multiply the input scale of the int8 layers at positions `which` (in graph order) by `factor`, in place."""
    layers = layers_of(folder)
    data = bytearray((folder / "model.ncnn.bin").read_bytes())
    quantized = [layer for layer in layers if is_int8(layer)]
    changed = []
    for layer in (quantized[i] for i in which):
        # the input scale follows the weight scales; a requantizing layer has the next layer's scale after it
        offset = layer.blobs[-2 if layer.int_param(ncnn_int8.INT8_SCALE_KEY) > 100 else -1][0]
        value = np.frombuffer(data, "<f4", 1, offset)[0]
        data[offset:offset + 4] = np.float32(value * factor).tobytes()
        changed.append(layer.name)
    (folder / "model.ncnn.bin").write_bytes(bytes(data))
    return changed


WRONG_SCALES = {  # name: (positions among the int8 layers, factor, the figure the failure names)
    "the first layer's input scale x4": (lambda n: [0], 4.0, "max|Δ|"),
    "a middle layer's input scale x16": (lambda n: [n // 2], 16.0, "cosine"),
    "every layer's input scale x4": (lambda n: list(range(n)), 4.0, "max|Δ|"),
}


@pytest.mark.parametrize("fault", list(WRONG_SCALES))
def test_a_wrong_activation_scale_fails_verification_with_one_line(demo_chain, fault, tmp_path):
    positions, factor, figure = WRONG_SCALES[fault]
    chain = demo_chain.copy(tmp_path)
    folder = chain.variant_dir / "ncnn-int8"
    count = sum(is_int8(layer) for layer in layers_of(folder))
    assert scale_inputs(folder, positions(count), factor)
    result = run_stage("verify", f"{VARIANT}.ncnn-int8", *chain.overrides, cwd=chain.out_dir.parent)
    line = one_line_error(result)
    assert line.startswith(f"error: {VARIANT}.ncnn-int8 failed verification: simcc_"), line
    metrics = chain.metrics("ncnn-int8")
    assert metrics["passed"] is False
    assert figure in metrics["breaches"][0], metrics["breaches"]


def test_the_demo_chain_verifies_and_ships_ncnn_int8(demo_chain):
    metrics = demo_chain.metrics("ncnn-int8")
    assert metrics["passed"], metrics["breaches"]
    assert metrics["runtime_settings"]["execution_precision"]["int8"] >= 30
    manifest = json.loads((demo_chain.out_dir / "release" / VARIANT / "manifest.json").read_text())
    assert "ncnn-int8" in manifest["targets"]


def test_requantization_is_fused_between_int8_layers_and_ncnn_uses_it(tmp_path):
    """conv -> depthwise conv -> conv+ReLU -> conv with nothing between them (RTMPose has a Swish there, so
    nothing to fuse): each layer feeding another int8 layer requantizes its output (`8=10x`) with that layer's
    input scale, and ncnn reads that scale (one wrong requantization scale wrecks the output)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16),
                                torch.nn.Conv2d(16, 8, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(tmp_path / "m.onnx"), input_names=["input"],
                          output_names=["out"], opset_version=17, dynamo=False)
    crops = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    for folder in ("fp32", "int8"):
        (tmp_path / folder).mkdir()
        ncnn_backend._run_pnnx(tmp_path / "m.onnx", [1, 3, 32, 32], False, tmp_path / folder)
    ncnn_backend._write_int8(tmp_path / "m.onnx", tmp_path / "int8", SelfCalibration(crops, (), None, 0.0), "maxabs")
    terms = [layer.int_param(ncnn_int8.INT8_SCALE_KEY) for layer in layers_of(tmp_path / "int8")[1:]]
    assert terms == [102, 101, 102, 2]

    def run(folder: str, precision: str) -> np.ndarray:
        net = ncnn_backend._load_net(tmp_path / folder / "model.ncnn.param", tmp_path / folder / "model.ncnn.bin",
                                     precision, 1)
        return np.stack([ncnn_backend._forward(net, {"in0": crop}, ["out0"])["out0"] for crop in crops[:4]])

    fp32, int8 = run("fp32", "fp32"), run("int8", "int8")
    scale = np.abs(fp32).max()
    assert np.abs(int8 - fp32).max() < 0.03 * scale
    layers = layers_of(tmp_path / "int8")
    offset = layers[1].blobs[-1][0]  # the first conv's requantization scale: the depthwise conv's input scale
    data = bytearray((tmp_path / "int8" / "model.ncnn.bin").read_bytes())
    data[offset:offset + 4] = (np.frombuffer(data, "<f4", 1, offset) * np.float32(4)).tobytes()
    (tmp_path / "int8" / "model.ncnn.bin").write_bytes(bytes(data))
    assert np.abs(run("int8", "int8") - fp32).max() > 0.3 * scale

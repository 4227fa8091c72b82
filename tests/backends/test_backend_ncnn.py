"""ncnn backend: build fp32 and fp16 of a seeded rtmpose-t, run them, and check names, numbers and settings.
int8 (calibrated and written by the project): tests/backends/test_backend_ncnn_int8.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("ncnn", reason="the ncnn extra is not installed")
pytest.importorskip("pnnx", reason="the ncnn extra (pnnx) is not installed")

from pipeline.backends import Target  # noqa: E402
from pipeline.backends import ncnn as ncnn_backend  # noqa: E402
from pipeline.check.verify import check_execution_precision, compare, torch_reference  # noqa: E402
from pipeline.config import ExportConfig, NcnnConfig  # noqa: E402
from pipeline.core.errors import ConfigError, InputError  # noqa: E402
from pipeline.graph.export import export_onnx  # noqa: E402
from pipeline.model.presets import preset_spec  # noqa: E402
from pipeline.model.rtmpose import build_network
from pipeline.model.synthetic import synthetic_state_dict  # noqa: E402
from pipeline.sources.weights import WeightsInfo  # noqa: E402

VARIANT = "rtmpose-t_coco17_256x192"
CFG = NcnnConfig(num_threads=2, fp16_keep_float_layers=[])  # the backend's section, `backends.ncnn`
FLOAT_PRECISIONS = ("fp32", "fp16")


def arm_fp16() -> bool:
    import ncnn

    return bool(ncnn.cpu_support_arm_asimdhp() or ncnn.cpu_support_arm_vfpv4())


on_x86_like = pytest.mark.skipif(arm_fp16(), reason="x86 behaviour; on ARM with fp16 ncnn stores activations in fp16")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ncnn")
    variant = preset_spec(VARIANT)
    model = build_network(variant)
    model.load_state_dict(synthetic_state_dict(variant, 0))
    model.eval()
    export_onnx(model, variant, WeightsInfo("synthetic", "test", "", ""), ExportConfig(), root / "model.onnx")
    inputs = np.random.default_rng(0).standard_normal((2, 3, *variant.input_hw)).astype(np.float32)
    float32, float64 = torch_reference(model, inputs)
    np.savez(root / "reference.npz", input=inputs, **float32, **{k + "_float64": v for k, v in float64.items()})
    for precision in FLOAT_PRECISIONS:
        (root / precision).mkdir()
        ncnn_backend.build(root / "model.onnx", Target("ncnn", precision), CFG, root / precision)
    return root


@pytest.fixture(scope="module")
def reference(model_dir) -> dict[str, np.ndarray]:
    return dict(np.load(model_dir / "reference.npz"))


@pytest.fixture(scope="module")
def tolerances():
    from pipeline.run.configure import load_config

    return load_config(["out_dir=unused"]).verify.tolerances


@pytest.fixture(scope="module", params=FLOAT_PRECISIONS)
def runner(request, model_dir):
    return ncnn_backend.Runner(model_dir / request.param, Target("ncnn", request.param), CFG)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("precision", FLOAT_PRECISIONS)
def test_build_writes_param_bin_and_io_map(model_dir, precision):
    out = model_dir / precision
    assert sorted(p.name for p in out.iterdir()) == ["io.json", "model.ncnn.bin", "model.ncnn.param"]
    io = json.loads((out / "io.json").read_text())
    assert io["inputs"] == {"input": {"blob": "in0", "shape": [-1, 3, 256, 192]}}
    assert io["outputs"] == {"simcc_x": {"blob": "out0", "shape": [-1, 17, 384]},
                             "simcc_y": {"blob": "out1", "shape": [-1, 17, 512]}}
    assert io["weights"] == precision


def test_fp16_build_stores_half_the_weight_bytes(model_dir):
    fp32, fp16 = (model_dir / p / "model.ncnn.bin" for p in ("fp32", "fp16"))
    assert fp16.stat().st_size < 0.6 * fp32.stat().st_size


def test_outputs_by_name_and_shape(runner, reference):
    outputs = runner({"input": reference["input"]})
    assert set(outputs) == {"simcc_x", "simcc_y"}
    assert outputs["simcc_x"].shape == (2, 17, 384) and outputs["simcc_y"].shape == (2, 17, 512)
    assert all(array.dtype == np.float32 for array in outputs.values())


@pytest.mark.parametrize("precision", FLOAT_PRECISIONS)
def test_outputs_pass_verification_of_their_precision(model_dir, reference, tolerances, precision):
    outputs = ncnn_backend.Runner(model_dir / precision, Target("ncnn", precision), CFG)({"input": reference["input"]})
    float64 = {k: reference[k + "_float64"] for k in ("simcc_x", "simcc_y")}
    float32 = {k: reference[k] for k in ("simcc_x", "simcc_y")}
    metrics = compare(float64, outputs, tolerances[precision], 0.25, reference_float32=float32)
    assert metrics["passed"], metrics["breaches"]


def test_fp32_settings_turn_every_lower_precision_off(model_dir):
    settings = ncnn_backend.Runner(model_dir / "fp32", Target("ncnn", "fp32"), CFG).settings
    assert settings["num_threads"] == 2
    assert not any(settings[key] for key in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                                             "use_bf16_storage", "use_int8_inference"))
    assert set(settings["execution_precision"]) == {"fp32"}
    assert check_execution_precision("fp32", settings["execution_precision"]) == []


def test_fp16_settings_turn_fp16_storage_on(model_dir):
    settings = ncnn_backend.Runner(model_dir / "fp16", Target("ncnn", "fp16"), CFG).settings
    assert settings["use_fp16_storage"] and settings["use_fp16_packed"] and not settings["use_bf16_storage"]
    assert settings["fp16_weight_blobs"] == ncnn_backend.fp16_weight_blobs(model_dir / "fp16" / "model.ncnn.bin") > 0


def relabelled(source: Path, precision: str, tmp_path: Path) -> Path:
    """A copy of an artifact whose io.json claims other weights than its .bin holds."""
    import shutil

    copy = tmp_path / f"as-{precision}"
    shutil.copytree(source, copy)
    io = json.loads((copy / "io.json").read_text())
    (copy / "io.json").write_text(json.dumps({**io, "weights": precision}))
    return copy


@on_x86_like
def test_on_x86_fp16_is_fp16_weights_under_fp32_compute(model_dir, reference, tmp_path):
    """What the runner reports for ncnn-fp16 on x86 (every layer fp32, "fp16" = the fp16 weight blobs)
    is what runs: the same .bin with every fp16 option off gives the same outputs, and the fp16 weights
    move them away from the fp32 target's."""
    fp16 = ncnn_backend.Runner(model_dir / "fp16", Target("ncnn", "fp16"), CFG)
    assert set(fp16.settings["layer_precision"]) == {"fp32"}
    assert fp16.settings["execution_precision"]["fp16"] == fp16.settings["fp16_weight_blobs"] > 0
    options_off = ncnn_backend.Runner(relabelled(model_dir / "fp16", "fp32", tmp_path), Target("ncnn", "fp32"), CFG)
    assert not options_off.settings["use_fp16_storage"]
    fp32 = ncnn_backend.Runner(model_dir / "fp32", Target("ncnn", "fp32"), CFG)
    feeds = {"input": reference["input"]}
    with_options, without, plain = fp16(feeds), options_off(feeds), fp32(feeds)
    for name in ("simcc_x", "simcc_y"):
        weights_effect = np.max(np.abs(with_options[name] - plain[name]))
        options_effect = np.max(np.abs(with_options[name] - without[name]))
        assert weights_effect > 20 * np.max(np.abs(plain[name] - reference[name + "_float64"])), name
        assert options_effect <= 1e-3 * weights_effect, name


@on_x86_like
def test_an_fp16_label_on_fp32_weights_is_measured_as_no_fp16(model_dir, tmp_path):
    """A conversion that silently wrote fp32 weights: the runner counts what the .bin holds, not the label."""
    runner = ncnn_backend.Runner(relabelled(model_dir / "fp32", "fp16", tmp_path), Target("ncnn", "fp16"), CFG)
    executed = runner.settings["execution_precision"]
    assert "fp16" not in executed and runner.settings["fp16_weight_blobs"] == 0
    assert check_execution_precision("fp16", executed) == [
        f"executes nothing in fp16 (measured: {executed}); the conversion did not apply"]


@pytest.mark.parametrize("feeds, message", [
    (lambda x: {"image": x}, "do not match the model inputs"),
    (lambda x: {"input": x.astype(np.float64)}, "input 'input' is float64"),
    (lambda x: {"input": x[:, :, :128]}, "input 'input' has shape"),
])
def test_bad_feeds_name_the_input(runner, reference, feeds, message):
    with pytest.raises(InputError, match=message):
        runner(feeds(reference["input"]))


def test_runner_refuses_an_artifact_of_another_precision(model_dir):
    with pytest.raises(ConfigError, match="fp32 weights"):
        ncnn_backend.Runner(model_dir / "fp32", Target("ncnn", "fp16"), CFG)


def test_int8_without_calibration_is_refused(model_dir, tmp_path):
    with pytest.raises(ConfigError, match="ncnn-int8 needs calibration data"):
        ncnn_backend.build(model_dir / "model.onnx", Target("ncnn", "int8"), CFG, tmp_path)


def test_build_is_byte_deterministic(model_dir, tmp_path):
    ncnn_backend.build(model_dir / "model.onnx", Target("ncnn", "fp32"), CFG, tmp_path)
    for name in ("model.ncnn.param", "model.ncnn.bin", "io.json"):
        assert _sha256(tmp_path / name) == _sha256(model_dir / "fp32" / name), name


def test_fp16_keep_float_layers_get_the_feature_mask(model_dir, tmp_path):
    cfg = NcnnConfig(num_threads=2, fp16_keep_float_layers=["MatMul"])
    ncnn_backend.build(model_dir / "model.onnx", Target("ncnn", "fp16"), cfg, tmp_path)
    layers = [line.split() for line in (tmp_path / "model.ncnn.param").read_text().splitlines()[2:]]
    masked = {fields[0] for fields in layers if "31=3" in fields}
    assert masked == {"MatMul"}
    runner = ncnn_backend.Runner(tmp_path, Target("ncnn", "fp16"), cfg)
    assert np.all(np.isfinite(runner({"input": np.zeros((1, 3, 256, 192), np.float32)})["simcc_x"]))


def test_layer_precisions_follow_options_support_and_masks(monkeypatch):
    """What ncnn does on an ARMv8.2 CPU, where fp16 storage casts activations (not testable on x86 itself)."""
    import ncnn

    monkeypatch.setattr(ncnn, "cpu_support_arm_asimdhp", lambda: True)
    def layer(name: str, fp16: bool, bf16: bool) -> SimpleNamespace:
        return SimpleNamespace(name=name, support_fp16_storage=fp16, support_bf16_storage=bf16)

    layers = [layer("conv", True, True), layer("matmul", True, True), layer("reduce", False, False)]
    net = SimpleNamespace(opt=SimpleNamespace(use_fp16_storage=True, use_bf16_storage=False), layers=lambda: layers)
    assert ncnn_backend.layer_precisions(net, {"matmul": 3}) == {"fp16": 1, "fp32": 2}
    net.opt.use_fp16_storage = False
    assert ncnn_backend.layer_precisions(net, {}) == {"fp32": 3}
    net.opt.use_bf16_storage = True
    assert ncnn_backend.layer_precisions(net, {"matmul": 4}) == {"bf16": 1, "fp32": 2}


def test_fp16_keep_float_layers_must_match_a_layer(model_dir, tmp_path):
    cfg = NcnnConfig(num_threads=2, fp16_keep_float_layers=["ReduceL2"])
    with pytest.raises(ConfigError, match="backends.ncnn.fp16_keep_float_layers"):
        ncnn_backend.build(model_dir / "model.onnx", Target("ncnn", "fp16"), cfg, tmp_path)


@pytest.fixture(scope="module")
def opset18_onnx(model_dir) -> Path:
    """The same seeded rtmpose-t exported at opset 18: ScaleNorm's ReduceL2 takes its axes as an input."""
    variant = preset_spec(VARIANT)
    model = build_network(variant)
    model.load_state_dict(synthetic_state_dict(variant, 0))
    model.eval()
    path = model_dir / "opset18.onnx"
    export_onnx(model, variant, WeightsInfo("synthetic", "test", "", ""), ExportConfig(opset=18), path)
    return path


def test_opset18_export_builds_like_opset17(opset18_onnx, model_dir, reference, tolerances, tmp_path):
    """pnnx ignores opset 18's axes input (max|Δ| ~1e4 on this model before the graph was lowered to opset 17);
    lowered, the fp32 build passes verification and equals the opset-17 build's .param and .bin byte for byte."""
    import onnx

    assert any(node.op_type == "ReduceL2" and len(node.input) == 2 for node in onnx.load(str(opset18_onnx)).graph.node)
    ncnn_backend.build(opset18_onnx, Target("ncnn", "fp32"), CFG, tmp_path)
    outputs = ncnn_backend.Runner(tmp_path, Target("ncnn", "fp32"), CFG)({"input": reference["input"]})
    float64 = {k: reference[k + "_float64"] for k in ("simcc_x", "simcc_y")}
    float32 = {k: reference[k] for k in ("simcc_x", "simcc_y")}
    metrics = compare(float64, outputs, tolerances["fp32"], 0.25, reference_float32=float32)
    assert metrics["passed"], metrics["breaches"]
    for name in ("model.ncnn.param", "model.ncnn.bin"):
        assert _sha256(tmp_path / name) == _sha256(model_dir / "fp32" / name), name

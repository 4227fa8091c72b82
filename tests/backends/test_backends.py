"""Contract test over the backend registry: every backend module has the shape the registry documents and owns
its facts, and every backend x precision it declares (`BACKENDS`) is built from the demo checkpoint, loaded,
run, and accepted by the verify step.

The demo checkpoint is a trained rtmpose-t: its SimCC outputs are peaked, so every reduced-precision
target is shown *passing* on decoded keypoints too, not only failing where it should
(tests/check/test_faults.py). Targets this host cannot run are skipped with the plan's reason.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import backends
from pipeline.backends import BACKENDS, MODULE_SHAPE, TARGETS, availability
from pipeline.backends.interface import ArtifactFormat
from pipeline.check.verify import Golden, check_execution_precision
from pipeline.config import BackendsConfig
from pipeline.core.errors import ConfigError
from pipeline.core.io import read_npz
from pipeline.model.presets import preset_spec

from conftest import VARIANT


def _params() -> list:
    params = []
    for name, target in TARGETS.items():
        reason = availability(target)
        params.append(pytest.param(name, id=name, marks=pytest.mark.skipif(bool(reason), reason=reason or "runs")))
    return params


def test_every_declared_precision_is_a_target():
    assert sorted(TARGETS) == sorted(f"{b}-{p}" for b, spec in BACKENDS.items() for p in spec.precisions)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_modules_read_their_precisions_from_the_registry(backend):
    try:
        module = backends.get(backend)
    except backends.RuntimeMissingError as exc:
        pytest.skip(str(exc))
    assert module.PRECISIONS is BACKENDS[backend].precisions


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_module_has_the_shape_and_its_own_config_section(backend):
    module = backends.module(backend)  # its facts are read without its runtime installed
    assert [name for name in MODULE_SHAPE if not hasattr(module, name)] == []
    assert type(backends.settings_of(BackendsConfig(), backend)) is module.SETTINGS  # `backends.<name>`
    assert isinstance(module.FILES, ArtifactFormat) and module.FILES.model
    assert isinstance(module.INT8_FROM_QDQ, bool) and isinstance(module.BOUND_TO_GPU, bool)


def test_a_model_file_suffix_names_one_backend():
    suffixes = [backends.files(name).suffix for name in BACKENDS]
    assert len(set(suffixes)) == len(suffixes) and all(suffixes)
    assert [backends.backend_of_model_file(suffix) for suffix in suffixes] == list(BACKENDS)
    assert backends.backend_of_model_file(".pt") is None


def test_an_unknown_backend_is_named_with_the_choices():
    with pytest.raises(ConfigError, match="unknown backend 'tflite'; choose from onnxruntime"):
        backends.settings_of(BackendsConfig(), "tflite")


def test_the_plan_feeds_int8_as_each_backend_says(composed):
    """A backend whose int8 builds from the Q/DQ graph gets the quantize stage's ONNX; one that calibrates
    itself (NNCF) gets the simplified ONNX and the calibration set."""
    from pipeline.planning.plan import make_plan

    int8 = [name for name, target in TARGETS.items() if target.precision == "int8" and not availability(target)]
    plan = make_plan(composed.model, int8, "unused")
    assert sorted(job["target"] for job in plan["jobs"].values()) == sorted(int8)
    for job in plan["jobs"].values():
        qdq = backends.int8_from_qdq(job["backend"])
        assert job["onnx"].endswith("quantized/model.onnx") == qdq and bool(job["calibration"]) == (not qdq)
    assert {backends.int8_from_qdq(name) for name in ("onnxruntime", "openvino")} == {True, False}


@pytest.fixture(scope="module")
def composed():
    """The composed defaults: the backend options the chain's runners used."""
    from pipeline.run.configure import load_config

    return load_config(["out_dir=unused"])


@pytest.mark.parametrize("target_name", _params())
def test_target_builds_runs_and_verifies(target_name, demo_chain, composed):
    metrics_file = demo_chain.variant_dir / "metrics" / f"{target_name}.json"
    assert metrics_file.is_file(), demo_chain.result.stdout[-3000:] + demo_chain.result.stderr[-3000:]
    target = TARGETS[target_name]
    variant = preset_spec(VARIANT)
    golden = Golden.from_arrays(read_npz(demo_chain.variant_dir / "reference.npz"))
    runner = backends.open_runner(demo_chain.variant_dir / target_name, target, composed.backends)
    outputs = runner({"input": golden.inputs[:2]})
    assert list(outputs) == ["simcc_x", "simcc_y"]  # names, in the ONNX order consumers rely on
    for name, (keypoints, bins) in variant.simcc_shapes.items():
        assert outputs[name].shape == (2, keypoints, bins) and outputs[name].dtype == np.float32, name

    metrics = demo_chain.metrics(target_name)
    assert metrics["passed"] is True and metrics["breaches"] == [], metrics["breaches"]
    assert metrics["precision"] == target.precision
    assert check_execution_precision(target.precision, metrics["runtime_settings"]["execution_precision"]) == []
    gated = metrics["keypoints"]["confident"]
    assert gated["count"] >= 40, gated  # the figure crops' keypoints were gated, and agreed
    assert gated["agreement"] >= metrics["tolerance"]["min_agreement"]
    # Rounding precisions are held to the float32 reference's own error; int8 error comes from calibration.
    assert metrics["rule"] == ("output-scale" if target.precision == "int8" else "reference-error")
    assert metrics["preprocessing"]["runs"] == [{"sources": ["pipeline.json", "ONNX metadata"],
                                                 "normalization": metrics["preprocessing"]["reference"],
                                                 "same_as_reference": True}]


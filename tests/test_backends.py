"""Contract test over the backend registry: every backend x precision it declares (`BACKENDS`) is built
from the demo checkpoint, loaded, run, and accepted by the verify step.

The demo checkpoint is a trained rtmpose-t: its SimCC outputs are peaked, so every reduced-precision
target is shown *passing* on decoded keypoints too, not only failing where it should
(tests/test_faults.py). Targets this host cannot run are skipped with the plan's reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import VARIANT

from pipeline import backends
from pipeline.backends import BACKENDS, TARGETS, availability
from pipeline.check.verify import Golden, check_execution_precision
from pipeline.core.io import read_npz
from pipeline.model.presets import preset_spec


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
    runner = backends.get(target.backend).Runner(demo_chain.variant_dir / target_name, target, composed)
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


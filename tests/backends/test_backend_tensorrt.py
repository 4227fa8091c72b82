"""TensorRT pieces that need no GPU: reading the executed precision from the engine inspector's JSON.

The JSON layouts follow TensorRT's documentation: with ProfilingVerbosity.DETAILED each layer is an
object whose `Outputs` carry `Format/Datatype` (TensorRT 10) or `DataType` (TensorRT 11, see
"Migrating IEngineInspector Usage from TensorRT 10.x to 11.x"); without it layers are bare names.
Building, running and verifying engines is the contract test's part (tests/backends/test_backends.py), on GPU runners.
"""

from __future__ import annotations

import json

import pytest

from pipeline.backends.tensorrt import layer_precisions
from pipeline.core.errors import InputError


def detailed(*formats: str, key: str = "Format/Datatype") -> str:
    layers = [{"Name": f"layer{i}", "LayerType": "CaskConvolution",
               "Inputs": [{"Name": f"in{i}", key: "Row major linear FP32 format"}],
               "Outputs": [{"Name": f"out{i}", key: fmt}]} for i, fmt in enumerate(formats)]
    return json.dumps({"Layers": layers, "Bindings": ["input", "simcc_x", "simcc_y"]})


def test_tensorrt10_detailed_formats_are_counted_per_layer_output():
    info = detailed("Channel major FP16 format where channel % 8 == 0", "Half", "Int8", "Row major linear INT8 format",
                    "Row major linear FP32 format", "Float")
    assert layer_precisions(info) == {"fp16": 2, "fp32": 2, "int8": 2}


def test_tensorrt11_datatype_field_is_read():
    assert layer_precisions(detailed("Half", "Float", "BFloat16", key="DataType")) == {"bf16": 1, "fp16": 1, "fp32": 1}


def test_an_engine_without_detailed_verbosity_is_refused():
    names_only = json.dumps({"Layers": ["conv1 + relu", "gemm"], "Bindings": ["input", "simcc_x", "simcc_y"]})
    with pytest.raises(InputError, match="built without ProfilingVerbosity.DETAILED"):
        layer_precisions(names_only)


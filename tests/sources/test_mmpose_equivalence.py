"""Our plain-PyTorch RTMPose and its ONNX export against mmpose's own implementation, in fp32.

mmpose's model code runs in a subprocess (tests/upstream/mmpose_outputs.py) on the same state_dict
and inputs. It is installed with `pip install --no-deps -r tests/upstream/requirements-mmpose.txt`
(the README's test command does this); without it the tests skip and say so.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline.config import ExportConfig
from pipeline.graph.export import export_onnx
from pipeline.model.presets import preset_spec
from pipeline.model.rtmpose import build_network
from pipeline.model.synthetic import synthetic_state_dict
from pipeline.sources.weights import WeightsInfo

SCRIPT = Path(__file__).resolve().parents[1] / "upstream" / "mmpose_outputs.py"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mmpose") is None,
                                reason="mmpose not installed: pip install --no-deps -r tests/upstream/requirements-mmpose.txt")

# Every scale, keypoint set and input size appears at least once.
VARIANTS = [
    "rtmpose-t_coco17_256x192",
    "rtmpose-s_hand21_256x256",
    "rtmpose-m_halpe26_384x288",
    "rtmpose-l_face106_256x192",
    "rtmpose-x_wholebody133_256x192",
]


def mmpose_outputs(variant_name, state_dict, inputs, tmp_path):
    torch.save(state_dict, tmp_path / "state.pt")
    np.save(tmp_path / "inputs.npy", inputs)
    subprocess.run([sys.executable, str(SCRIPT), variant_name, str(tmp_path / "state.pt"),
                    str(tmp_path / "inputs.npy"), str(tmp_path / "out.npz")], check=True, capture_output=True)
    with np.load(tmp_path / "out.npz") as data:
        return data["simcc_x"], data["simcc_y"]


@pytest.mark.parametrize("variant_name", VARIANTS)
def test_pytorch_and_onnx_equal_mmpose(variant_name, tmp_path):
    variant = preset_spec(variant_name)
    state = synthetic_state_dict(variant, seed=7)
    inputs = np.random.default_rng(1).standard_normal((2, 3, *variant.input_hw)).astype(np.float32)
    ref_x, ref_y = mmpose_outputs(variant_name, state, inputs, tmp_path)

    model = build_network(variant)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        ours_x, ours_y = model(torch.from_numpy(inputs))
    # Same operations in the same order: bit-identical on the same machine.
    np.testing.assert_array_equal(ours_x.numpy(), ref_x)
    np.testing.assert_array_equal(ours_y.numpy(), ref_y)

    onnx_path = tmp_path / "model.onnx"
    export_onnx(model, variant, WeightsInfo("synthetic", "test", "", ""), ExportConfig(), onnx_path)
    onnx_x, onnx_y = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        ["simcc_x", "simcc_y"], {"input": inputs})
    scale = max(np.abs(ref_x).max(), np.abs(ref_y).max())
    assert np.abs(onnx_x - ref_x).max() <= 1e-5 * scale + 1e-5
    assert np.abs(onnx_y - ref_y).max() <= 1e-5 * scale + 1e-5

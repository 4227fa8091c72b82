"""Checkpoint loading: every form users hold weights in, damaged files, wrong variants, unsafe pickles."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.core.errors import InputError
from pipeline.model.presets import preset_spec
from pipeline.model.synthetic import synthetic_state_dict
from pipeline.sources.checkpoint import load_weights
from pipeline.sources.describe import describe
from pipeline.sources.weights import build_reference_model

from conftest import CHECKPOINT_FORMS, VARIANT, sha256, torch_forward, write_checkpoint


@pytest.fixture(scope="module")
def one_image(golden):
    return golden[:1]


@pytest.fixture(scope="module")
def expected(t_model, one_image):
    return torch_forward(t_model, one_image)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, t_state_dict, t_variant):
    """Each form written once: {form: path}."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {form: write_checkpoint(root / f"{form}.pth", form, t_state_dict, t_variant)
            for form in (*CHECKPOINT_FORMS, "pickled-model")}


def load_model(path, trust_pickle: bool = False, preset: str | None = VARIANT):
    """(model, description, weights info) as the reference stage gets them."""
    cfg = ModelConfig(preset=preset, checkpoint=str(path), trust_pickle=trust_pickle)
    spec = describe(cfg)
    model, info = build_reference_model(cfg, spec)
    return model, spec, info


def assert_same_outputs(model, one_image, expected):
    actual = torch_forward(model, one_image)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name])


# conftest's mmpose forms carry the Runner's training state (optimizer, message_hub).
FORM_NAMES = {"mmpose-zip": "training-checkpoint", "mmpose-legacy": "training-checkpoint"}


@pytest.mark.parametrize("form", CHECKPOINT_FORMS)
def test_every_checkpoint_form_loads_to_identical_outputs(form, checkpoints, t_state_dict, t_variant, one_image,
                                                          expected):
    path = checkpoints[form]
    weights = load_weights(path)
    assert weights.form == FORM_NAMES.get(form, "state_dict")
    assert weights.sha256 == sha256(path)
    assert list(weights.state_dict) == list(t_state_dict)  # prefixes stripped, order kept

    model, spec, info = load_model(path)
    assert (spec.backbone, spec.head, spec.codec) == (t_variant.backbone, t_variant.head, t_variant.codec)
    assert (info.source, info.sha256) == ("checkpoint", sha256(path))
    assert_same_outputs(model, one_image, expected)


@pytest.mark.parametrize("form", ["mmpose-zip", "mmpose-legacy"])
def test_numpy_values_in_mmpose_meta_survive_the_safe_loader(form, checkpoints):
    dataset_meta = load_weights(checkpoints[form]).meta["dataset_meta"]
    assert isinstance(dataset_meta["sigmas"], np.ndarray) and dataset_meta["sigmas"].dtype == np.float32
    assert dataset_meta["keypoint_colors"].shape == (17, 3)
    assert dataset_meta["bbox_score_thr"] == np.float64(0.3)
    assert dataset_meta["keypoint_id2name"][0] == "nose"


def test_pickled_model_needs_trust_pickle(checkpoints, one_image, expected):
    path = checkpoints["pickled-model"]
    with pytest.raises(InputError, match="trust_pickle") as info:
        load_model(path)
    assert "RTMPose" in str(info.value)  # names the class it refused to import

    model, _, info = load_model(path, trust_pickle=True)
    assert info.form == "pickled-model"
    assert_same_outputs(model, one_image, expected)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "nope.pth")


@pytest.mark.parametrize("content", [
    b"",
    bytes(4096),
    b"this is not a checkpoint\n" * 50,
], ids=["empty", "zeros", "text"])
def test_corrupt_bytes_raise_input_error(content, tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(content)
    with pytest.raises(InputError, match="corrupt|not a readable"):
        load_weights(path)


def test_random_bytes_are_reported_as_corrupt_not_as_a_pickle_to_trust(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="PyTorch file .*; re-download or re-save it") as info:
        load_weights(path)
    assert "trust_pickle" not in str(info.value)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_truncated_file(zip_format, keep, tmp_path, t_state_dict):
    buffer = io.BytesIO()
    torch.save(t_state_dict, buffer, _use_new_zipfile_serialization=zip_format)
    data = buffer.getvalue()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_weights(path)


def test_checkpoint_of_another_preset_is_refused_and_converts_without_one(tmp_path):
    s_variant = preset_spec("rtmpose-s_coco17_256x192")
    path = write_checkpoint(tmp_path / "s.pth", "state_dict", synthetic_state_dict(s_variant, 0), s_variant)
    with pytest.raises(InputError, match="is a s-scale 17 keypoints, 192x256") as info:
        load_model(path)  # model=rtmpose-t_coco17_256x192 claimed
    assert "drop model=" in str(info.value)  # the fix
    _, spec, _ = load_model(path, preset=None)  # the file alone describes it
    assert (spec.name, spec.backbone, spec.head) == ("s", s_variant.backbone, s_variant.head)


@pytest.mark.parametrize("edit, fragment", [
    (lambda sd: sd.pop("head.gau.res_scale.scale"), r"missing \['head.gau.res_scale.scale'\]"),
    (lambda sd: sd.__setitem__("head.gau.w", torch.zeros(3)), r"unexpected \['head.gau.w'\]"),
])
def test_strict_load(edit, fragment, tmp_path, t_state_dict, t_variant):
    state_dict = dict(t_state_dict)
    edit(state_dict)
    path = tmp_path / "edited.pth"
    torch.save(state_dict, path)
    with pytest.raises(InputError, match=fragment):
        load_model(path)


@pytest.mark.parametrize("obj, fragment", [
    ({"fc.weight": torch.zeros(2, 2)}, "holds no backbone/head weights"),
    (torch.zeros(3), "holds a Tensor"),
    ({"epoch": 3, "weights": [1, 2]}, "without 'state_dict'"),
])
def test_files_that_are_not_rtmpose_checkpoints(obj, fragment, tmp_path):
    path = tmp_path / "other.pth"
    torch.save(obj, path)
    with pytest.raises(InputError, match=fragment):
        load_model(path)


class Exploit:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["pickle", "torch-zip", "torch-legacy"])
def test_malicious_pickle_is_refused_without_running(container, tmp_path, t_state_dict):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    # A valid mmpose checkpoint with a payload in meta: the weights alone would load.
    payload = {"meta": {"note": Exploit(marker)}, "state_dict": dict(t_state_dict)}
    if container == "pickle":
        path.write_bytes(pickle.dumps(Exploit(marker)))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=container == "torch-zip")
    with pytest.raises(InputError, match=r"evil\.pth.*(would run code from the file|not a readable PyTorch file)"):
        load_model(path)
    assert not marker.exists()

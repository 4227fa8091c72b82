"""The mmpose-made fixture files (tests/mmpose_files.py) are what they claim to be.

Each file is read as a safe loader must read it: container and pickle opcodes with pickletools,
values with torch.load(weights_only=True) and an explicit allow-list; only mmpose's own model
(in a subprocess, on the test suite's own files) unpickles them fully.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from mmpose_files import KINDS, file_name, make_files, photo_crops, read_pickle_view, safe_load

pytestmark = pytest.mark.slow  # every test makes model files with mmpose (seconds to minutes per batch)

FACE_KINDS = ("rtmpose-m_lapa106_256x256", "rtmpose-m_wflw98_256x256", "rtmpose-m_face68_256x256")
FORMS_KIND = "rtmpose-s_coco17_256x192"  # the smallest config with EMA: every form exists
META_KEYS = {"epoch", "iter", "cfg", "seed", "experiment_name", "time", "mmengine_version", "dataset_meta"}


@pytest.fixture(scope="module")
def published(mmpose_files) -> dict[str, object]:
    """Every kind's publish file, made in one subprocess."""
    paths = mmpose_files.make(*[(kind, "publish") for kind in KINDS])
    return dict(zip(KINDS, paths))


@pytest.fixture(scope="module")
def s_forms(mmpose_files) -> dict[str, object]:
    forms = KINDS[FORMS_KIND].forms
    return dict(zip(forms, mmpose_files.make(*[(FORMS_KIND, form) for form in forms])))


def _strip(state: dict) -> dict:
    state = {k: v for k, v in state.items() if k != "steps"}
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


@pytest.mark.parametrize("kind", list(KINDS))
def test_publish_file_is_what_publish_model_writes(published, kind):
    path, spec = published[kind], KINDS[kind]
    view = read_pickle_view(path)
    assert (view.container, view.protocol) == ("legacy", 2)
    checkpoint = safe_load(path)
    assert set(checkpoint) == {"meta", "state_dict"}
    meta = checkpoint["meta"]
    assert set(meta) == META_KEYS
    assert "model = dict(" in meta["cfg"] and "data_preprocessor=dict(" in meta["cfg"]
    assert meta["experiment_name"].endswith("_20240101_000000")
    dataset_meta = meta["dataset_meta"]
    assert dataset_meta["num_keypoints"] == spec.num_keypoints
    assert len(dataset_meta["keypoint_id2name"]) == spec.num_keypoints
    assert len(dataset_meta["flip_indices"]) == spec.num_keypoints
    assert isinstance(dataset_meta["sigmas"], np.ndarray)

    state = checkpoint["state_dict"]
    width, height = spec.input_size
    assert state["head.cls_x.weight"].shape[0] == 2 * width
    assert state["head.cls_y.weight"].shape[0] == 2 * height
    final = state["head.final_layer.weight"] if "head.final_layer.weight" in state else state["head.final_layer.conv.weight"]
    assert final.shape[0] == spec.num_keypoints
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())


@pytest.mark.parametrize("kind", list(KINDS))
def test_empty_arrays_of_face_sets_are_pickled_through_bytes(published, kind):
    """Protocol 2 writes an empty array's data as `__builtin__.bytes()`; only face sets have one."""
    view = read_pickle_view(published[kind])
    dataset_meta = safe_load(published[kind])["meta"]["dataset_meta"]
    empty = [k for k, v in dataset_meta.items() if isinstance(v, np.ndarray) and v.size == 0]
    assert bool(empty) == (kind in FACE_KINDS)
    assert (("__builtin__", "bytes") in view.globals) == (kind in FACE_KINDS)
    assert ("_codecs", "encode") in view.globals  # every non-empty array's bytes
    if kind in ("rtmpose-m_lapa106_256x256", "rtmpose-m_wflw98_256x256"):
        assert dataset_meta["sigmas"].size == 0 and dataset_meta["skeleton_links"] == []


def test_logits_reach_several_hundred_and_peak(mmpose_files, published):
    """On the golden photo crops mmpose's own model gives finite logits of several hundred, each
    keypoint's row rising far above its median (a peak, not a flat row)."""
    pairs = [(published[kind], photo_crops(KINDS[kind].input_size)) for kind in KINDS]
    for kind, outputs in zip(KINDS, mmpose_files.references(pairs)):
        width, height = KINDS[kind].input_size
        k = KINDS[kind].num_keypoints
        assert outputs["simcc_x"].shape == (3, k, 2 * width) and outputs["simcc_y"].shape == (3, k, 2 * height)
        for name, logits in outputs.items():
            assert np.isfinite(logits).all(), (kind, name)
            assert 150 < np.abs(logits).max() < 3000, (kind, name, np.abs(logits).max())
            rise = logits.max(-1) - np.median(logits, -1)
            assert np.median(rise) > 50, (kind, name, np.median(rise))


def test_every_form_holds_the_published_weights(mmpose_files, s_forms):
    published = safe_load(s_forms["publish"])["state_dict"]
    for form in ("ema", "state_dict", "state_dict-module", "state_dict-model"):
        view = read_pickle_view(s_forms[form])
        assert view.container == "zip"
        state = safe_load(s_forms[form])
        assert ("steps" in state) == (form == "ema")
        state = _strip(state)
        assert list(state) == list(published), form
        assert all(torch.equal(state[k], published[k]) for k in published), form
    for form, dtype in (("publish-fp16", torch.float16), ("publish-bf16", torch.bfloat16)):
        state = safe_load(s_forms[form])["state_dict"]
        for key, value in published.items():
            assert torch.equal(state[key], value.to(dtype) if value.is_floating_point() else value), (form, key)


def test_training_checkpoint_is_what_the_runner_writes(mmpose_files, s_forms):
    """epoch_2.pth: HistoryBuffers (with getattr references), AdamW state, schedulers, and the
    EMA state whose swap leaves the averaged weights in `state_dict`."""
    view = read_pickle_view(s_forms["train"])
    assert (view.container, view.protocol) == ("zip", 2)
    assert {("mmengine.logging.history_buffer", "HistoryBuffer"), ("__builtin__", "getattr"),
            ("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")} <= view.globals
    for key in ("meta", "state_dict", "message_hub", "optimizer", "param_schedulers", "ema_state_dict",
                "log_scalars", "runtime_info", "exp_avg", "exp_avg_sq", "steps", "start_factor", "eta_min",
                "module.backbone.stem.0.conv.weight", "train/loss", "train/lr", "dataset_meta"):
        assert view.has_string(key), key
    inputs = photo_crops(KINDS[FORMS_KIND].input_size)
    train, publish = mmpose_files.references([(s_forms["train"], inputs), (s_forms["publish"], inputs)])
    for name in ("simcc_x", "simcc_y"):
        np.testing.assert_array_equal(train[name], publish[name])


def test_same_kind_same_bytes(tmp_path):
    """Two generations, in two processes, write identical files (legacy and zip containers)."""
    import importlib.util

    if importlib.util.find_spec("mmpose") is None:
        pytest.skip("mmpose not installed")
    specs = [("rtmpose-t_coco17_256x192", "publish"), ("rtmpose-t_coco17_256x192", "train")]
    first = make_files(specs, tmp_path / "a")
    second = make_files(specs, tmp_path / "b")
    for one, two in zip(first, second):
        assert one["sha256"] == two["sha256"], one["form"]
        assert hashlib.sha256((tmp_path / "a" / file_name(one["kind"], one["form"])).read_bytes()).hexdigest() \
            == one["sha256"]


def test_edited_configs_say_what_the_model_is(published):
    custom = safe_load(published["rtmpose-m_custom38_256x192"])["meta"]
    assert "out_channels=38" in custom["cfg"] and custom["dataset_meta"]["dataset_name"] == "body17_rhand21"
    assert custom["dataset_meta"]["keypoint_id2name"][37] == "right_hand_pinky_finger4"
    size = safe_load(published["rtmpose-m_coco17_320x240"])["meta"]["cfg"]
    assert "240,\n        320," in size and "in_featuremap_size=(\n            8,\n            10," in size


def test_rtmw_and_dwpose_files(published):
    rtmw = safe_load(published["rtmw-m_wholebody133_256x192"])
    assert "type='CSPNeXtPAFPN'" in rtmw["meta"]["cfg"] and "type='RTMWHead'" in rtmw["meta"]["cfg"]
    assert "neck.reduce_layers.0.conv.weight" in rtmw["state_dict"] and "head.mlp2.1.weight" in rtmw["state_dict"]
    dwpose = safe_load(published["dwpose-l_wholebody133_256x192"])
    assert "type='DWPoseDistiller'" in dwpose["meta"]["cfg"] and "student_cfg=" in dwpose["meta"]["cfg"]
    assert not any(k.startswith(("student.", "teacher.")) for k in dwpose["state_dict"])
    assert dwpose["state_dict"]["backbone.stem.2.conv.weight"].shape[0] == 64  # rtmpose-l: widen 1.0

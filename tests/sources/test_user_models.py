"""Model files made by mmpose itself convert from the file alone and equal mmpose's own model.

Every kind of tests/upstream/checkpoint_kinds.py (released scales, face/hand/crowdpose/mpii sets, a
custom 38-keypoint model, a 320x240 input, RTMW-m, a DWPose-l student), saved as mmpose's publish
script and mmengine's Runner save them: `model.checkpoint=<file>` alone describes the network, the
keypoints and the preprocessing; our PyTorch network equals mmpose's on the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.sources.describe import describe
from pipeline.sources.weights import build_reference_model

from conftest import torch_forward
from mmpose_files import KINDS, photo_crops

pytestmark = pytest.mark.slow  # the files are made by mmpose in a subprocess (seconds to minutes)

FORMS_KIND = "rtmpose-s_coco17_256x192"  # has every Runner form (EMA included)


@pytest.fixture(scope="module")
def published(mmpose_files) -> dict[str, object]:
    return dict(zip(KINDS, mmpose_files.make(*[(kind, "publish") for kind in KINDS])))


@pytest.fixture(scope="module")
def mmpose_outputs(mmpose_files, published) -> dict[str, dict[str, np.ndarray]]:
    """mmpose's own model (built from each file's meta.cfg) on the golden photo crops of its size."""
    pairs = [(published[kind], photo_crops(KINDS[kind].input_size)) for kind in KINDS]
    return dict(zip(KINDS, mmpose_files.references(pairs)))


def convert(path, **overrides):
    cfg = ModelConfig(checkpoint=str(path), **overrides)
    spec = describe(cfg)
    model, info = build_reference_model(cfg, spec)
    return spec, model, info


def assert_equal_to_scale(ours: dict, theirs: dict, what: str) -> None:
    """Same network, same float32 operations: equal up to the last bits of the logits' scale."""
    for name in ("simcc_x", "simcc_y"):
        scale = float(np.abs(theirs[name]).max())
        error = float(np.abs(ours[name].astype(np.float64) - theirs[name]).max())
        assert error <= 1e-6 * scale, (what, name, error, scale)


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_file_alone_describes_the_model_and_it_equals_mmpose(kind, published, mmpose_outputs):
    expected = KINDS[kind]
    spec, model, info = convert(published[kind])
    assert (spec.num_keypoints, tuple(spec.codec.input_size)) == (expected.num_keypoints, expected.input_size)
    assert spec.head.type == ("RTMWHead" if kind.startswith("rtmw") else "RTMCCHead")
    assert (spec.neck is not None) == kind.startswith("rtmw")
    assert info.form == "mmpose-checkpoint"
    if not kind.startswith("dwpose"):  # a DWPose file's meta.cfg is the distiller's; its tensors describe it
        assert spec.source["architecture"].endswith("(meta.cfg)")
    assert spec.source.get("keypoints") == "meta.dataset_meta" and len(set(spec.keypoint_names)) == spec.num_keypoints
    assert spec.preprocess.bgr_to_rgb and spec.preprocess.mean == (123.675, 116.28, 103.53)
    ours = torch_forward(model, photo_crops(expected.input_size))
    assert_equal_to_scale(ours, mmpose_outputs[kind], kind)


def test_names_come_from_the_experiment_without_its_timestamp(published):
    """mmengine names the experiment `<config stem>_<YYYYmmdd_HHMMSS>`; the artifacts take the stem."""
    from mmpose_files import safe_load

    for kind in ("rtmpose-m_custom38_256x192", "rtmw-m_wholebody133_256x192"):
        experiment = safe_load(published[kind])["meta"]["experiment_name"]
        spec, _, _ = convert(published[kind])
        assert experiment == f"{spec.name}_20240101_000000", (experiment, spec.name)


@pytest.mark.parametrize("form", KINDS[FORMS_KIND].forms)
def test_every_runner_form_gives_the_published_network(form, mmpose_files):
    path, publish = mmpose_files.make((FORMS_KIND, form), (FORMS_KIND, "publish"))
    spec, model, info = convert(path)
    _, reference, _ = convert(publish)
    assert info.form == {"train": "training-checkpoint", "ema": "ema-state-dict", "publish": "mmpose-checkpoint",
                         "publish-fp16": "mmpose-checkpoint", "publish-bf16": "mmpose-checkpoint"}.get(form, "state_dict")
    if form in ("publish-fp16", "publish-bf16"):  # the same weights rounded once: widened back exactly
        dtype = torch.float16 if form == "publish-fp16" else torch.bfloat16
        with torch.no_grad():
            for value in reference.state_dict().values():
                if value.is_floating_point():
                    value.copy_(value.to(dtype).float())
    inputs = photo_crops(KINDS[FORMS_KIND].input_size)
    ours, theirs = torch_forward(model, inputs), torch_forward(reference, inputs)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_the_dwpose_transfer_file_takes_the_student(mmpose_files):
    path, publish = mmpose_files.make(("dwpose-l_wholebody133_256x192", "transfer"),
                                      ("dwpose-l_wholebody133_256x192", "publish"))
    spec, model, info = convert(path)
    _, reference, _ = convert(publish)
    assert spec.num_keypoints == 133 and spec.backbone.widen_factor == 1.0
    with torch.no_grad():
        x = torch.from_numpy(photo_crops((192, 256))[:1])
        np.testing.assert_array_equal(model(x)[0].numpy(), reference(x)[0].numpy())

"""Write RTMPose-family model files exactly as users get them from mmpose 1.3.2 and mmengine 0.10.7.

Usage:
    python tests/upstream/make_checkpoints.py KIND[:FORM] OUT [KIND[:FORM] OUT ...]
    python tests/upstream/make_checkpoints.py --list

Prints one JSON line per file written (kind, form, path, config, num_keypoints, input_size as
mmpose's (W, H), sha256, bytes, wall and CPU seconds of building the kind (once per process) and
of its training state, the classifier factor, and the SimCC logits' largest magnitude and median
peak height over the row mean on the calibration images).
Runs in its own process: mmpose is only importable with the hacks of `mmpose_import.py`.

## What is real and what is made up
The model is built by mmpose's registry from a shipped config (`Config.fromfile` on
`mmpose/.mim/configs/...`, then `MODELS.build(cfg.model)`, SyncBN reverted as
`mmpose.apis.init_model` does), so every key, shape and buffer is mmpose's. The files are
written by the upstream code paths: the training checkpoint by mmengine's `save_checkpoint` with
the dict `Runner.save_checkpoint` assembles (meta, state_dict, message_hub, optimizer,
param_schedulers, then EMAHook.before_save_checkpoint's `ema_state_dict` and its swap); the publish
file by the steps of mmpose's `tools/misc/publish_model.py` (keep `meta` and `state_dict`,
`torch.save(..., _use_new_zipfile_serialization=False)`, i.e. the legacy protocol-2 format, whose
storage keys are memory addresses: see `save_legacy` for how they are made reproducible).
`meta.dataset_meta` is `parse_pose_metainfo` of the training dataset's metainfo, as the Runner
stores it; face sets therefore carry empty numpy arrays (no skeleton, no sigmas), which protocol 2
pickles through `__builtin__.bytes`. Optimizer, parameter schedulers, message hub and EMA are
mmengine's / mmpose's own objects (AdamW from `build_optim_wrapper` with the config's paramwise
settings, LinearLR + CosineAnnealingLR, MessageHub with HistoryBuffers, ExpMomentumEMA from the
config's EMAHook), stepped for `ITERS_PER_EPOCH * EPOCHS` iterations on seeded random gradients.

Made up, deterministic (same kind, same bytes on one machine):
- Weights are drawn from numpy's PCG64 seeded with crc32(kind), not trained: convolutions and
  linears N(0, 2/fan_in); BN weight 1 +- 0.1, bias +- 0.1; ScaleNorm/Scale 1 +- 0.05; GAU
  gamma/beta U(0, 1). The SimCC classifiers `cls_x`/`cls_y` are smooth along the bin axis (each row
  is a sum of biweight bumps 16 bins wide with random coefficients), so a keypoint's logits form
  smooth hills over the bins like a trained model's, instead of white noise.
- BatchNorm running statistics are those of the calibration images (crops of the two photos in
  `pipeline/inputs/data/` plus two seeded 1/f-noise images) in one train-mode float32 forward pass,
  as a trained model's statistics come from its data; without this, activations grow 3-4x per
  stage on photos. (oneDNN's float32 rounding can differ between CPUs, so another CPU may give
  other last bits here; one machine always gives the same bytes.)
- Logit scale: afterwards `cls_x` and `cls_y` are multiplied by one factor, TARGET_LOGIT_STD /
  (std of all logits on the calibration images), rounded to two significant digits, so the logits'
  standard deviation there is about 100 and their largest magnitude several hundred, like the
  released models' (rtmpose-m hand21 reaches ~500).
- The training run is emulated: the objects are real and stepped, but afterwards the weights are
  set: the EMA model (what `state_dict` holds after EMAHook's swap, and what publishing keeps) gets
  the weights above, the raw model (`ema_state_dict['module.*']` after the swap) the same weights
  times (1 + 0.01 N(0, 1)), so a reader that takes the wrong set gives different outputs.
- `meta.time` and the experiment name's timestamp are fixed (TIMESTAMP); `mmengine_version` is
  written without a git hash, as when training from outside a git checkout.
- numpy arrays are pickled under numpy 1.x's names (`numpy.core.multiarray._reconstruct`), as in
  every released checkpoint, although numpy 2 is installed (`numpy1_pickle_names`).

## Forms (FORM, default `publish`)
| form | what it is | container |
|---|---|---|
| publish | `{'meta', 'state_dict'}` from publish_model.py | legacy, protocol 2 |
| train | `epoch_2.pth` as the Runner writes it (meta, state_dict, message_hub, optimizer, param_schedulers, ema_state_dict) | zip (mmengine's BytesIO: archive `archive/`) |
| ema | ExpMomentumEMA's own state_dict: `steps` + `module.`-prefixed averaged weights (configs with EMAHook: not rtmpose-t) | zip |
| state_dict | bare `state_dict` (`torch.save(model.state_dict())`) | zip |
| state_dict-module / state_dict-model | bare state_dict with every key prefixed `module.` / `model.` | zip |
| publish-fp16 / publish-bf16 | `{'meta', 'state_dict'}` with floating tensors cast to half / bfloat16 | zip |
| transfer | DWPose kinds only: DWPose's `mmpose/pth_transfer.py --two_dis` output (the training checkpoint of the distiller with `teacher.backbone.*` + `student.head.*` as `state_dict`, optimizer dropped, everything else kept; large: the distiller's EMA holds teacher and student) | zip |

For DWPose kinds `publish` is what OpenMMLab hosts (the `-<sha8>_<date>.pth` names of mmpose's
DWPose README, made by publish_model.py from the transferred file): `meta.cfg` is the distiller's
config (type DWPoseDistiller, architecture only by `student_cfg` path) and `state_dict` the plain
RTMPose-l weights without the `student.` prefix. Whether DWPose's own Google-Drive files carry
the EMA state is not documented; `transfer` keeps it, as the code does.

## Kinds (input_size is mmpose's (W, H); names follow the project: <H>x<W>)
| kind | config under mmpose/.mim/configs | K | (W, H) |
|---|---|---|---|
| rtmpose-t_coco17_256x192 | body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py | 17 | (192, 256) |
| rtmpose-s_coco17_256x192 | body_2d_keypoint/rtmpose/coco/rtmpose-s_8xb256-420e_coco-256x192.py | 17 | (192, 256) |
| rtmpose-m_coco17_256x192 | body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py | 17 | (192, 256) |
| rtmpose-l_coco17_256x192 | body_2d_keypoint/rtmpose/coco/rtmpose-l_8xb256-420e_coco-256x192.py | 17 | (192, 256) |
| rtmpose-m_coco17_384x288 | body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_aic-coco-384x288.py | 17 | (288, 384) |
| rtmpose-m_wholebody133_256x192 | wholebody_2d_keypoint/rtmpose/coco-wholebody/rtmpose-m_8xb64-270e_coco-wholebody-256x192.py | 133 | (192, 256) |
| rtmpose-m_hand21_256x256 | hand_2d_keypoint/rtmpose/hand5/rtmpose-m_8xb256-210e_hand5-256x256.py | 21 | (256, 256) |
| rtmpose-m_lapa106_256x256 | face_2d_keypoint/rtmpose/lapa/rtmpose-m_8xb64-120e_lapa-256x256.py | 106 | (256, 256) |
| rtmpose-m_wflw98_256x256 | face_2d_keypoint/rtmpose/wflw/rtmpose-m_8xb64-60e_wflw-256x256.py | 98 | (256, 256) |
| rtmpose-m_face68_256x256 | face_2d_keypoint/rtmpose/coco_wholebody_face/rtmpose-m_8xb32-60e_coco-wholebody-face-256x256.py | 68 | (256, 256) |
| rtmpose-m_crowdpose14_256x192 | body_2d_keypoint/rtmpose/crowdpose/rtmpose-m_8xb64-210e_crowdpose-256x192.py | 14 | (192, 256) |
| rtmpose-m_mpii16_256x256 | body_2d_keypoint/rtmpose/mpii/rtmpose-m_8xb64-210e_mpii-256x256.py | 16 | (256, 256) |
| rtmpose-m_custom38_256x192 | copy of the rtmpose-m coco config, `out_channels=38`, inline metainfo `body17_rhand21` (COCO body + right hand) | 38 | (192, 256) |
| rtmpose-m_coco17_320x240 | copy of the rtmpose-m coco config with input_size (240, 320); in_featuremap_size (8, 10) by ceil division (the shipped `s // 32` gives 7 for 240, which mmpose's own head cannot run) | 17 | (240, 320) |
| rtmw-m_wholebody133_256x192 | wholebody_2d_keypoint/rtmpose/cocktail14/rtmw-m_8xb1024-270e_cocktail14-256x192.py (CSPNeXtPAFPN neck, RTMWHead) | 133 | (192, 256) |
| dwpose-l_wholebody133_256x192 | wholebody_2d_keypoint/dwpose/ubody/s2_dis/dwpose_l-ll_coco-ubody-256x192.py (student: rtmpose/ubody/rtmpose-l_8xb64-270e_coco-ubody-wholebody-256x192.py) | 133 | (192, 256) |

Codec kinds (checkpoint_kinds.CODEC_KINDS, made the same way, not in KINDS: they test refusals and manifest notes):
| rtmpose-m_coco17_256x192-ratio3 | copy of the rtmpose-m coco config with codec (and so head) `simcc_split_ratio=3.0` (mmdeploy#2696) | 17 | (192, 256) |
| rtmpose-m_coco17_256x192-dark | copy of the rtmpose-m coco config with codec `use_dark=True` (mmdeploy#2316) | 17 | (192, 256) |
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import pickle
import pickletools
import sys
import tempfile
import time
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_kinds import ALL_KINDS as KINDS  # noqa: E402
from checkpoint_kinds import FORMS  # noqa: E402
from mmpose_import import import_mmpose  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTOS = tuple(REPO_ROOT / "pipeline" / "inputs" / "data" / name for name in ("astronaut.png", "camera.png"))
MEAN_RGB = (123.675, 116.28, 103.53)  # the configs' PoseDataPreprocessor
STD_RGB = (58.395, 57.12, 57.375)

TARGET_LOGIT_STD = 100.0
BUMP_WIDTH_BINS = 16.0
RAW_WEIGHT_NOISE = 0.01
ITERS_PER_EPOCH = 1
EPOCHS = 2
TIMESTAMP = "20240101_000000"


# --------------------------------------------------------------------------------------------- configs


def _replace_once(text: str, old: str, new: str, count: int = 1) -> str:
    if text.count(old) != count:
        raise RuntimeError(f"config edit: expected {count} x {old!r}, found {text.count(old)}")
    return text.replace(old, new)


def _edit_custom38(text: str) -> str:
    """A user's fine-tune on 38 keypoints: COCO's 17 body keypoints plus 21 right-hand ones."""
    mm = import_mmpose()
    coco = mm.Config.fromfile(os.path.join(mm.configs_dir, "_base_/datasets/coco.py"))
    hand = mm.Config.fromfile(os.path.join(mm.configs_dir, "_base_/datasets/coco_wholebody_hand.py"))
    keypoints, skeleton = {}, {}
    for i, info in coco.dataset_info.keypoint_info.items():
        keypoints[i] = dict(info)
    for i, info in hand.dataset_info.keypoint_info.items():
        keypoints[17 + i] = dict(name=f"right_hand_{info['name']}", id=17 + i, color=info["color"], type="upper",
                                 swap="")
    for i, info in coco.dataset_info.skeleton_info.items():
        skeleton[i] = dict(info)
    offset = len(skeleton)
    for i, info in hand.dataset_info.skeleton_info.items():
        link = tuple(f"right_hand_{name}" for name in info["link"])
        skeleton[offset + i] = dict(link=link, id=offset + i, color=info["color"])
    skeleton[len(skeleton)] = dict(link=("right_wrist", "right_hand_wrist"), id=len(skeleton), color=[255, 128, 0])
    metainfo = dict(dataset_name="body17_rhand21", paper_info=dict(), keypoint_info=keypoints, skeleton_info=skeleton,
                    joint_weights=list(coco.dataset_info.joint_weights) + [1.0] * 21,
                    sigmas=list(coco.dataset_info.sigmas) + list(hand.dataset_info.sigmas))
    text = _replace_once(text, "out_channels=17,", "out_channels=38,")
    text = _replace_once(text, "        data_mode=data_mode,\n", "        data_mode=data_mode,\n        metainfo=custom_metainfo,\n",
                         count=2)
    text = _replace_once(text, "# runtime\n", f"custom_metainfo = {metainfo!r}\n\n# runtime\n")
    return text


def _edit_size320x240(text: str) -> str:
    """An unreleased input size: H 320, W 240, and the head's feature map computed by ceil division."""
    text = _replace_once(text, "input_size=(192, 256),", "input_size=(240, 320),")
    return _replace_once(text, "in_featuremap_size=tuple([s // 32 for s in codec['input_size']]),",
                         "in_featuremap_size=tuple([(s + 31) // 32 for s in codec['input_size']]),")


def _edit_ratio3(text: str) -> str:
    """SimCC at split ratio 3.0 (codec and, through `codec['simcc_split_ratio']`, the head: 576x768 bins)."""
    return _replace_once(text, "simcc_split_ratio=2.0,", "simcc_split_ratio=3.0,")


def _edit_dark(text: str) -> str:
    """The codec decodes with DARK refinement (the network is unchanged)."""
    return _replace_once(text, "use_dark=False)", "use_dark=True)")


EDITS = {"custom38": _edit_custom38, "size320x240": _edit_size320x240, "ratio3": _edit_ratio3, "dark": _edit_dark}


@contextlib.contextmanager
def _in_directory(path: str):
    """mmpose's distiller configs name teacher and student configs relative to mmpose's root."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def load_config(name: str):
    """The kind's mmengine Config, as tools/train.py leaves it (launcher, work_dir)."""
    mm = import_mmpose()
    kind = KINDS[name]
    path = os.path.join(mm.configs_dir, kind.config)
    stem = Path(kind.config).stem
    if kind.edit:
        text = Path(path).read_text()
        text = _replace_once(text, "_base_ = ['../../../_base_/default_runtime.py']",
                             f"_base_ = [{os.path.join(mm.configs_dir, '_base_/default_runtime.py')!r}]")
        text = EDITS[kind.edit](text)
        stem = f"{stem.rsplit('-', 1)[0]}-{name.split('_', 1)[1]}"
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, stem + ".py")
            Path(path).write_text(text)
            cfg = mm.Config.fromfile(path)
    else:
        cfg = mm.Config.fromfile(path)
    cfg.launcher = "none"
    cfg.work_dir = f"./work_dirs/{stem}"
    return cfg, stem


# --------------------------------------------------------------------------------------------- model


def build_model(cfg) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model as trained, pose estimator inside it): the same module except for the DWPose distiller."""
    mm = import_mmpose()
    model_cfg = copy.deepcopy(cfg.model)
    if model_cfg.type == "DWPoseDistiller":
        with _in_directory(os.path.dirname(mm.configs_dir)):
            model = mm.MODELS.build(model_cfg)
        model = mm.revert_sync_batchnorm(model)
        return model, model.student
    model_cfg.backbone.init_cfg = None  # a URL to pretrained weights; never fetched
    model = mm.revert_sync_batchnorm(mm.MODELS.build(model_cfg))
    return model, model


def _bump_rows(rng: np.random.Generator, bins: int, dim: int) -> np.ndarray:
    """[bins, dim] rows that vary smoothly along the bins: sums of biweight bumps."""
    step = BUMP_WIDTH_BINS / 2
    count = int(np.ceil(bins / step)) + 3
    coefficients = rng.standard_normal((count, dim))
    position = np.arange(bins, dtype=np.float64)
    rows = np.zeros((bins, dim))
    for i in range(count):  # elementwise arithmetic only: the same bits on every CPU
        t = (position - (i - 1) * step) / BUMP_WIDTH_BINS
        bump = np.maximum(0.0, 1.0 - t * t) ** 2
        rows = rows + bump[:, None] * coefficients[i][None, :]
    return rows / np.sqrt(dim)


def seeded_state(state: "OrderedDict[str, torch.Tensor]", rng: np.random.Generator) -> "OrderedDict[str, torch.Tensor]":
    """Seeded values for every floating tensor of a state_dict (see the module docstring)."""
    out = OrderedDict()
    for key, value in state.items():
        shape = tuple(value.shape)
        if not value.is_floating_point():
            out[key] = value.clone()
            continue
        if key.endswith("running_var"):
            array = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            array = rng.standard_normal(shape) * 0.1
        elif key.endswith("bn.weight"):
            array = 1.0 + rng.standard_normal(shape) * 0.1
        elif key.endswith((".g", "res_scale.scale")):
            array = 1.0 + rng.standard_normal(shape) * 0.05
        elif key.endswith(("gau.gamma", "gau.beta")):
            array = rng.uniform(0.0, 1.0, shape)
        elif key.endswith(("cls_x.weight", "cls_y.weight")):
            array = _bump_rows(rng, *shape)
        elif value.dim() >= 2:
            array = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))
        else:
            array = rng.standard_normal(shape) * 0.1
        out[key] = torch.from_numpy(np.asarray(array, dtype=np.float32))
    return out


def _upsample(low: np.ndarray, height: int, width: int, cell: int) -> np.ndarray:
    """Bilinear upsampling of [N, h, w] by `cell`, elementwise (no library resampling)."""
    ys, xs = np.arange(height) / cell, np.arange(width) / cell
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[None, :, None], (xs - x0)[None, None, :]
    a, b = low[:, y0][:, :, x0], low[:, y0][:, :, x0 + 1]
    c, d = low[:, y0 + 1][:, :, x0], low[:, y0 + 1][:, :, x0 + 1]
    top, bottom = a + (b - a) * fx, c + (d - c) * fx
    return top + (bottom - top) * fy


def calibration_images(input_size: tuple[int, int], seed: int) -> np.ndarray:
    """[6, 3, H, W] float32, normalised as the data preprocessor does: 4 photo crops, 2 1/f-noise images."""
    import cv2

    width, height = input_size
    rng = np.random.default_rng(seed)
    mean = np.array(MEAN_RGB).reshape(3, 1, 1)
    std = np.array(STD_RGB).reshape(3, 1, 1)
    images = []
    for path in PHOTOS:
        photo = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        photo = photo.astype(np.float64).transpose(2, 0, 1)
        for scale in (1, 2):
            if height * scale > photo.shape[1] or width * scale > photo.shape[2]:
                scale = 1
            y = int(rng.integers(0, photo.shape[1] - height * scale + 1))
            x = int(rng.integers(0, photo.shape[2] - width * scale + 1))
            patch = photo[:, y:y + height * scale, x:x + width * scale]
            if scale == 2:  # 2x2 mean: the photo seen from twice as far
                patch = (patch[:, 0::2, 0::2] + patch[:, 1::2, 0::2] + patch[:, 0::2, 1::2] + patch[:, 1::2, 1::2]) / 4
            images.append((patch - mean) / std)
    noise = np.zeros((2, 3, height, width))
    for cell in (64, 32, 16, 8, 4, 2, 1):
        amplitude = (cell / 64.0) ** 0.7
        common = _upsample(rng.standard_normal((2, height // cell + 2, width // cell + 2)), height, width, cell)
        for channel in range(3):
            own = _upsample(rng.standard_normal((2, height // cell + 2, width // cell + 2)), height, width, cell)
            noise[:, channel] += amplitude * (common + 0.3 * own)
    noise = noise / np.sqrt((noise * noise).mean(axis=(2, 3), keepdims=True))
    return np.concatenate([np.stack(images), noise]).astype(np.float32)


def simcc_logits(estimator: torch.nn.Module, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return estimator.head.forward(estimator.extract_feat(torch.from_numpy(images)))


def calibrate(estimator: torch.nn.Module, images: np.ndarray) -> tuple[float, torch.Tensor, torch.Tensor]:
    """BN statistics from the images, then the classifier factor.

    Returns (factor, simcc_x, simcc_y): the logits on the images, times the factor (what the
    scaled classifiers give, up to float32 rounding).
    """
    for module in estimator.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch gives exactly its statistics
    estimator.train()
    simcc_logits(estimator, images)
    estimator.eval()
    for module in estimator.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    simcc_x, simcc_y = simcc_logits(estimator, images)
    spread = float(torch.cat([simcc_x.flatten(), simcc_y.flatten()]).double().std())
    factor = float(f"{TARGET_LOGIT_STD / spread:.2g}")
    with torch.no_grad():
        estimator.head.cls_x.weight.mul_(factor)
        estimator.head.cls_y.weight.mul_(factor)
    return factor, simcc_x * factor, simcc_y * factor


def make_weights(name: str, model: torch.nn.Module,
                 estimator: torch.nn.Module) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Seed and calibrate the model in place; returns what `calibrate` returns."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    estimator.load_state_dict(seeded_state(estimator.state_dict(), rng))
    factor, simcc_x, simcc_y = calibrate(estimator, calibration_images(KINDS[name].input_size,
                                                                        seed=zlib.crc32(name.encode()) + 1))
    if model is not estimator:  # DWPose stage 2: the teacher shares the backbone, its own head differs
        teacher_state = OrderedDict((k, v.clone()) for k, v in estimator.state_dict().items())
        head = seeded_state(OrderedDict((k, v) for k, v in teacher_state.items() if k.startswith("head.")), rng)
        for key, value in head.items():
            teacher_state[key] = value * factor if key.endswith(("cls_x.weight", "cls_y.weight")) else value
        model.teacher.load_state_dict(teacher_state)
        model.teacher.eval()
    return factor, simcc_x, simcc_y


# --------------------------------------------------------------------------------------------- checkpoints


def dataset_meta(cfg) -> dict:
    """What the Runner stores: the training dataset's metainfo as parse_pose_metainfo returns it."""
    mm = import_mmpose()
    dataset = cfg.train_dataloader.dataset
    metainfo = dataset.get("metainfo") or mm.DATASETS.get(dataset.type).METAINFO
    with _in_directory(os.path.dirname(mm.configs_dir)):  # `from_file` paths are relative to mmpose's root
        return mm.parse_pose_metainfo(copy.deepcopy(metainfo.to_dict() if hasattr(metainfo, "to_dict") else metainfo))


def _set_weights(module: torch.nn.Module, state: "OrderedDict[str, torch.Tensor]") -> None:
    with torch.no_grad():
        for key, value in module.state_dict(keep_vars=True).items():
            value.copy_(state[key])


def runner_meta(cfg, stem: str) -> dict:
    """`meta` as Runner.save_checkpoint fills it after EPOCHS epochs of ITERS_PER_EPOCH iterations."""
    import mmengine

    experiment_name = f"{stem}_{TIMESTAMP}"
    meta = {"epoch": EPOCHS, "iter": EPOCHS * ITERS_PER_EPOCH}
    meta.update(cfg=cfg.pretty_text, seed=cfg.get("randomness", {}).get("seed", 0), experiment_name=experiment_name,
                time=TIMESTAMP, mmengine_version=mmengine.__version__)
    meta.update(dataset_meta=dataset_meta(cfg))
    return meta


def training_checkpoint(cfg, meta: dict, model: torch.nn.Module, seed: int) -> tuple[dict, dict | None]:
    """(epoch_N checkpoint as Runner.save_checkpoint + EMAHook write it, the EMA model's own state_dict).

    Without an EMAHook in the config the checkpoint has no `ema_state_dict`, the model holds the
    weights and the second item is None. `meta` is runner_meta's.
    """
    from mmengine.logging import MessageHub
    from mmengine.optim import build_optim_wrapper
    from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR

    mm = import_mmpose()
    rng = np.random.default_rng(seed)
    final = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    raw = OrderedDict()
    for key, value in final.items():
        noise = torch.from_numpy(rng.standard_normal(tuple(value.shape)).astype(np.float32))
        raw[key] = value * (1 + RAW_WEIGHT_NOISE * noise) if value.is_floating_point() else value.clone()

    max_epochs = cfg.train_cfg.max_epochs
    hub = MessageHub.get_instance(meta["experiment_name"])
    hub.update_info_dict({k: meta[k] for k in ("cfg", "seed", "experiment_name", "mmengine_version")})
    hub.update_info("loop_stage", "train")
    hub.update_info("epoch", 0)
    hub.update_info("iter", 0)
    hub.update_info("max_epochs", max_epochs)
    hub.update_info("max_iters", max_epochs * ITERS_PER_EPOCH)
    hub.update_info("dataset_meta", copy.deepcopy(meta["dataset_meta"]))

    model.train()
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    schedulers = []
    for spec in copy.deepcopy(cfg.param_scheduler):
        spec = dict(spec)
        kind = spec.pop("type")
        if kind == "LinearLR":
            schedulers.append(LinearLR(optim_wrapper, **spec))
        elif kind == "CosineAnnealingLR":
            spec.pop("convert_to_iter_based")
            schedulers.append(CosineAnnealingLR.build_iter_from_epoch(optim_wrapper, epoch_length=ITERS_PER_EPOCH,
                                                                      **spec))
        else:
            raise RuntimeError(f"param_scheduler {kind} is not emulated")
    ema_cfg = next((h for h in cfg.get("custom_hooks", []) if h["type"] == "EMAHook"), None)
    ema = None
    if ema_cfg is not None:  # rtmpose-t's config switches EMA off
        ema = mm.MODELS.build(dict(type=ema_cfg["ema_type"], model=model, momentum=ema_cfg["momentum"],
                                   update_buffers=ema_cfg["update_buffers"]))
    params = [p for p in model.parameters() if p.requires_grad]
    step = 0
    for epoch in range(EPOCHS):
        hub.update_info("epoch", epoch)
        for _ in range(ITERS_PER_EPOCH):
            hub.update_info("iter", step)
            hub.update_scalar("train/lr", optim_wrapper.get_lr()["lr"][0])
            for param in params:
                param.grad = torch.from_numpy(rng.standard_normal(tuple(param.shape)).astype(np.float32) * 1e-3)
            optim_wrapper.step()
            optim_wrapper.zero_grad()
            if ema is not None:
                ema.update_parameters(model)
            for scheduler in schedulers:
                scheduler.step()
            loss_kpt = float(0.5 + 0.1 * rng.random())
            hub.update_scalars({"train/loss": loss_kpt, "train/loss_kpt": loss_kpt,
                                "train/acc_pose": float(0.1 * rng.random()),
                                "train/time": float(0.5 + 0.05 * rng.random()),
                                "train/data_time": float(0.01 + 0.01 * rng.random())})
            hub.update_info("eta", float((max_epochs * ITERS_PER_EPOCH - step - 1) * 0.5))
            step += 1
        if epoch + 1 < EPOCHS:  # CheckpointHook records the previous checkpoint after saving it
            hub.update_info("last_ckpt", f"{cfg.work_dir}/epoch_{epoch + 1}.pth")
    model.eval()
    if ema is None:
        _set_weights(model, final)
    else:
        _set_weights(model, raw)
        _set_weights(ema.module, final)

    if (meta["epoch"], meta["iter"]) != (EPOCHS, step):
        raise RuntimeError("runner_meta's epoch/iter disagree with the emulated run")
    checkpoint = {
        "meta": copy.deepcopy(meta),
        "state_dict": _to_cpu(model.state_dict()),
        "message_hub": hub.state_dict(),
        "optimizer": optim_wrapper.state_dict(),
        "param_schedulers": [scheduler.state_dict() for scheduler in schedulers],
    }
    if ema is None:
        return checkpoint, None
    ema_state = ema.state_dict()
    # EMAHook.before_save_checkpoint: store the EMA state, then swap it with the model's weights
    checkpoint["ema_state_dict"] = OrderedDict((k, v.detach().clone()) for k, v in ema_state.items())
    for key in checkpoint["ema_state_dict"]:
        if key.startswith("module."):
            tmp = checkpoint["ema_state_dict"][key]
            checkpoint["ema_state_dict"][key] = checkpoint["state_dict"][key[7:]]
            checkpoint["state_dict"][key[7:]] = tmp
    for key, value in checkpoint["state_dict"].items():
        if not torch.equal(value, final[key]):
            raise RuntimeError(f"after the EMA swap, state_dict[{key}] is not the EMA weight")
    return checkpoint, OrderedDict((k, v.detach().clone()) for k, v in ema_state.items())


def _to_cpu(state: dict) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.detach().cpu().clone()) for k, v in state.items())


def _cast(state: dict, dtype: torch.dtype) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.to(dtype) if v.is_floating_point() else v) for k, v in state.items())


def dwpose_transfer(checkpoint: dict) -> dict:
    """DWPose's mmpose/pth_transfer.py with --two_dis: teacher backbone + student head, optimizer dropped."""
    state = OrderedDict()
    for key, value in checkpoint["state_dict"].items():
        if key.startswith("teacher.backbone") or key.startswith("student.head"):
            state[key[8:]] = value
    out = dict(checkpoint)
    out["state_dict"] = state
    out.pop("optimizer", None)
    return out


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for value in obj.values() for t in _tensors(value)]
    if isinstance(obj, (list, tuple)):
        return [t for value in obj for t in _tensors(value)]
    return []


def save_legacy(obj: dict, path: Path) -> None:
    """torch.save(obj, path, _use_new_zipfile_serialization=False) with reproducible storage keys.

    The legacy format names each storage by its memory address (`str(storage._cdata)`) and
    writes the storages sorted by that name, so two saves of equal tensors differ in bytes. Here
    the addresses are replaced by stand-ins of the same form (14-digit decimals, ascending in the
    order the pickle first names them) and the storages are written in that order; every other
    byte is torch's own output.
    """
    element_sizes = {str(t.untyped_storage()._cdata): t.element_size() for t in _tensors(obj)}
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    stream = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, sys_info
        for _op in pickletools.genops(stream):
            pass
    main_start = stream.tell()
    ops = list(pickletools.genops(stream))  # positions are offsets in `data`
    main_end = stream.tell()
    strings = []  # (start, end, text) of each storage key in the main pickle
    for (op, arg, pos), (_, _, next_pos) in zip(ops, ops[1:] + [(None, None, main_end)]):
        if op.name == "BINUNICODE" and arg in element_sizes:
            strings.append((pos, next_pos, arg))
    keys_start = main_end
    old_keys = [arg for op, arg, _ in pickletools.genops(stream) if op.name == "BINUNICODE"]
    keys_end = stream.tell()
    if pickle.dumps(old_keys, protocol=2) != data[keys_start:keys_end]:
        raise RuntimeError("legacy save: unexpected layout of the storage key list")
    blocks = {}
    position = keys_end
    for key in old_keys:
        count = int.from_bytes(data[position:position + 8], "little")
        end = position + 8 + count * element_sizes[key]
        blocks[key] = data[position:end]
        position = end
    if position != len(data):
        raise RuntimeError("legacy save: unexpected bytes after the storages")
    order = list(dict.fromkeys(text for _, _, text in strings))
    renamed = {old: str(94000000000000 + 64 * i) for i, old in enumerate(order)}
    out = io.BytesIO()
    out.write(data[:main_start])
    cursor = main_start
    for start, end, text in strings:
        out.write(data[cursor:start])
        encoded = renamed[text].encode()
        out.write(b"X" + len(encoded).to_bytes(4, "little") + encoded)  # BINUNICODE, as torch writes them
        cursor = end
    out.write(data[cursor:main_end])
    out.write(pickle.dumps([renamed[old] for old in order], protocol=2))
    for old in order:
        out.write(blocks[old])
    Path(path).write_bytes(out.getvalue())


@contextlib.contextmanager
def numpy1_pickle_names():
    """Pickle numpy arrays and scalars under numpy 1.x's names while torch.save runs.

    numpy 2 pickles `numpy._core.multiarray._reconstruct`; every released checkpoint (and the
    mmengine training checkpoint in ../shared/cases) was written under numpy 1.x and names
    `numpy.core.multiarray._reconstruct`. The same functions are re-exported under the old module
    (numpy 2's `numpy.core` shim), so the files load under either numpy.
    """
    from numpy._core import multiarray

    old_module = sys.modules.get("numpy.core.multiarray") or __import__("numpy.core.multiarray").core.multiarray
    proxies = {}
    for name in ("_reconstruct", "scalar"):
        def proxy(*args, _name=name):
            return getattr(multiarray, _name)(*args)
        proxy.__module__, proxy.__name__, proxy.__qualname__ = "numpy.core.multiarray", name, name
        proxies[getattr(multiarray, name)] = proxy
        setattr(old_module, name, proxy)  # pickle checks that module.name is the object it saves

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, (np.ndarray, np.generic)):
                reduced = obj.__reduce__()
                if reduced[0] in proxies:
                    return (proxies[reduced[0]], *reduced[1:])
            return NotImplemented

    original = pickle.Pickler
    pickle.Pickler = Pickler  # torch.save's default pickle_module is the `pickle` module
    try:
        yield
    finally:
        pickle.Pickler = original
        for name in ("_reconstruct", "scalar"):
            delattr(old_module, name)


def write(form: str, checkpoint: dict, ema_state: dict, is_distiller: bool, path: Path) -> None:
    with numpy1_pickle_names():
        _write(form, checkpoint, ema_state, is_distiller, path)


def _write(form: str, checkpoint: dict, ema_state: dict, is_distiller: bool, path: Path) -> None:
    from mmengine.runner.checkpoint import save_checkpoint

    if is_distiller:
        if form == "train":
            raise ValueError("the distiller's own training checkpoint is not a user file; use publish or transfer")
        checkpoint = dwpose_transfer(checkpoint)
    elif form == "transfer":
        raise ValueError("form transfer exists only for DWPose kinds")
    if form == "transfer":
        torch.save(checkpoint, path)
    elif form == "train":
        save_checkpoint(checkpoint, str(path))
    elif form == "publish":
        save_legacy({k: checkpoint[k] for k in ("meta", "state_dict")}, path)
    elif form in ("publish-fp16", "publish-bf16"):
        dtype = torch.float16 if form == "publish-fp16" else torch.bfloat16
        torch.save({"meta": checkpoint["meta"], "state_dict": _cast(checkpoint["state_dict"], dtype)}, path)
    elif form == "ema":
        if is_distiller or ema_state is None:
            raise ValueError("form ema needs a config with EMAHook (rtmpose-t's has none) and no distiller")
        torch.save(ema_state, path)
    elif form.startswith("state_dict"):
        prefix = {"state_dict": "", "state_dict-module": "module.", "state_dict-model": "model."}[form]
        torch.save(OrderedDict((prefix + k, v) for k, v in checkpoint["state_dict"].items()), path)
    else:
        raise ValueError(f"unknown form {form!r}; choose one of {', '.join(FORMS)}")


# --------------------------------------------------------------------------------------------- main


class Maker:
    """Builds each kind once per process and writes any of its forms.

    The training state (optimizer, schedulers, message hub, EMA) is made only for the forms that
    hold it; the other forms are what publishing the training checkpoint keeps, which needs only
    the weights and `meta`.
    """

    TRAINING_FORMS = ("train", "ema", "transfer")

    def __init__(self) -> None:
        self._built: dict[str, dict] = {}

    def _build(self, name: str, training: bool) -> dict:
        if name not in self._built:
            started, cpu_started = time.perf_counter(), time.process_time()
            kind = KINDS[name]
            cfg, stem = load_config(name)
            model, estimator = build_model(cfg)
            head = estimator.head
            if head.out_channels != kind.num_keypoints or tuple(head.input_size) != kind.input_size:
                raise RuntimeError(f"{name}: config gives K={head.out_channels}, input_size={head.input_size}")
            factor, simcc_x, simcc_y = make_weights(name, model, estimator)
            logits = torch.cat([simcc_x.flatten(1), simcc_y.flatten(1)], 1)
            if not torch.isfinite(logits).all():
                raise RuntimeError(f"{name}: non-finite logits")
            peak = torch.cat([simcc_x.amax(-1) - simcc_x.mean(-1), simcc_y.amax(-1) - simcc_y.mean(-1)])
            meta = runner_meta(cfg, stem)
            self._built[name] = dict(
                cfg=cfg, model=model, meta=meta, is_distiller=model is not estimator,
                checkpoint={"meta": meta, "state_dict": _to_cpu(model.state_dict())}, ema_state=None,
                stats=dict(cls_factor=factor, logit_max=round(float(logits.abs().max()), 1),
                           peak_over_mean_median=round(float(peak.median()), 1),
                           build_seconds=round(time.perf_counter() - started, 2),
                           build_cpu_seconds=round(time.process_time() - cpu_started, 2)))
        built = self._built[name]
        if training and "training_seconds" not in built["stats"]:
            started, cpu_started = time.perf_counter(), time.process_time()
            checkpoint, ema_state = training_checkpoint(built["cfg"], built["meta"], built["model"],
                                                        seed=zlib.crc32(name.encode()) + 3)
            if (ema_state is not None) != KINDS[name].has_ema:
                raise RuntimeError(f"{name}: checkpoint_kinds.Kind.has_ema disagrees with the config")
            for key, value in built["checkpoint"]["state_dict"].items():
                if not torch.equal(value, checkpoint["state_dict"][key]):
                    raise RuntimeError(f"{name}: the training checkpoint's state_dict[{key}] is not the published one")
            built.update(checkpoint=checkpoint, ema_state=ema_state)
            built["stats"]["training_seconds"] = round(time.perf_counter() - started, 2)
            built["stats"]["training_cpu_seconds"] = round(time.process_time() - cpu_started, 2)
        return built

    def make(self, spec: str, out: Path) -> dict:
        name, _, form = spec.partition(":")
        form = form or "publish"
        if name not in KINDS:
            raise SystemExit(f"error: unknown kind {name!r}; choose one of {', '.join(KINDS)}")
        if form not in KINDS[name].forms:
            raise SystemExit(f"error: {name} has no form {form!r}; choose one of {', '.join(KINDS[name].forms)}")
        training = form in self.TRAINING_FORMS
        built = self._build(name, training)
        started = time.perf_counter()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write(form, built["checkpoint"], built["ema_state"], built["is_distiller"], out)
        kind = KINDS[name]
        return dict(kind=name, form=form, path=str(out), config=kind.config, num_keypoints=kind.num_keypoints,
                    input_size=list(kind.input_size), sha256=hashlib.sha256(out.read_bytes()).hexdigest(),
                    bytes=out.stat().st_size, write_seconds=round(time.perf_counter() - started, 2),
                    **built["stats"])


def main(argv: list[str]) -> None:
    if argv == ["--list"]:
        for name, kind in KINDS.items():
            print(json.dumps(dict(kind=name, config=kind.config, num_keypoints=kind.num_keypoints,
                                  input_size=list(kind.input_size))))
        return
    if not argv or len(argv) % 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    torch.manual_seed(0)  # nothing here should draw from torch's generator; this makes sure it cannot vary
    maker = Maker()
    for spec, out in zip(argv[0::2], argv[1::2]):
        print(json.dumps(maker.make(spec, Path(out))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

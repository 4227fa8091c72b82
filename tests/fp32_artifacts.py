"""The fp32 artifacts of the demo checkpoint that the infer, drop-in and evaluate tests share, and the reference
pose they are compared with (PyTorch on mmpose's crop, mmpose's decode)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import torch

from pipeline.inputs.golden import DATA_DIR
from pipeline.model.decode import decode_simcc
from pipeline.model.preprocess import crop, load_rgb, normalize, to_image_coords
from pipeline.run.configure import load_config
from pipeline.run.steps.build import build

from conftest import DEMO_CHECKPOINT, VARIANT, unambiguous_keypoints

TARGETS = ("onnxruntime-fp32", "openvino-fp32")
IMAGE = DATA_DIR / "astronaut.png"
BOX = (20.0, 10.0, 370.0, 512.0)


def fp32_overrides(out_dir: Path) -> list[str]:
    """The config of the fp32 artifacts: the demo checkpoint, both fp32 targets, outputs under `out_dir`."""
    return [f"model.checkpoint={DEMO_CHECKPOINT}", f"out_dir={out_dir}", f"targets=[{','.join(TARGETS)}]"]


@functools.lru_cache(maxsize=None)
def build_fp32_artifacts(onnx_path: Path, out_dir: Path):
    """cfg with the fp32 artifacts built by the `build` step from the demo checkpoint's ONNX (`demo_onnx`); built
    once per test session (tests/package/test_dropin.py and tests/check/test_evaluate.py use it too)."""
    cfg = load_config(fp32_overrides(out_dir))
    simplified = Path(cfg.plan["variants"][VARIANT]["simplified_onnx"])
    simplified.parent.mkdir(parents=True)
    shutil.copyfile(onnx_path, simplified)
    for job in cfg.plan["jobs"]:
        build(cfg, job)
    return cfg


def copy_fp32_artifacts(shared_cfg, root: Path):
    """cfg of a copy of the shared fp32 artifacts under `root`: a test that writes beside the artifacts (drop-in
    files, an evaluation) writes into its own copy, never into the folder test_infer and test_evaluate read."""
    out = root / "fp32-artifacts"
    shutil.copytree(shared_cfg.out_dir, out)
    return load_config(fp32_overrides(out))


def artifact_dir(cfg, target: str) -> Path:
    return Path(cfg.plan["jobs"][f"{VARIANT}.{target}"]["artifact"])


def reference_pose(model, box=BOX):
    """PyTorch on the mmpose crop, mmpose decode, back to image pixels: keypoints [K,2], scores [K] and
    which keypoints any runtime decodes to the same bins ([K] bool; at least half of them, or the test
    image says too little)."""
    crop_rgb, matrix = crop(load_rgb(IMAGE), box, (256, 192))
    with torch.no_grad():
        simcc_x, simcc_y = (out.numpy() for out in model(torch.from_numpy(normalize(crop_rgb)[None])))
    keypoints, scores = decode_simcc(simcc_x, simcc_y)
    unambiguous = unambiguous_keypoints(simcc_x, simcc_y)[0]
    assert unambiguous.sum() >= len(unambiguous) // 2, unambiguous
    return to_image_coords(keypoints[0].astype(np.float64), matrix), scores[0], unambiguous

"""Run mmpose's own model, built from a checkpoint's config, on its weights; write SimCC logits as .npz.

Usage:
    python tests/upstream/mmpose_model_outputs.py CHECKPOINT INPUTS.npy OUT.npz [CHECKPOINT INPUTS.npy OUT.npz ...]
                                                  [--config FILE] [--float64]

Several (checkpoint, inputs, out) triples share one process: importing mmpose takes seconds.

The model is built as `mmpose.apis.init_model` builds it (the config's `model` with the backbone's
`init_cfg` and `train_cfg` dropped, default scope mmpose, SyncBN reverted to BN) from
- `--config FILE` when given (an mmpose config file), else
- the checkpoint's `meta.cfg` (mmengine's `Config.pretty_text`, read back with `Config.fromstring`);
  a DWPose distiller config is replaced by its `student_cfg`, which is how DWPose's own inference
  code builds the released students.
The weights are the checkpoint's `state_dict` (or the file itself when it is a bare state_dict;
EMA files' `steps` entry dropped; a `module.`/`model.` prefix on every key removed), loaded
strictly; fp16/bf16 tensors are widened to the model's dtype by `load_state_dict`.
INPUTS.npy is [N, 3, H, W] float32, already normalised. OUT.npz holds `simcc_x` [N, K, W*r] and
`simcc_y` [N, K, H*r] (float32, or float64 with `--float64`, which runs model and inputs in float64), and
`keypoints` [N, K, 2] (input pixels) and `scores` [N, K]: mmpose's own decode of those logits, the head's
codec (`model.head.decoder.decode`, SimCCLabel with the config's split ratio, DARK and visibility settings),
where the head has one.

For the test suite's own fixture files only: the checkpoint is unpickled with weights_only=False
(mmengine's HistoryBuffer objects in training checkpoints), so never point it at a file you did
not make. Runs in its own process (mmpose is imported with the hacks of `mmpose_import.py`).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mmpose_import import import_mmpose  # noqa: E402

PREFIXES = ("module.", "model.")


def checkpoint_state(checkpoint: dict) -> "OrderedDict[str, torch.Tensor]":
    """The weights of a checkpoint in any of make_checkpoints.py's forms, keys as the model names them."""
    state = checkpoint["state_dict"] if isinstance(checkpoint.get("state_dict"), dict) else checkpoint
    state = OrderedDict((k, v) for k, v in state.items() if k != "steps")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = OrderedDict((k[len(prefix):], v) for k, v in state.items())
    return state


def model_config(checkpoint: dict, config_path: str | None):
    mm = import_mmpose()
    if config_path:
        cfg = mm.Config.fromfile(config_path)
    else:
        meta = checkpoint.get("meta") or {}
        if "cfg" not in meta:
            raise SystemExit("error: the checkpoint has no meta.cfg; pass --config")
        cfg = mm.Config.fromstring(meta["cfg"], ".py")
    if cfg.model.type == "DWPoseDistiller":
        cfg = mm.Config.fromfile(os.path.join(os.path.dirname(mm.configs_dir), cfg.model.student_cfg))
    return cfg


def build_estimator(cfg) -> torch.nn.Module:
    """mmpose.apis.init_model's construction, without loading weights or moving devices."""
    mm = import_mmpose()
    model_cfg = copy.deepcopy(cfg.model)
    if "init_cfg" in model_cfg.backbone:
        model_cfg.backbone.init_cfg = None
    model_cfg.train_cfg = None
    return mm.revert_sync_batchnorm(mm.MODELS.build(model_cfg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("triples", nargs="+", metavar="CHECKPOINT INPUTS OUT")
    parser.add_argument("--config", default=None)
    parser.add_argument("--float64", action="store_true")
    args = parser.parse_args()
    if len(args.triples) % 3:
        parser.error("expected CHECKPOINT INPUTS.npy OUT.npz triples")

    import_mmpose()
    for checkpoint_path, inputs_path, out_path in zip(*[iter(args.triples)] * 3):
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        model = build_estimator(model_config(checkpoint, args.config))
        model.load_state_dict(checkpoint_state(checkpoint), strict=True)
        model.eval()
        inputs = torch.from_numpy(np.load(inputs_path))
        if args.float64:
            model.double()
            inputs = inputs.double()
        with torch.no_grad():
            simcc_x, simcc_y = model(inputs, None, mode="tensor")
        decoded = {}
        if getattr(model.head, "decoder", None) is not None:  # a head built without a codec cannot decode
            keypoints, scores = model.head.decoder.decode(simcc_x.float().numpy(), simcc_y.float().numpy())
            if isinstance(scores, tuple):  # decode_visibility=True: (scores, visibility)
                scores = scores[0]
            decoded = dict(keypoints=keypoints, scores=scores)
        np.savez(out_path, simcc_x=simcc_x.numpy(), simcc_y=simcc_y.numpy(), **decoded)


if __name__ == "__main__":
    main()

"""Load RTMPose weights from the forms users hold them in, without unpickling untrusted code.

Forms: an mmpose checkpoint (`{'meta', 'state_dict', ...}`, legacy or zip format), a bare
state_dict (optionally prefixed `module.`/`model.`), or a whole pickled model (opt-in only).
Everything except the opt-in path goes through `torch.load(weights_only=True)`, with an
allow-list of the numpy globals that mmpose writes into `meta.dataset_meta` and an inert
placeholder for mmengine's training-state classes (their contents are never used).
"""

from __future__ import annotations

import hashlib
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.keypoints import KEYPOINT_SETS
from pipeline.variants import SCALES, Variant

PREFIXES = ("module.", "model.")


class _InertTrainingState:
    """Stands in for mmengine objects found in training checkpoints; holds data, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _numpy_globals() -> list[tuple[Any, str]]:
    """numpy objects that pickled arrays/scalars reference, under numpy 1.x and 2.x names."""
    from numpy._core import multiarray

    pairs: list[tuple[Any, str]] = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        pairs += [(multiarray._reconstruct, f"{mod}._reconstruct"), (multiarray.scalar, f"{mod}.scalar")]
    for name in dir(np.dtypes):
        obj = getattr(np.dtypes, name)
        if isinstance(obj, type) and name.endswith("DType"):
            pairs.append((obj, f"numpy.dtypes.{name}"))
    return pairs


_TRAINING_STATE_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "mmengine.logging.message_hub.MessageHub",
)


def _safe_globals() -> list[tuple[Any, str]]:
    return _numpy_globals() + [(_InertTrainingState, name) for name in _TRAINING_STATE_GLOBALS]


@dataclass(frozen=True)
class LoadedWeights:
    state_dict: "OrderedDict[str, torch.Tensor]"
    meta: dict[str, Any]
    form: str  # "mmpose-checkpoint" | "state_dict" | "pickled-model"
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # Only a GLOBAL outside the allow-list means "a real pickle of Python objects"; anything
        # else (an unknown opcode in random bytes, say) is a damaged file, and opting in would not help.
        if "unsupported global" not in text.lower():
            raise InputError(f"model.checkpoint={path}: not a readable PyTorch file ({_first_line(text)}); "
                             "re-download or re-save it") from None
        if not trust_pickle:
            raise InputError(
                f"model.checkpoint={path} is a pickled Python object ({_unsafe_global(text)}), and loading it "
                "would run code from the file; save a state_dict instead, or set model.trust_pickle=true "
                "if you trust its source") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError) as exc:
        raise InputError(f"model.checkpoint={path}: corrupt or truncated PyTorch file "
                         f"({_first_line(str(exc))}); re-download or re-save it") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # arbitrary code ran by the user's explicit choice; report what broke
        raise InputError(f"model.checkpoint={path}: trusted pickle failed to load "
                         f"({type(exc).__name__}: {_first_line(str(exc))})") from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "no details"


def _unsafe_global(text: str) -> str:
    for line in text.splitlines():
        if "Unsupported global" in line:
            return line.strip().split("GLOBAL", 1)[-1].split(" was not")[0].strip()
    return "unsupported global"


def _strip_prefix(state_dict: dict[str, Any]) -> "OrderedDict[str, torch.Tensor]":
    for prefix in PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return OrderedDict(state_dict)


def load_weights(path: str | Path, trust_pickle: bool = False) -> LoadedWeights:
    """Read a checkpoint file into a state_dict with `backbone.`/`head.` keys."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model.checkpoint={path} does not exist; point it at a .pth or .onnx file")
    obj = _torch_load(path, trust_pickle)
    digest = sha256_file(path)
    if isinstance(obj, torch.nn.Module):
        return LoadedWeights(_strip_prefix(obj.state_dict()), {}, "pickled-model", digest)
    if not isinstance(obj, dict):
        raise InputError(f"model.checkpoint={path} holds a {type(obj).__name__}, not a checkpoint or state_dict")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
        return LoadedWeights(_strip_prefix(obj["state_dict"]), meta, "mmpose-checkpoint", digest)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return LoadedWeights(_strip_prefix(obj), {}, "state_dict", digest)
    raise InputError(f"model.checkpoint={path} is a dict without 'state_dict' and not a state_dict itself "
                     f"(keys: {', '.join(list(obj)[:5])}); save model.state_dict() or an mmpose checkpoint")


def infer_variant(state_dict: dict[str, torch.Tensor]) -> Variant | None:
    """Read scale, keypoint set and input size off the tensor shapes; None if not an RTMPose."""
    try:
        num_kpts = state_dict["head.final_layer.weight"].shape[0]
        width = state_dict["head.cls_x.weight"].shape[0] // 2
        height = state_dict["head.cls_y.weight"].shape[0] // 2
        stem_channels = state_dict["backbone.stem.2.conv.weight"].shape[0]
        stage1_blocks = len({k.split(".")[4] for k in state_dict if k.startswith("backbone.stage1.1.blocks.")})
    except (KeyError, IndexError, AttributeError):
        return None
    kpts = next((name for name, names in KEYPOINT_SETS.items() if len(names) == num_kpts), None)
    scale = next((s for s, (deepen, widen) in SCALES.items()
                  if int(64 * widen) == stem_channels and max(round(3 * deepen), 1) == stage1_blocks), None)
    if kpts is None or scale is None:
        return None
    return Variant(scale, kpts, (height, width))


def load_into_model(model: torch.nn.Module, weights: LoadedWeights, variant: Variant, source: str) -> None:
    """Strict load; a checkpoint of another variant is refused with the variant it does fit."""
    fits = infer_variant(weights.state_dict)
    if fits is None:
        raise InputError(f"model.checkpoint={source} does not look like an RTMPose checkpoint "
                         "(no backbone.stem/head.cls_x keys)")
    if fits != variant:
        raise InputError(f"model.checkpoint={source} fits {fits.name}, not model.name={variant.name}; "
                         f"set model={fits.name}")
    missing, unexpected = model.load_state_dict(weights.state_dict, strict=False)
    if missing or unexpected:
        raise InputError(f"model.checkpoint={source} does not match {variant.name}: "
                         f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")


def save_mmpose_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], variant: Variant,
                           extra_meta: dict[str, Any] | None = None) -> None:
    """Write `{'meta', 'state_dict'}` like mmpose does, numpy arrays in meta included."""
    names = variant.keypoint_names
    meta = {
        "dataset_meta": {
            "dataset_name": variant.keypoints,
            "num_keypoints": len(names),
            "keypoint_id2name": dict(enumerate(names)),
            "sigmas": np.full(len(names), 0.05, dtype=np.float32),
        },
        **(extra_meta or {}),
    }
    tensors = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in state_dict.items())
    torch.save({"meta": meta, "state_dict": tensors}, path)

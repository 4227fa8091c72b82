"""Load RTMPose-family weights from every layout users hold them in, without running code from the file.

Layouts (`LoadedWeights.form`):
- `mmpose-checkpoint`: `{'meta', 'state_dict'}` as mmpose's publish script saves it (legacy protocol-2
  format or zip), `meta` holding `cfg` (config text) and `dataset_meta` (numpy arrays);
- `training-checkpoint`: mmengine Runner's `epoch_N.pth`/`best_*.pth`, which adds `message_hub`
  (HistoryBuffer objects), `optimizer`, `param_schedulers` and `ema_state_dict`. Its `state_dict`
  already holds the averaged weights: mmengine's EMAHook swaps them in before saving
  (`hooks/ema_hook.py`, `_swap_ema_state_dict`), which is what publishing keeps;
- `distiller-checkpoint`: DWPose training output, the student under a `student.` prefix (DWPose's
  `pth_transfer.py` strips it; released DWPose files are plain mmpose checkpoints);
- `ema-state-dict`: EMA weights saved alone (`steps` plus `module.`-prefixed keys);
- `state_dict`: a bare state_dict, optionally prefixed `module.`/`model.`;
- `pickled-model`: a whole `torch.save(model)`; loading it runs code, so only with `trust_pickle`.
Floating tensors stored in fp16/bf16 are widened to fp32 (exact).

Everything except the opt-in path goes through `torch.load(weights_only=True)` with an allow-list:
numpy's array globals, `bytes` with no arguments (protocol 2 pickles an empty array's data so), and
inert stand-ins for mmengine's training-state classes; `getattr` is allowed only on those stand-ins
(mmengine pickles HistoryBuffer's statistics methods as `getattr(HistoryBuffer, 'min')`), so nothing
from the file is ever imported or called.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.digest import sha256_file
from pipeline.core.errors import InputError
from pipeline.core.finite import non_finite
from pipeline.sources.mmpose_config import config_text, dataset_meta

PREFIXES = ("module.", "model.")
STUDENT_PREFIX, TEACHER_PREFIX = "student.", "teacher."
EMA_COUNTER = "steps"  # mmengine's BaseAveragedModel buffer, not a weight
MODEL_PREFIXES = ("backbone.", "neck.", "head.")


class _InertTrainingState:
    """Stands in for mmengine objects found in training checkpoints; holds data, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


_TRAINING_STATE_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "mmengine.logging.message_hub.MessageHub",
)


def _inert_getattr(obj: Any, name: str) -> tuple[str, str]:
    """`getattr` for the allow-list: only attributes of the inert stand-ins, returned as plain data."""
    if isinstance(obj, type) and issubclass(obj, _InertTrainingState) and isinstance(name, str):
        return ("inert attribute", name)
    raise pickle.UnpicklingError(f"getattr on {type(obj).__name__} is not allowed")


def _empty_bytes(*args: Any) -> bytes:
    """`bytes()` as protocol 2 pickles an empty buffer; any argument (a size to allocate) is refused."""
    if args:
        raise pickle.UnpicklingError("bytes() with arguments is not allowed")
    return b""


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


def _safe_globals() -> list[tuple[Any, str]]:
    return (_numpy_globals()
            + [(_InertTrainingState, name) for name in _TRAINING_STATE_GLOBALS]
            + [(_inert_getattr, f"{mod}.getattr") for mod in ("builtins", "__builtin__")]
            + [(_empty_bytes, f"{mod}.bytes") for mod in ("builtins", "__builtin__")])


@dataclass(frozen=True)
class LoadedWeights:
    state_dict: "OrderedDict[str, torch.Tensor]"  # keys `backbone.`/`neck.`/`head.`, float32
    meta: dict[str, Any]
    form: str
    sha256: str
    notes: tuple[str, ...] = field(default=())  # what was done to the file's tensors, for the record


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "no details"


def _unsafe_global(text: str) -> str:
    for line in text.splitlines():
        if "Unsupported global" in line:
            return line.strip().split("GLOBAL", 1)[-1].split(" was not")[0].strip()
    return "unsupported global"


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
    except ModuleNotFoundError as exc:
        raise InputError(f"model.checkpoint={path}: the pickled model needs the Python module {exc.name!r}, "
                         "which is not installed; save model.state_dict() where it was trained instead") from None
    except Exception as exc:  # arbitrary code ran by the user's explicit choice; report what broke
        raise InputError(f"model.checkpoint={path}: trusted pickle failed to load "
                         f"({type(exc).__name__}: {_first_line(str(exc))})") from None


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefixes(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop wrapper prefixes (`module.`, `model.`) that every key carries, repeatedly."""
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if state_dict and all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def _model_weights(state_dict: dict[str, Any], notes: list[str]) -> "OrderedDict[str, torch.Tensor]":
    """The network's tensors: wrappers stripped, the distiller's student taken, fp16/bf16 widened."""
    state_dict = {k: v for k, v in state_dict.items() if k != EMA_COUNTER}
    state_dict = _strip_prefixes(state_dict)
    if any(k.startswith(STUDENT_PREFIX) for k in state_dict):
        notes.append("took the distiller's student. weights (teacher dropped)")
        state_dict = {k[len(STUDENT_PREFIX):]: v for k, v in state_dict.items() if k.startswith(STUDENT_PREFIX)}
    dropped = [k for k in state_dict if k.startswith("data_preprocessor.")]
    state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
    short = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
    widened = sorted({short.get(v.dtype, str(v.dtype)) for v in state_dict.values()
                      if v.is_floating_point() and v.dtype != torch.float32})
    if widened:
        notes.append(f"converted {'/'.join(widened)} tensors to fp32")
    return OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in state_dict.items())


def load_weights(path: str | Path, trust_pickle: bool = False) -> LoadedWeights:
    """Read a checkpoint file of any layout above into a float32 state_dict with model-level keys.

    Raises InputError (one line: the cause and the fix) for missing, damaged or unsafe files and for
    files that hold no network weights.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model.checkpoint={path} does not exist; point it at a .pth/.onnx file or an SDK folder/zip")
    obj = _torch_load(path, trust_pickle)
    digest = sha256_file(path)
    notes: list[str] = []
    if isinstance(obj, torch.nn.Module):
        weights = _model_weights(obj.state_dict(), notes)
        check_finite_state_dict(weights, path)
        return LoadedWeights(weights, {}, "pickled-model", digest, tuple(notes))
    if not isinstance(obj, dict):
        raise InputError(f"model.checkpoint={path} holds a {type(obj).__name__}, not a checkpoint or state_dict")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    if isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        form = "training-checkpoint" if ("message_hub" in obj or "optimizer" in obj) else "mmpose-checkpoint"
        if any(k.startswith(STUDENT_PREFIX) for k in state):
            form = "distiller-checkpoint"
        weights = _model_weights(state, notes)
    elif _is_tensor_dict(obj):
        form = "ema-state-dict" if EMA_COUNTER in obj else "state_dict"
        weights = _model_weights(obj, notes)
    else:
        raise InputError(f"model.checkpoint={path} is a dict without 'state_dict' and not a state_dict itself "
                         f"(keys: {', '.join(map(str, list(obj)[:5]))}); save model.state_dict() or an mmpose checkpoint")
    if not any(k.startswith(MODEL_PREFIXES) for k in weights):
        raise InputError(f"model.checkpoint={path} ({form}) holds no backbone/head weights (keys such as "
                         f"{', '.join(list(weights)[:3])}); it is not a pose model checkpoint")
    check_finite_state_dict(weights, path)
    return LoadedWeights(weights, meta, form, digest, tuple(notes))


def check_finite_state_dict(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or ±Inf (a diverged training run, a damaged file) before anything is built
    from them: every output of such a network is NaN, and each later stage would blame itself.

    Raises InputError naming the tensors and their counts."""
    found = non_finite((k, v.numpy()) for k, v in state_dict.items() if v.is_floating_point())
    if found:
        raise InputError(f"model.checkpoint={path} holds non-finite weights: {found}; the checkpoint is damaged "
                         "or its training diverged: use an earlier or re-downloaded checkpoint")


def load_into_model(model: torch.nn.Module, weights: LoadedWeights, source: str) -> None:
    """Strict load of weights into a network built from their own description; a mismatch names keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights.state_dict))
    unexpected = sorted(set(weights.state_dict) - set(expected))
    shapes = [k for k in set(expected) & set(weights.state_dict) if expected[k].shape != weights.state_dict[k].shape]
    if missing or unexpected or shapes:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}")
        if shapes:
            key = sorted(shapes)[0]
            details.append(f"{key} is {list(weights.state_dict[key].shape)}, the description gives "
                           f"{list(expected[key].shape)}")
        raise InputError(f"model.checkpoint={source} does not match its description: {'; '.join(details)}")
    model.load_state_dict(weights.state_dict, strict=True)


def save_mmpose_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], spec, extra_meta: dict[str, Any] | None = None,
                           experiment_name: str | None = None) -> None:
    """Write `{'meta', 'state_dict'}` as mmpose's publish script does (legacy format), describing itself:
    `meta.cfg` is a config text of `spec` and `meta.dataset_meta` its keypoints, with numpy sigmas."""

    meta = {
        "cfg": config_text(spec),
        "experiment_name": experiment_name or spec.name,
        "dataset_meta": {**dataset_meta(spec.keypoints),
                         "sigmas": np.full(spec.num_keypoints, 0.05, dtype=np.float32)},
        **(extra_meta or {}),
    }
    tensors = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in state_dict.items())
    torch.save({"meta": meta, "state_dict": tensors}, path, _use_new_zipfile_serialization=False)

"""Model files made by the real mmpose 1.3.2 / mmengine 0.10.7 code, written on demand once per session.

`mmpose_files` (a session fixture) runs tests/upstream/make_checkpoints.py in a subprocess for each
file a test asks for and keeps it for the rest of the session; `reference` runs mmpose's own model
on a file (tests/upstream/mmpose_model_outputs.py). Without mmpose installed the fixture skips
with the install command. The kinds and forms are listed in tests/upstream/checkpoint_kinds.py and
documented in make_checkpoints.py.

Helpers here read files the way a safe loader must: the container (zip or legacy), the pickle
protocol and the globals a pickle names are read with `pickletools`, never by unpickling.
"""

from __future__ import annotations

import importlib.util
import json
import pickletools
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

UPSTREAM = Path(__file__).resolve().parent / "upstream"
MAKE_SCRIPT = UPSTREAM / "make_checkpoints.py"
OUTPUTS_SCRIPT = UPSTREAM / "mmpose_model_outputs.py"
INSTALL_HINT = "mmpose not installed: pip install --no-deps -r tests/upstream/requirements-mmpose.txt"


def _load_kinds():
    spec = importlib.util.spec_from_file_location("checkpoint_kinds", UPSTREAM / "checkpoint_kinds.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("checkpoint_kinds", module)  # dataclasses resolves the module by name
    spec.loader.exec_module(module)
    return module


_kinds = _load_kinds()
KINDS = _kinds.KINDS
FORMS = _kinds.FORMS


class MMPoseFiles:
    """Files of make_checkpoints.py under one directory, each made at most once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.info: dict[tuple[str, str], dict] = {}  # make_checkpoints.py's JSON line per (kind, form)

    def path(self, kind: str, form: str = "publish") -> Path:
        """The file of `kind` in `form`, made now if this session has not made it yet."""
        return self.make((kind, form))[0]

    def make(self, *specs: tuple[str, str]) -> list[Path]:
        """Several files in one subprocess (mmpose's import costs seconds per process)."""
        missing = [(k, f) for k, f in specs if (k, f) not in self.info]
        if missing:
            for line in make_files(missing, self.root):
                self.info[(line["kind"], line["form"])] = line
        return [Path(self.info[spec]["path"]) for spec in specs]

    def reference(self, path: Path, inputs: np.ndarray, config: str | None = None,
                  float64: bool = False, decoded: bool = False) -> dict[str, np.ndarray]:
        """mmpose's own model, built from the file's meta.cfg (or `config`), on `inputs`; with `decoded`,
        also mmpose's decode of its logits (`keypoints` [N, K, 2] input pixels, `scores` [N, K])."""
        return mmpose_references([(path, inputs)], self.root / "reference", config=config, float64=float64,
                                 decoded=decoded)[0]

    def references(self, pairs: list[tuple[Path, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """`reference` for several (file, inputs) pairs in one subprocess."""
        return mmpose_references(pairs, self.root / "reference")


def file_name(kind: str, form: str) -> str:
    """Fixed per (kind, form): a zip archive's inner folder is named after the file."""
    return f"{kind}.{form}.pth"


def make_files(specs: list[tuple[str, str]], out_dir: Path, timeout: float = 1800) -> list[dict]:
    """Run make_checkpoints.py for (kind, form) pairs into out_dir; its JSON lines, in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [item for kind, form in specs for item in (f"{kind}:{form}", str(out_dir / file_name(kind, form)))]
    done = subprocess.run([sys.executable, str(MAKE_SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"make_checkpoints.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def mmpose_references(pairs: list[tuple[Path, np.ndarray]], work_dir: Path, config: str | None = None,
                      float64: bool = False, decoded: bool = False) -> list[dict[str, np.ndarray]]:
    """simcc_x/simcc_y of mmpose's model for fixture files (tests/upstream/mmpose_model_outputs.py)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    first = len(list(work_dir.iterdir()))
    args, outs = [], []
    for i, (path, inputs) in enumerate(pairs):
        stem = f"{Path(path).name}.{first + i}"
        inputs_path, out_path = work_dir / f"{stem}.inputs.npy", work_dir / f"{stem}.out.npz"
        np.save(inputs_path, inputs)
        args += [str(path), str(inputs_path), str(out_path)]
        outs.append(out_path)
    args += ["--config", config] if config else []
    args += ["--float64"] if float64 else []
    done = subprocess.run([sys.executable, str(OUTPUTS_SCRIPT), *args], capture_output=True, text=True,
                          timeout=1800, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"mmpose_model_outputs.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    results = []
    for out_path in outs:
        with np.load(out_path) as data:
            names = ("simcc_x", "simcc_y") + (("keypoints", "scores") if decoded else ())
            results.append({name: data[name] for name in names})
    return results


@pytest.fixture(scope="session")
def mmpose_files(tmp_path_factory) -> MMPoseFiles:
    if importlib.util.find_spec("mmpose") is None:
        pytest.skip(INSTALL_HINT)
    return MMPoseFiles(tmp_path_factory.mktemp("mmpose-files"))


def photo_crops(input_size: tuple[int, int]) -> np.ndarray:
    """The golden photo crops [3,3,H,W] at an (W, H) input size, with mmpose's default preprocessing."""
    import dataclasses

    from pipeline.inputs.golden import photo_crops as crops_of
    from pipeline.model.preprocess import normalize
    from pipeline.model.presets import preset_spec

    spec = preset_spec("rtmpose-t_coco17_256x192")
    spec = dataclasses.replace(spec, codec=dataclasses.replace(spec.codec, input_size=tuple(input_size)))
    return normalize(crops_of(spec), spec.preprocess)


# --------------------------------------------------------------------------------------------- reading
# files without unpickling them


@dataclass(frozen=True)
class PickleView:
    """What a checkpoint's main pickle says about itself, read with pickletools only."""

    container: str  # "zip" | "legacy"
    protocol: int
    globals: frozenset[tuple[str, str]]  # (module, name) of every GLOBAL / STACK_GLOBAL
    strings: tuple[str, ...]  # every string constant, in order

    def has_string(self, text: str) -> bool:
        return text in self.strings


def read_pickle_view(path: Path) -> PickleView:
    """Container, protocol, globals and strings of a torch checkpoint, without running any of it."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            data = archive.read(name)
        return _view(data, "zip")
    raw = path.read_bytes()
    import io

    stream = io.BytesIO(raw)
    for _ in range(3):  # legacy format: magic number, protocol version, sys_info, then the object
        for _op in pickletools.genops(stream):
            pass
    start = stream.tell()
    for _op in pickletools.genops(stream):
        pass
    return _view(raw[start:stream.tell()], "legacy")


def _view(data: bytes, container: str) -> PickleView:
    protocol, found, strings, recent = 0, set(), [], []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "PROTO":
            protocol = arg
        elif op.name == "GLOBAL":
            module, _, name = arg.partition(" ")
            found.add((module, name))
        elif op.name == "STACK_GLOBAL" and len(recent) >= 2:
            found.add((recent[-2], recent[-1]))
        if isinstance(arg, str) and op.name not in ("GLOBAL",):
            strings.append(arg)
            recent.append(arg)
    return PickleView(container, protocol, frozenset(found), tuple(strings))


def safe_load(path: Path):
    """torch.load(weights_only=True) with numpy's array globals (under numpy 1.x and 2.x names) and
    `bytes` (protocol 2 writes an empty array's data with it) allowed: what a loader that accepts
    mmpose's publish files must allow, and nothing that runs code."""
    import torch
    from numpy._core import multiarray

    allowed = [np.ndarray, np.dtype, bytes]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)

"""`python -m pipeline.infer ARTIFACT IMAGE`: one person's keypoints from a built artifact, as JSON.

    python -m pipeline.infer artifacts/rtmpose-t_coco17_256x192/openvino-fp32 photo.jpg --box 20 10 370 512
    python -m pipeline.infer end2end.onnx photo.jpg --model rtmpose-m_coco17_256x192 --save pose.png
    python -m pipeline.infer ARTIFACT IMAGE backends.openvino.num_threads=1   # config overrides

An artifact directory runs with its recorded runtime settings (threads, hints, static batch: what the
`tune` stage measured and the benchmark timed): a released artifact's artifact.json `runtime`, else the
tune record beside a built one (`<variant dir>/tune/<target>.json`; `build` records none, see
pipeline/backends/runtime.py); `backends.*` overrides apply to artifacts and bare model files without either.

ARTIFACT is an artifact directory as `build` writes it (`artifact.json` names backend, target and
variant) or a bare model file, with the files its backend's artifact consists of beside it (each backend's
`FILES`): `.onnx` (onnxruntime), `.xml` + `.bin` (openvino), `.param` + `.bin` + `io.json` (ncnn),
`.engine` + `engine.json` (tensorrt). A bare file runs with the backend's fp32 runner, unless a file beside
it records the precision it was built for (ncnn's io.json, tensorrt's engine.json). The model description
(input size, mean/std, colour order, split ratio, keypoint names and skeleton) comes from
`artifact.json` or what the model file records (the backend's `recorded_metadata`: the ONNX
`metadata_props`, OpenVINO's `rt_info`, the same props); an ONNX from another exporter is described from
its I/O (pipeline/sources/describe.py). `--model <preset>` names the
model where nothing is recorded (and must agree with what is).

The image is preprocessed exactly as mmpose's top-down pipeline (pipeline/model/preprocess.py: box padded
and fitted to the input aspect, bilinear affine crop, mean/std in the model's channel order), run
through the backend's `Runner`, decoded as mmpose's SimCC decoder (pipeline/model/decode.py) and mapped back
to image pixels. Without `--box` the box is the whole image, as in rtmlib.
Output on stdout: {"variant", "target", "box", "keypoints": [[x, y], ...], "scores", "keypoint_names"}.
Errors print one line `error: ...` and exit 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import backends
from pipeline.backends import Target
from pipeline.backends.runtime import ARTIFACT_META
from pipeline.core.errors import InputError, PipelineError, fail
from pipeline.core.onnx_io import INPUT_NAME, load_onnx
from pipeline.model.decode import check_outputs, decode_to_image
from pipeline.model.preprocess import preprocess_boxes
from pipeline.model.presets import preset_spec
from pipeline.model.spec import ModelSpec, generic_keypoint_names
from pipeline.run.configure import load_config
from pipeline.sources.describe import METADATA_SPEC_KEY, describe_onnx

DRAW_MIN_SCORE = 0.3  # mmpose's visualizer default kpt_thr


@dataclass
class LoadedArtifact:
    """A backend Runner with the target and the model description it serves."""

    runner: Any
    target: Target
    spec: ModelSpec
    source: Path


# --------------------------------------------------------------------------------------------- artifacts


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} ({type(exc).__name__}); rebuild the artifact") from None


def _spec_from_metadata(metadata: Mapping[str, str], source: str) -> ModelSpec | None:
    text = metadata.get(METADATA_SPEC_KEY)
    if not text:
        return None
    try:
        return ModelSpec.from_dict(json.loads(text))
    except (ValueError, PipelineError) as exc:
        raise InputError(f"{source}: its recorded model description is damaged ({exc}); rebuild it") from None


def recorded_spec(model_file: Path, backend: str) -> ModelSpec | None:
    """The description the model file records (its backend's `recorded_metadata`: an ONNX's metadata_props,
    an OpenVINO IR's rt_info); for an ONNX from another exporter, what its I/O says
    (pipeline/sources/describe.py); else None."""
    recorded = _spec_from_metadata(backends.get(backend).recorded_metadata(model_file), str(model_file))
    if recorded is None and model_file.suffix == ".onnx":
        return describe_onnx(load_onnx(model_file), None, str(model_file), {}, model_file)
    return recorded


def _bare_precision(model_file: Path, backend: str) -> str:
    """fp32, except where the files beside the model record the precision it was built for."""
    record = backends.files(backend).precision_record
    if record and (model_file.parent / record[0]).is_file():
        return _read_json(model_file.parent / record[0])[record[1]]
    return "fp32"


def _describe(path: Path) -> tuple[Path, Path | None, Target, ModelSpec | None]:
    """(model file, artifact dir if `path` is one as built, target, recorded description)."""
    if path.is_dir():
        meta_path = path / ARTIFACT_META
        if meta_path.is_file():
            meta = _read_json(meta_path)
            if "target" not in meta or not isinstance(meta.get("onnx_metadata"), dict):
                raise InputError(f"{meta_path} names no target or model description; rebuild the artifact")
            target = backends.get_target(meta["target"])
            spec = _spec_from_metadata(meta["onnx_metadata"], str(meta_path))
            return path / backends.files(target.backend).model, path, target, spec
        models = sorted(p for p in path.iterdir() if backends.backend_of_model_file(p.suffix) and p.is_file())
        if len(models) != 1:
            raise InputError(f"{path} has no {ARTIFACT_META} and {len(models)} model files "
                             f"({', '.join(_model_suffixes())}); pass the model file itself")
        path = models[0]
    if not path.is_file():
        raise InputError(f"artifact {path} does not exist")
    backend = backends.backend_of_model_file(path.suffix)
    if backend is None:
        raise InputError(f"{path}: unknown model file type {path.suffix!r}; expected an artifact directory or "
                         f"one of {', '.join(_model_suffixes())}")
    if path.name == backends.files(backend).model and (path.parent / ARTIFACT_META).is_file():
        return _describe(path.parent)
    backends.get(backend)  # a runtime that is not installed fails here, naming the extra
    _companions(path, backend)
    target = backends.get_target(f"{backend}-{_bare_precision(path, backend)}")
    return path, None, target, None


def _model_suffixes() -> list[str]:
    """The model file suffixes of every backend's artifact (`.onnx`, `.xml`, ...)."""
    return [backends.files(name).suffix for name in backends.BACKENDS]


def _companions(model_file: Path, backend: str) -> dict[Path, str]:
    """Files the Runner opens besides the model file -> the names it opens them by: the weights file of the
    same stem, and the other companions by name."""
    files = backends.files(backend)
    wanted = {model_file.with_suffix(Path(files.weights).suffix): files.weights} if files.weights else {}
    wanted.update({model_file.parent / name: name for name in files.companions})
    for companion in wanted:
        if not companion.is_file():
            raise InputError(f"{model_file} needs {companion.name} beside it")
    return wanted


def _stage_files(model_file: Path, backend: str, staging: Path) -> Path:
    """The directory to give the Runner: the file's own, or `staging` with links under the expected names."""
    expected_name = backends.files(backend).model
    companions = _companions(model_file, backend)
    if model_file.name == expected_name:
        return model_file.parent
    (staging / expected_name).symlink_to(model_file.resolve())
    for companion, name in companions.items():
        (staging / name).symlink_to(companion.resolve())
    return staging


def open_artifact(path: str | Path, cfg, preset: str | None = None) -> LoadedArtifact:
    """Load an artifact directory or bare model file with its backend's Runner.

    `preset` (a released name) is needed only where the artifact records no description; with one
    recorded, it must agree on keypoint count and input size, and lends its keypoint names where the
    file has only generic ones.
    """

    path = Path(path)
    model_file, artifact_dir, target, spec = _describe(path)
    if not model_file.is_file():
        raise InputError(f"{artifact_dir} names target {target.name}, but {model_file.name} is missing; rebuild it")
    spec = spec or recorded_spec(model_file, target.backend)
    named = preset_spec(preset) if preset else None
    if spec is None and named is None:
        raise InputError(f"{path} records no model description; pass --model, e.g. --model rtmpose-m_coco17_256x192")
    if spec is not None and named is not None:
        if spec.num_keypoints != named.num_keypoints or spec.input_hw != named.input_hw:
            raise InputError(f"{path} holds a model with {spec.num_keypoints} keypoints at "
                             f"{spec.input_hw[1]}x{spec.input_hw[0]}, not --model {preset}; drop --model or fix it")
        if spec.keypoint_names == generic_keypoint_names(spec.num_keypoints):
            spec = dataclasses.replace(spec, keypoints=named.keypoints)
        spec = spec.renamed(preset)
    spec = spec or named
    with tempfile.TemporaryDirectory(prefix="infer-") as scratch:
        runner_dir = artifact_dir or _stage_files(model_file, target.backend, Path(scratch))
        try:
            runner = backends.open_runner(runner_dir, target, cfg.backends)
        except PipelineError:
            raise
        except Exception as exc:  # the runtimes' own errors on damaged files: one line, not a traceback
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"{target.backend} cannot load {model_file}: {reason[:300]}") from None
    return LoadedArtifact(runner, target, spec, model_file)


def estimate(artifact: LoadedArtifact, image_rgb: np.ndarray, box_xyxy) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints [K,2] in image pixels and scores [K] for the person in `box_xyxy`."""
    spec = artifact.spec
    batch, matrices = preprocess_boxes(image_rgb, [box_xyxy], spec)
    try:
        outputs = artifact.runner({INPUT_NAME: batch})
    except InputError as exc:
        raise InputError(f"{exc}; {spec.name} does not fit {artifact.source}, pass its --model") from None
    check_outputs(outputs, spec, str(artifact.source))
    keypoints, scores = decode_to_image(outputs, matrices, spec.simcc_split_ratio)
    return keypoints[0], scores[0]


# --------------------------------------------------------------------------------------------- drawing


def draw_pose(image_bgr: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, skeleton: Sequence[tuple[int, int]],
              box_xyxy, min_score: float = DRAW_MIN_SCORE) -> np.ndarray:
    """A copy of the image with the box, the keypoints scoring above `min_score` and the limbs of
    `skeleton` (index pairs, the description's) between them."""
    import cv2

    out = image_bgr.copy()
    x1, y1, x2, y2 = (int(round(v)) for v in box_xyxy)
    cv2.rectangle(out, (x1, y1), (x2, y2), (0, 200, 0), 2)
    shown = scores > min_score
    points = [(int(round(x)), int(round(y))) for x, y in keypoints]
    for a, b in skeleton:
        if shown[a] and shown[b]:
            cv2.line(out, points[a], points[b], (255, 128, 0), 2, cv2.LINE_AA)
    for point, visible in zip(points, shown):
        if visible:
            cv2.circle(out, point, 3, (0, 0, 255), -1, cv2.LINE_AA)
    return out


# --------------------------------------------------------------------------------------------- CLI


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.infer",
                                     description="Keypoints of one person from a built artifact, printed as JSON.")
    parser.add_argument("artifact", help="artifact directory (with artifact.json) or a .onnx/.xml/.param/.engine file")
    parser.add_argument("image", help="image file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. backends.openvino.num_threads=1")
    parser.add_argument("--box", nargs=4, type=float, metavar=("X1", "Y1", "X2", "Y2"),
                        help="person box in pixels (default: the whole image)")
    parser.add_argument("--save", metavar="PNG", help="also draw the pose onto a copy of the image")
    parser.add_argument("--model", "--variant", dest="model",
                        help="preset name (rtmpose-<scale>_<keypoints>_<H>x<W>) where the artifact records no description")
    parser.add_argument("--min-score", type=float, default=DRAW_MIN_SCORE,
                        help=f"keypoints drawn by --save score above this (default {DRAW_MIN_SCORE})")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    import cv2


    image_bgr = cv2.imread(args.image, cv2.IMREAD_COLOR) if Path(args.image).is_file() else None
    if image_bgr is None:
        raise InputError(f"cannot read image {args.image}: "
                         + ("not a decodable image" if Path(args.image).is_file() else "no such file"))
    height, width = image_bgr.shape[:2]
    box = [float(v) for v in args.box] if args.box else [0.0, 0.0, float(width), float(height)]
    if not (box[2] > box[0] and box[3] > box[1]):
        raise InputError(f"--box {' '.join(f'{v:g}' for v in box)} is empty; give X1 Y1 X2 Y2 with X2 > X1, Y2 > Y1")
    cfg = load_config(args.overrides)
    artifact = open_artifact(args.artifact, cfg, args.model)
    keypoints, scores = estimate(artifact, cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), box)
    names = list(artifact.spec.keypoint_names)
    if args.save:
        drawn = draw_pose(image_bgr, keypoints, scores, artifact.spec.keypoints.skeleton, box, args.min_score)
        try:
            written = cv2.imwrite(args.save, drawn)
        except cv2.error:
            written = False
        if not written:
            raise InputError(f"cannot write --save {args.save}; use a .png or .jpg path in an existing directory")
    return {
        "variant": artifact.spec.name,
        "target": artifact.target.name,
        "box": box,
        "keypoints": [[round(float(x), 3), round(float(y), 3)] for x, y in keypoints],
        "scores": [round(float(s), 5) for s in scores],
        "keypoint_names": names,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        result = run(args)
    except Exception as exc:  # one line, whoever raised it (pipeline.core.errors.fail)
        return fail(exc)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

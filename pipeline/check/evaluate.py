"""Keypoint AP of every built target next to the PyTorch reference, on a COCO keypoint set (optional stage).

Verification (pipeline/check/verify.py) bounds the logit error on a few golden crops; this answers the
question users ask: how much accuracy does the deployed model lose? Every person box of the
dataset (`<evaluate.dataset_dir>/annotations.json` + images, COCO format, ground-truth boxes as in
mmpose's top-down evaluation) is cropped as at inference (pipeline/infer.py: padding 1.25, affine,
RGB mean/std), run through the PyTorch reference model and each target's `Runner`, decoded with
mmpose's SimCC decoder and mapped back to image pixels. COCO keypoint AP/AR comes from pycocotools'
`COCOeval(iouType="keypoints")` (COCO's OKS sigmas, so 17-keypoint variants only).

Instance scores follow mmpose's `CocoMetric` (score_mode `bbox_keypoint`): the mean of the keypoint
scores above 0.2 times the box score (1 for ground-truth boxes). mmpose's OKS-NMS is not applied:
with one ground-truth box per person it has nothing to suppress but near-duplicates, and the
comparison between targets uses the same procedure on both sides.

A target fails when its AP is more than `evaluate.max_ap_drop` (AP on the 0-1 scale) below the
reference's. The metrics file (sorted keys) holds AP/AR per target, the drop, and the mean distance
between the target's and the reference's keypoints in image pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import backends
from pipeline.check.reference import reference_forward
from pipeline.config import DEMO_COCO_DIR
from pipeline.core.errors import ConfigError, InputError, RuntimeMissingError, VerificationError
from pipeline.core.io import remove_outputs, write_json
from pipeline.core.onnx_io import INPUT_NAME, OUTPUT_NAMES, fixed_batch, load_onnx
from pipeline.core.progress import progress_bar
from pipeline.model.decode import check_outputs, decode_to_image
from pipeline.model.preprocess import load_rgb, preprocess_boxes
from pipeline.model.spec import ModelSpec
from pipeline.planning.plan import spec_of

KEYPOINT_SCORE_THR = 0.2  # mmpose CocoMetric keypoint_score_thr
REFERENCE = "reference"
# COCOeval.stats order for iouType="keypoints"
STAT_NAMES = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large")

Forward = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Instance:
    """One ground-truth person: its image and box (x1, y1, x2, y2) in pixels."""

    image_id: int
    image_path: Path
    box_xyxy: tuple[float, float, float, float]


# --------------------------------------------------------------------------------------------- dataset


def load_dataset(dataset_dir: Path, num_keypoints: int) -> tuple[dict, list[Instance]]:
    """The COCO annotations and every non-crowd person box with a positive size, by image then annotation id."""
    annotations = dataset_dir / "annotations.json"
    if not annotations.is_file():
        raise InputError(f"evaluate.dataset_dir={dataset_dir} has no annotations.json; point it at a COCO "
                         f"keypoint set (e.g. the demo-data stage's {DEMO_COCO_DIR})")
    try:
        data = json.loads(annotations.read_text(encoding="utf-8"))
        files = {image["id"]: image["file_name"] for image in data["images"]}
        category_kpts = {c["id"]: len(c.get("keypoints", [])) for c in data["categories"]}
        anns = sorted(data["annotations"], key=lambda a: (a["image_id"], a["id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{annotations} is not a COCO keypoint file ({type(exc).__name__}: {exc})") from None
    if num_keypoints not in category_kpts.values():
        raise InputError(f"{annotations} has categories with {sorted(set(category_kpts.values()))} keypoints; "
                         f"the model predicts {num_keypoints}")
    instances = []
    for ann in anns:
        x, y, w, h = ann["bbox"]
        if ann.get("iscrowd", 0) or w <= 1 or h <= 1 or category_kpts.get(ann["category_id"]) != num_keypoints:
            continue
        name = files[ann["image_id"]]
        path = dataset_dir / name if (dataset_dir / name).is_file() else dataset_dir / "images" / name
        instances.append(Instance(ann["image_id"], path, (float(x), float(y), float(x + w), float(y + h))))
    if not instances:
        raise InputError(f"{annotations} has no usable person boxes (non-crowd, wider and taller than 1 px)")
    return data, instances


# --------------------------------------------------------------------------------------------- prediction


def predict(forward: Forward, instances: list[Instance], spec: ModelSpec, batch_size: int,
            fixed_batch: int | None, advance: Callable[[int], None],
            label: str = "model") -> tuple[np.ndarray, np.ndarray]:
    """Keypoints [N,K,2] (image pixels) and scores [N,K] for every instance, `batch_size` crops per call.

    `fixed_batch`: the model's static batch size; the last batch is padded with zeros up to it.
    `label` names the model in errors.
    """
    step = fixed_batch or batch_size
    keypoints, scores = [], []
    image_cache: tuple[Path, np.ndarray] | None = None
    done = 0
    for start in range(0, len(instances), step):
        chunk = instances[start:start + step]
        crops, matrices = [], []
        for instance in chunk:
            if image_cache is None or image_cache[0] != instance.image_path:
                try:
                    image_cache = (instance.image_path, load_rgb(instance.image_path))
                except FileNotFoundError:
                    raise InputError(f"cannot read image {instance.image_path} (annotations.json names it)") from None
            batch, matrix = preprocess_boxes(image_cache[1], [instance.box_xyxy], spec)
            crops.append(batch[0])
            matrices.append(matrix[0])
        batch = np.stack(crops)
        if fixed_batch and len(batch) < fixed_batch:
            batch = np.concatenate([batch, np.zeros((fixed_batch - len(batch), *batch.shape[1:]), np.float32)])
        outputs = forward(batch)
        outputs = {name: outputs[name][:len(chunk)] for name in OUTPUT_NAMES if name in outputs}
        check_outputs(outputs, spec, label)
        points, point_scores = decode_to_image(outputs, np.stack(matrices), spec.simcc_split_ratio)
        keypoints.append(points)
        scores.append(point_scores)
        for _ in chunk:
            advance(done)
            done += 1
    return np.concatenate(keypoints), np.concatenate(scores)


def instance_score(keypoint_scores: np.ndarray, box_score: float = 1.0) -> float:
    """mmpose CocoMetric rescoring: box score x mean of the keypoint scores above the threshold (0 if none)."""
    valid = keypoint_scores[keypoint_scores > KEYPOINT_SCORE_THR]
    return float(valid.mean() * box_score) if valid.size else 0.0


def coco_results(instances: list[Instance], keypoints: np.ndarray, scores: np.ndarray) -> list[dict]:
    """COCO keypoint results: [x, y, score] per keypoint, one entry per instance."""
    results = []
    for instance, points, point_scores in zip(instances, keypoints, scores):
        triplets = np.concatenate([points, point_scores[:, None]], axis=1)
        results.append({"image_id": instance.image_id, "category_id": 1,
                        "keypoints": [float(v) for v in triplets.ravel()], "score": instance_score(point_scores)})
    return results


def keypoint_ap(ground_truth: dict, results: list[dict]) -> dict[str, float | None]:
    """pycocotools COCOeval(iouType="keypoints") summary; None where the dataset has no instance of that size."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise RuntimeMissingError("evaluate computes AP with the Python package 'pycocotools', which is not "
                                  "installed; run `pip install \".[evaluate]\"`") from None

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary table
        coco = COCO()
        coco.dataset = ground_truth
        coco.createIndex()
        detections = coco.loadRes(results)
        evaluator = COCOeval(coco, detections, iouType="keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (float(value) if value >= 0 else None) for name, value in zip(STAT_NAMES, evaluator.stats)}


# --------------------------------------------------------------------------------------------- models


def _fixed_batch(onnx_path: Path) -> int | None:
    """The static batch size every target inherits from the simplified ONNX, or None if it is dynamic."""
    if not onnx_path.is_file():
        raise ConfigError(f"{onnx_path} is missing; run the simplify and build stages before evaluate")
    return fixed_batch(load_onnx(onnx_path))


def _target_forwards(cfg, variant_name: str) -> dict[str, Forward]:
    """Each built target's Runner, keyed by target name."""
    forwards = {}
    for job in cfg.plan["variants"][variant_name]["jobs"]:
        entry = cfg.plan["jobs"][job]
        target = backends.get_target(entry["target"])
        artifact = Path(entry["artifact"])
        if not artifact.is_dir():
            raise ConfigError(f"{artifact} is missing; build {job} before evaluate")
        runner = backends.open_runner(artifact, target, cfg.backends)
        forwards[target.name] = lambda batch, runner=runner: runner({INPUT_NAME: batch})
    return forwards


# --------------------------------------------------------------------------------------------- metrics


def evaluate_keypoints(cfg, variant_name: str, dataset_dir: Path, batch_size: int) -> dict[str, Any]:
    """AP/AR of the reference (PyTorch, or a supplied ONNX) and of every target of the variant; no pass/fail yet."""
    if batch_size < 1:
        raise ConfigError(f"evaluate.batch_size={batch_size}; set it to 1 or more")
    spec = spec_of(cfg, variant_name)
    if spec.num_keypoints != 17:
        raise ConfigError(f"evaluate uses COCO's 17 OKS sigmas; {variant_name} has {spec.num_keypoints} "
                          "keypoints. Set evaluate.enabled=false for it")
    ground_truth, instances = load_dataset(Path(dataset_dir), spec.num_keypoints)
    fixed = _fixed_batch(Path(cfg.plan["variants"][variant_name]["simplified_onnx"]))
    forward, info = reference_forward(cfg, variant_name)
    weights = {"weights_source": info.source, "checkpoint": info.checkpoint}
    forwards = {REFERENCE: forward, **_target_forwards(cfg, variant_name)}
    predictions = {}
    for name, forward in forwards.items():
        with progress_bar(len(instances), f"evaluate {variant_name} {name}") as advance:
            predictions[name] = predict(forward, instances, spec, batch_size,
                                        None if name == REFERENCE else fixed, advance, name)
    reference_points = predictions[REFERENCE][0]
    scores = {name: keypoint_ap(ground_truth, coco_results(instances, *predicted))
              for name, predicted in predictions.items()}
    if scores[REFERENCE]["ap"] is None:
        raise InputError(f"{dataset_dir}/annotations.json has no labelled keypoints (num_keypoints 0 everywhere); "
                         "COCO AP is undefined")
    targets = {}
    for name in forwards:
        if name == REFERENCE:
            continue
        drift = np.linalg.norm(predictions[name][0] - reference_points, axis=-1)
        targets[name] = {**scores[name], "ap_drop": scores[REFERENCE]["ap"] - scores[name]["ap"],
                         "mean_drift_px": float(drift.mean()), "max_drift_px": float(drift.max())}
    return {
        "variant": variant_name,
        "dataset": {"dir": str(dataset_dir), "images": len({i.image_id for i in instances}),
                    "instances": len(instances)},
        "reference": {**scores[REFERENCE], **weights},
        "targets": targets,
    }


def reference_label(metrics: dict[str, Any]) -> str:
    return "the supplied ONNX" if metrics["reference"]["weights_source"] == "onnx" else "PyTorch"


def apply_limit(metrics: dict[str, Any], max_ap_drop: float) -> list[str]:
    """Mark each target passed or failed against `max_ap_drop`; return one line per failure."""
    breaches = []
    reference_ap = metrics["reference"]["ap"]
    for name, result in sorted(metrics["targets"].items()):
        result["passed"] = result["ap_drop"] <= max_ap_drop
        if not result["passed"]:
            breaches.append(f"{metrics['variant']}.{name} keypoint AP {result['ap']:.4f} is {result['ap_drop']:.4f} "
                            f"below the {reference_label(metrics)} reference {reference_ap:.4f}, more than "
                            f"evaluate.max_ap_drop={max_ap_drop:g}")
    metrics.update({"max_ap_drop": max_ap_drop, "breaches": breaches, "passed": not breaches})
    return breaches


def summary_line(metrics: dict[str, Any]) -> str:
    dataset, reference = metrics["dataset"], metrics["reference"]
    targets = ", ".join(f"{name} {r['ap']:.4f} ({-r['ap_drop']:+.4f}{'' if r['passed'] else ' FAILED'})"
                        for name, r in sorted(metrics["targets"].items()))
    return (f"evaluate {metrics['variant']} on {dataset['instances']} persons in {dataset['images']} images: "
            f"keypoint AP {reference_label(metrics)} {reference['ap']:.4f}; {targets or 'no targets'} "
            f"[max drop {metrics['max_ap_drop']:g}]")


def evaluate(cfg, variant_name: str) -> dict[str, Any]:
    """Keypoint AP of every target vs the PyTorch reference; write the metrics, raise if a drop is too large."""
    if variant_name not in cfg.plan["evaluations"]:
        raise ConfigError(f"variant {variant_name!r} is not evaluated; set evaluate.enabled=true "
                          f"(and model={variant_name})")
    entry = cfg.plan["evaluations"][variant_name]
    remove_outputs(entry["evaluate"])
    settings = cfg.evaluate
    metrics = evaluate_keypoints(cfg, variant_name, Path(settings.dataset_dir), settings.batch_size)
    breaches = apply_limit(metrics, settings.max_ap_drop)
    write_json(entry["evaluate"], metrics)
    print(summary_line(metrics))
    if breaches:
        more = f" (and {len(breaches) - 1} more target(s))" if len(breaches) > 1 else ""
        raise VerificationError(breaches[0] + more)
    return metrics

"""Overlays: every target's keypoints on the bundled photos, next to the reference's.

One PNG per variant, a grid: rows are the photos of `pipeline/inputs/golden.py` (PHOTO_BOXES), columns the
reference (PyTorch, or the supplied ONNX) and each built target. A target's Runner runs on the photo
crops stored in `reference.npz` (the exact inputs verify compared), SimCC is decoded as mmpose does
(`pipeline/model/decode.py`), and the keypoints are mapped back through the crop's affine matrix into the
original photo, which each panel shows over the region the model saw. Keypoints with score <= 0 are
not drawn (mmpose marks them invalid). Limbs are the description's skeleton (the file's
`dataset_meta.skeleton_links`, or COCO-17's for presets that begin with it); without one, points only.
Same inputs, same bytes: fixed size and dpi, no Software/date metadata in the PNG. Text is never mathtext.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import backends
from pipeline.core.errors import InputError, PipelineError
from pipeline.core.io import read_npz
from pipeline.inputs.golden import DATA_DIR, PHOTO_BOXES
from pipeline.model.decode import decode_to_image
from pipeline.model.preprocess import box_to_center_scale, load_rgb, warp_matrix
from pipeline.model.spec import KeypointSpec, ModelSpec
from pipeline.planning.plan import spec_of

STATUS_COLORS = {"passed": "#1a7f37", "failed": "#cf222e", "reference": "#24292f"}
LIMB_COLORS = {"left": "#2f81f7", "right": "#f0883e", "center": "#3fb950"}
PANEL_IN = (2.0, 2.55)  # inches per panel (width, height) at DPI: fixed, so equal inputs give equal bytes
DPI = 100
ERROR_WRAP_CHARS = 34  # characters per line of an error message in a panel (fontsize 7)


@dataclass(frozen=True)
class Column:
    """One column of the grid: image-coordinate keypoints [P,K,2] and scores [P,K], or why there are none."""

    label: str
    status: str  # "reference", "passed", "failed"
    keypoints: np.ndarray | None = None
    scores: np.ndarray | None = None
    error: str = ""


def photo_matrices(spec: ModelSpec) -> list[np.ndarray]:
    """The 2x3 image->crop matrix of each photo crop (golden.photo_crops cuts crops with these)."""
    padding = spec.preprocess.bbox_padding
    return [warp_matrix(*box_to_center_scale(box, spec.input_hw, padding), spec.input_hw) for _, box in PHOTO_BOXES]


def run_on_crops(runner, crops: np.ndarray) -> dict[str, np.ndarray]:
    """One crop per call: batch 1 fits both dynamic-batch and static-batch-1 artifacts."""
    results = [runner({"input": np.ascontiguousarray(crops[i:i + 1])}) for i in range(len(crops))]
    if not {"simcc_x", "simcc_y"} <= set(results[0]):
        raise InputError(f"its outputs are {sorted(results[0])}, not simcc_x and simcc_y")
    return {name: np.concatenate([r[name] for r in results]) for name in ("simcc_x", "simcc_y")}


def mean_shift_px(column: Column, reference: Column) -> float | None:
    """Mean displacement (image pixels) over keypoints valid on both sides."""
    if column.keypoints is None or reference.keypoints is None:
        return None
    valid = (column.scores > 0) & (reference.scores > 0)
    if not valid.any():
        return None
    return float(np.linalg.norm(column.keypoints - reference.keypoints, axis=-1)[valid].mean())


def _limb_side(names: tuple[str, ...], a: int, b: int) -> str:
    for side in ("left", "right"):
        if names[a].startswith(side) and names[b].startswith(side):
            return side
    return "center"


def _draw_pose(ax, keypoints: np.ndarray, scores: np.ndarray, kpts: KeypointSpec, ghost: bool = False) -> None:
    valid = scores > 0
    for a, b in kpts.skeleton:
        if valid[a] and valid[b]:
            color = "white" if ghost else LIMB_COLORS[_limb_side(kpts.names, a, b)]
            ax.plot(keypoints[[a, b], 0], keypoints[[a, b], 1], color=color, linewidth=0.9 if ghost else 1.8,
                    alpha=0.55 if ghost else 0.95, solid_capstyle="round", zorder=2 if ghost else 3)
    if ghost or not valid.any():
        return
    ax.scatter(keypoints[valid, 0], keypoints[valid, 1], s=9, c="white", edgecolors="#24292f",
               linewidths=0.6, zorder=4)


def draw_grid(columns: list[Column], spec: ModelSpec, path: Path, title: str) -> Path:
    """Rows = photos, columns = reference + targets; the reference is drawn faintly under each target."""
    from matplotlib import rc_context, style
    from matplotlib.figure import Figure

    images = {name: load_rgb(DATA_DIR / name) for name, _ in PHOTO_BOXES}
    rows, cols = len(PHOTO_BOXES), len(columns)
    reference = columns[0]
    # text.parse_math off: labels and error messages are data (names from files), never mathtext.
    with style.context("default"), rc_context({"font.size": 8, "font.family": "DejaVu Sans", "text.parse_math": False}):
        fig = Figure(figsize=(PANEL_IN[0] * cols, PANEL_IN[1] * rows + 0.45), dpi=DPI)
        axes = fig.subplots(rows, cols, squeeze=False)
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.75 / (PANEL_IN[1] * rows + 0.45),
                            wspace=0.04, hspace=0.06)
        fig.suptitle(title, fontsize=10, fontweight="bold", x=0.01, ha="left")
        for r, (name, box) in enumerate(PHOTO_BOXES):
            center, (w, h) = box_to_center_scale(box, spec.input_hw, spec.preprocess.bbox_padding)
            for c, column in enumerate(columns):
                ax = axes[r][c]
                ax.set_facecolor("black")  # the crop's zero border
                ax.imshow(images[name], interpolation="bilinear")
                ax.set_xlim(center[0] - w / 2, center[0] + w / 2)
                ax.set_ylim(center[1] + h / 2, center[1] - h / 2)
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_color(STATUS_COLORS.get(column.status, "#8c959f"))
                    spine.set_linewidth(1.5)
                if r == 0:
                    shift = mean_shift_px(column, reference) if c else None
                    subtitle = {"reference": "reference"}.get(column.status, column.status)
                    if shift is not None:
                        subtitle += f" · Δ {shift:.1f} px"
                    ax.set_title(f"{column.label}\n{subtitle}", fontsize=8,
                                 color=STATUS_COLORS.get(column.status, "#57606a"))
                if c == 0:
                    ax.text(0.02, 0.02, f"{name} #{r}", transform=ax.transAxes, color="white", fontsize=7,
                            va="bottom", bbox={"facecolor": "black", "alpha": 0.5, "linewidth": 0, "pad": 1.5})
                if column.keypoints is None:
                    # Wrapped here, not by matplotlib: its wrap=True measures lines as mathtext whenever they
                    # hold two `$`, whatever text.parse_math says (3.11), and an error message is data.
                    ax.text(0.5, 0.5, textwrap.fill(column.error or "no output", ERROR_WRAP_CHARS),
                            transform=ax.transAxes, ha="center", va="center", color="white", fontsize=7,
                            bbox={"facecolor": "#cf222e", "alpha": 0.8, "linewidth": 0})
                    continue
                if c and reference.keypoints is not None:
                    _draw_pose(ax, reference.keypoints[r], reference.scores[r], spec.keypoints, ghost=True)
                _draw_pose(ax, column.keypoints[r], column.scores[r], spec.keypoints)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def overlay_columns(cfg, variant_name: str, targets: list[tuple[str, str, Path]]) -> list[Column]:
    """The reference column and one per (target, status, artifact_dir); a runner error fills its column."""

    entry = cfg.plan["variants"][variant_name]
    golden = read_npz(entry["reference"])
    photo_count = int(golden.get("photo_count", 0))
    if photo_count != len(PHOTO_BOXES):
        raise ValueError(f"{entry['reference']} holds {photo_count} photo crops, pipeline/inputs/golden.py lists "
                         f"{len(PHOTO_BOXES)}; rerun the reference stage")
    spec = spec_of(cfg, variant_name)
    matrices = photo_matrices(spec)
    ratio = spec.simcc_split_ratio
    crops = golden["input"][:photo_count]
    label = "reference (ONNX)" if entry.get("from_onnx") else "PyTorch"
    columns = [Column(label, "reference", *decode_to_image({k: golden[k][:photo_count] for k in
                                                          ("simcc_x", "simcc_y")}, matrices, ratio))]
    for target_name, status, artifact_dir in targets:
        try:
            target = backends.get_target(target_name)
            runner = backends.open_runner(artifact_dir, target, cfg.backends)
            columns.append(Column(target_name, status, *decode_to_image(run_on_crops(runner, crops), matrices, ratio)))
        except (PipelineError, RuntimeError, OSError) as exc:  # a report shows a broken artifact, it does not stop
            columns.append(Column(target_name, status, error=f"could not run: {str(exc).splitlines()[0][:80]}"))
    return columns


def write_overlay(cfg, variant_name: str, targets: list[tuple[str, str, Path]], path: Path) -> Path:
    """The overlay grid of one variant at `path` (PNG)."""

    columns = overlay_columns(cfg, variant_name, targets)
    title = f"{variant_name}: keypoints on the bundled photos (faint white: the reference under each target)"
    return draw_grid(columns, spec_of(cfg, variant_name), path, title)

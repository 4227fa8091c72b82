"""Which stages of the plan have a deps file, and where it is: `<out_dir>/stage-deps/<stage>/<key>.json`.

A stage's deps file holds the params values and source hashes it reads (pipeline/planning/stage_deps.py
writes them; dvc.yaml makes each stage depend on its own). The plan names every file (`deps` of each
variant and job). This table is apart from the writer because every stage process loads the plan: editing
what a stage depends on then changes the deps files of the stages concerned, not the code of every stage.
"""

from __future__ import annotations

from pathlib import PurePosixPath

DIRNAME = "stage-deps"

# Stage -> the plan section its dvc.yaml `foreach` iterates (None: a single stage). `demo-data`
# (conf/train_demo.yaml) is not planned, but its code is a stage's code like any other. The frozen `train-demo`
# has no deps file: a frozen stage's deps must exist in a fresh clone before any stage runs (`dvc repro --pull
# --allow-missing` checks them first), so dvc.yaml gives it the source folders whole.
SECTIONS: dict[str, str | None] = {
    "reference": "variants", "export": "variants", "simplify": "variants", "calibration": "calibrations",
    "quantize": "quantizations", "tune": "jobs", "build": "jobs", "verify": "jobs", "benchmark": "variants",
    "evaluate": "evaluations", "report": None, "release": "variants", "demo-data": None,
}
VARIANT_STAGES = tuple(name for name, section in SECTIONS.items() if section not in ("jobs", None))
JOB_STAGES = tuple(name for name, section in SECTIONS.items() if section == "jobs")
SINGLE_STAGES = tuple(name for name, section in SECTIONS.items() if section is None)


def deps_dir(out_dir: str) -> str:
    """The folder `stage-deps` writes (its one DVC output)."""
    return str(PurePosixPath(out_dir) / DIRNAME)


def deps_path(out_dir: str, stage: str, key: str | None = None) -> str:
    """`<out_dir>/stage-deps/<stage>/<key>.json`, or `<out_dir>/stage-deps/<stage>.json` for a single stage."""
    root = PurePosixPath(deps_dir(out_dir))
    return str(root / stage / f"{key}.json" if key else root / f"{stage}.json")


def deps_paths(out_dir: str, key: str, stages: tuple[str, ...]) -> dict[str, str]:
    """The deps file of each of `stages` for one variant or job, keyed by stage (the plan's `deps`)."""
    return {stage: deps_path(out_dir, stage, key) for stage in stages}

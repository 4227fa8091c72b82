"""Rebuild the plan in a fresh clone and compare every output hash with the committed `dvc.lock`.

    python -m pipeline.reproduce [--keep] [--stages STAGE ...]

Lists every output whose hash differs and why. Outputs that are measurements by nature (benchmark
timings and the report built from them) are named and skipped; a differing model artifact is run
next to its original on the reference inputs and compared numerically, so a byte difference that
changes no output is told apart from one that does. Exit 0 when every other output is identical
or numerically equal within the fp32 tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from pipeline.config import REPO_ROOT

# Stage name prefixes whose outputs are measurements, not builds.
MEASUREMENTS = {"benchmark": "latency timings are measurements", "report": "shows the benchmark timings"}


def lock_outputs(lock_file: Path) -> dict[str, tuple[str, str]]:
    """{output path: (stage, md5)} from a dvc.lock."""
    data = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
    outputs = {}
    for stage, entry in data.get("stages", {}).items():
        for out in entry.get("outs", []):
            outputs[out["path"]] = (stage, out.get("md5", ""))
    return outputs


def numeric_difference(original: Path, rebuilt: Path, job: dict, cfg) -> float | None:
    """Max |Δ| between the two artifacts' outputs on the reference inputs, divided by the output's scale
    (max |output|, as verification's limits); None if not a model."""
    from pipeline import backends
    from pipeline.io import read_npz

    if not (original / "artifact.json").is_file():
        return None
    target = backends.get_target(job["target"])
    module = backends.get(target.backend)
    inputs = {"input": read_npz(original.parents[0] / "reference.npz")["input"]}
    a, b = module.Runner(original, target, cfg)(inputs), module.Runner(rebuilt, target, cfg)(inputs)
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k])) / np.max(np.abs(a[k]))) for k in a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the clone for inspection")
    parser.add_argument("--stages", nargs="*", default=[], help="reproduce only these stages (dvc repro targets)")
    args = parser.parse_args(argv)
    committed = REPO_ROOT / "dvc.lock"
    if not committed.is_file():
        print("error: no dvc.lock in the repository; run `dvc repro` and commit it first", file=sys.stderr)
        return 1
    clone = Path(tempfile.mkdtemp(prefix="rtmpose-reproduce-"))
    try:
        subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone / "repo")], check=True)
        repo = clone / "repo"
        env = {**os.environ, "PYTHONPATH": str(repo)}
        done = subprocess.run([sys.executable, "-m", "dvc", "repro", *args.stages], cwd=repo, env=env)
        if done.returncode != 0:
            print("error: dvc repro failed in the fresh clone", file=sys.stderr)
            return 1
        return compare(repo, committed)
    finally:
        if args.keep:
            print(f"clone kept at {clone}")
        else:
            shutil.rmtree(clone, ignore_errors=True)


def compare(repo: Path, committed: Path) -> int:
    from pipeline.config import load_config

    before, after = lock_outputs(committed), lock_outputs(repo / "dvc.lock")
    cfg = load_config(params_file=repo / "params.yaml")
    jobs_by_artifact = {job["artifact"]: job for job in cfg.plan["jobs"].values()}
    unexplained = 0
    for path, (stage, md5) in sorted(after.items()):
        old = before.get(path)
        if old is None:
            print(f"new        {path} ({stage}): not in the committed dvc.lock")
            continue
        if old[1] == md5:
            print(f"identical  {path}")
            continue
        kind = stage.split("@")[0]
        if kind in MEASUREMENTS:
            print(f"measured   {path}: {MEASUREMENTS[kind]}")
            continue
        diff = None
        if path in jobs_by_artifact and (REPO_ROOT / path).exists():
            diff = numeric_difference(REPO_ROOT / path, repo / path, jobs_by_artifact[path], cfg)
        if diff is not None and diff <= cfg.verify.tolerances["fp32"].max_error:
            print(f"equivalent {path}: bytes differ, outputs equal (max|Δ| {diff:.2g} × scale)")
            continue
        unexplained += 1
        print(f"DIFFERS    {path} ({stage})" + (f": outputs differ by {diff:.3g} × scale" if diff is not None else ""))
    print(f"reproduce: {len(after)} outputs, {unexplained} differ")
    return 1 if unexplained else 0


if __name__ == "__main__":
    raise SystemExit(main())

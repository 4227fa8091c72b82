"""Rebuild the plan in a fresh clone and check every output against the committed `dvc.lock`.

    python -m pipeline.reproduce [--keep] [--stages STAGE ...]

Each output is judged by one rule, printed in front of it (issue 13):
- `identical`: same md5 as in dvc.lock. Everything that need not depend on the CPU must be: demo data,
  calibration set, export, simplified ONNX and every fp32/fp16/bf16 artifact (their builds compute no
  float value with a CPU-dispatched kernel; tests/graph/test_cpu_independence.py).
- `float-outputs` (reference.npz): PyTorch's outputs depend on the CPU's float kernels (MKL, oneDNN,
  per ISA and thread count). Its inputs must be bitwise equal, its outputs within the fp32 tolerance.
- `calibrated` (quantize, int8 artifacts): calibration statistics, and the scales and bias corrections
  derived from them, are float computations on the CPU's kernels. Both versions are run on the
  reference inputs; they must agree within the int8 tolerance (what verification accepts).
- `gpu-tuned` (TensorRT engines): built by TensorRT's autotuner for one GPU; outputs within the
  target precision's tolerance.
- `verdict` (verify metrics): the errors are measured with this CPU's kernels; the pass/fail verdict
  must be the same.
- `measured` (tune, benchmark, report, evaluate): timings and scores of this machine; not compared.
- `release`: the same targets shipped, each file by its artifact's rule, except the files that carry
  the tuned runtime settings (artifact.json, the SDK's detail.json and rtmlib.zip, which holds one).
- `left out`: planned where dvc.lock was written but not on this host (the plan's `left_out` says why).
A differing hash is looked up in the DVC cache of this repository (`dvc pull` fetches it) to compare
numerically. Exit 0 when every output passes its rule, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from pipeline import backends
from pipeline.backends.runtime import ARTIFACT_META
from pipeline.check.verify import compare_output
from pipeline.config import REPO_ROOT
from pipeline.core.io import read_npz
from pipeline.core.onnx_io import load_onnx, run_fp32
from pipeline.package.dropin import RTMLIB_ZIP
from pipeline.run.configure import load_config
from pipeline.sources.sdk import DETAIL_JSON

# Stage kind -> (rule, why), for the stages whose outputs are not required to be identical.
RULES = {
    "reference": ("float-outputs", "PyTorch outputs of this CPU's float kernels"),
    "quantize": ("calibrated", "Q/DQ scales from calibration statistics of this CPU's float kernels"),
    "verify": ("verdict", "errors measured with this CPU's kernels"),
    "tune": ("measured", "runtime settings chosen by timings of this machine"),
    "benchmark": ("measured", "latency timings are measurements"),
    "report": ("measured", "shows the benchmark timings"),
    "evaluate": ("measured", "AP measured with this CPU's kernels"),
    "release": ("release", "the verified artifacts (each by its own rule) and a manifest of this CPU's figures"),
}
# reference.npz entries computed by float kernels (the float32 and the float64 runs); the rest
# (inputs, crops, preprocessing) must be identical.
REFERENCE_OUTPUTS = ("simcc_x", "simcc_y", "simcc_x_float64", "simcc_y_float64")


def lock_outputs(lock_file: Path) -> dict[str, tuple[str, str]]:
    """{output path: (stage, md5)} from a dvc.lock."""
    data = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
    outputs = {}
    for stage, entry in data.get("stages", {}).items():
        for out in entry.get("outs", []):
            outputs[out["path"]] = (stage, out.get("md5", ""))
    return outputs


def output_rule(stage: str) -> tuple[str, str]:
    """(rule, why) for a stage's outputs; build stages by their target's precision and backend."""
    kind, _, name = stage.partition("@")
    target = backends.TARGETS.get(name.rpartition(".")[2])
    if kind == "build" and target is not None:
        if backends.module(target.backend).BOUND_TO_GPU:
            return "gpu-tuned", "TensorRT engine autotuned on this GPU"
        if target.precision == "int8":
            return "calibrated", "int8 scales from calibration statistics of this CPU's float kernels"
    return RULES.get(kind, ("identical", "must not depend on the CPU"))


def cache_dir(repo: Path) -> Path:
    """The repository's DVC cache (`dvc cache dir`)."""
    done = subprocess.run([sys.executable, "-m", "dvc", "cache", "dir"], cwd=repo, capture_output=True, text=True)
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else repo / ".dvc" / "cache"


def committed_copy(cache: Path, md5: str, scratch: Path) -> Path | None:
    """The output as committed, from the DVC cache: the cached file, or a directory rebuilt from the
    cached `.dir` listing in `scratch`; None where the cache lacks it."""
    def obj(digest: str) -> Path:
        return cache / "files" / "md5" / digest[:2] / digest[2:]

    if not md5 or not obj(md5).is_file():
        return None
    if not md5.endswith(".dir"):
        return obj(md5)
    target = scratch / md5
    for entry in json.loads(obj(md5).read_text(encoding="utf-8")):
        if not obj(entry["md5"]).is_file():
            return None
        (target / entry["relpath"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(obj(entry["md5"]), target / entry["relpath"])
    return target


def differing_files(a: Path, b: Path) -> list[str]:
    """Relative paths whose bytes differ between two files or directories."""
    if a.is_file() and b.is_file():
        return [] if a.read_bytes() == b.read_bytes() else [a.name]
    names = sorted({p.relative_to(a) for p in a.rglob("*") if p.is_file()}
                   | {p.relative_to(b) for p in b.rglob("*") if p.is_file()})
    return [str(n) for n in names if not ((a / n).is_file() and (b / n).is_file()
                                          and (a / n).read_bytes() == (b / n).read_bytes())]


def within(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], tolerance) -> tuple[bool, float]:
    """(every element within atol or rtol of `expected`, largest |Δ|), verification's pass rule."""

    if set(expected) != set(actual):
        return False, float("nan")
    results = [compare_output(expected[k], actual[k], tolerance) for k in expected]
    return all(r["passed_elementwise"] for r in results), max(r["needs_atol"] for r in results)


def compare_reference(committed: Path, rebuilt: Path, cfg) -> tuple[bool, str]:

    a, b = read_npz(committed), read_npz(rebuilt)
    exact = [k for k in a if k not in REFERENCE_OUTPUTS]
    if set(a) != set(b) or not all(np.array_equal(a[k], b[k]) for k in exact):
        return False, f"inputs differ ({', '.join(k for k in exact if k not in b or not np.array_equal(a[k], b[k]))})"
    ok, diff = within({k: a[k] for k in REFERENCE_OUTPUTS if k in a}, {k: b[k] for k in REFERENCE_OUTPUTS if k in b},
                      cfg.verify.tolerances["fp32"])
    return ok, f"inputs identical, outputs max|Δ| {diff:.3g} ({'within' if ok else 'beyond'} the fp32 tolerance)"


def run_artifact(path: Path, job: dict | None, inputs: np.ndarray, cfg) -> dict[str, np.ndarray]:
    """Outputs of a job's artifact (its backend's runner) or of a bare ONNX (plain onnxruntime)."""

    if job is None:
        return run_fp32(load_onnx(path / "model.onnx" if path.is_dir() else path), inputs)
    target = backends.get_target(job["target"])
    return backends.open_runner(path, target, cfg.backends)({"input": inputs})


def compare_outputs(committed: Path, rebuilt: Path, job: dict | None, precision: str, inputs: np.ndarray,
                    cfg) -> tuple[bool, str]:
    ok, diff = within(run_artifact(committed, job, inputs, cfg), run_artifact(rebuilt, job, inputs, cfg),
                      cfg.verify.tolerances[precision])
    return ok, f"outputs max|Δ| {diff:.3g} ({'within' if ok else 'beyond'} the {precision} tolerance)"


# Shipped files that record the tuned runtime settings (pipeline/package/release.py): measurements of the machine.
TUNED_FILES = (ARTIFACT_META, DETAIL_JSON, RTMLIB_ZIP)  # the zip holds a detail.json


def compare_release(committed: Path, rebuilt: Path) -> tuple[bool, str]:
    """Same targets shipped, and every shipped file identical except those of int8 targets (calibrated)
    and TUNED_FILES; the manifest's verification figures are measurements and are not compared."""
    manifests = [json.loads((p / "manifest.json").read_text(encoding="utf-8")) for p in (committed, rebuilt)]
    targets = [m["targets"] for m in manifests]
    if set(targets[0]) != set(targets[1]):
        return False, f"shipped {sorted(targets[0])} as committed, {sorted(targets[1])} here"
    differ = [f"{t}/{name}" for t, entry in targets[1].items() if entry["precision"] != "int8"
              for name, digest in entry["files"].items()
              if Path(name).name not in TUNED_FILES and targets[0][t]["files"].get(name) != digest]
    if differ:
        return False, f"files differ: {', '.join(differ[:5])}"
    return True, f"{len(targets[1])} targets shipped, every non-int8 file identical but the tuned settings"


def verdict(committed: Path, rebuilt: Path) -> tuple[bool, str]:
    a, b = (json.loads(p.read_text(encoding="utf-8")).get("passed") for p in (committed, rebuilt))
    return a == b, f"passed {a} as committed, {b} here"


def compare(repo: Path, committed_lock: Path, cache: Path | None = None) -> int:
    """Print one line per output of the rebuilt `repo` with the rule it was judged by; 0 if all pass."""

    before, after = lock_outputs(committed_lock), lock_outputs(repo / "dvc.lock")
    cfg = load_config(params_file=repo / "params.yaml")
    jobs_by_artifact = {job["artifact"]: job for job in cfg.plan["jobs"].values()}
    left_out = {f"build@{job}": why for job, why in cfg.plan.get("left_out", {}).items()}
    left_out.update({f"verify@{job}": why for job, why in cfg.plan.get("left_out", {}).items()})
    cache = cache or cache_dir(REPO_ROOT)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="rtmpose-committed-") as scratch:
        for path, (stage, md5) in sorted(after.items()):
            old = before.get(path)
            rule, why = output_rule(stage)
            if stage in left_out:  # DVC keeps the lock entries of stages that left dvc.yaml's foreach
                print(f"{'left out':<18}{path} ({stage}): {left_out[stage]}")
                continue
            if old is None:
                print(f"{'new':<18}{path} ({stage}): not in the committed dvc.lock")
                continue
            if old[1] == md5:
                print(f"{'identical':<18}{path}")
                continue
            if rule == "measured":
                print(f"{'measured':<18}{path}: {why}")
                continue
            committed = committed_copy(cache, old[1], Path(scratch))
            if rule == "identical" or committed is None:
                failed += 1
                detail = (f"bytes differ in {', '.join(differing_files(committed, repo / path))}" if committed
                          else "the committed version is not in the DVC cache (dvc pull it)")
                print(f"{'DIFFERS':<18}{path} ({stage}): {why}; {detail}")
                continue
            if rule == "verdict":
                ok, detail = verdict(committed, repo / path)
            elif rule == "float-outputs":
                ok, detail = compare_reference(committed, repo / path, cfg)
            elif rule == "release":
                ok, detail = compare_release(committed, repo / path)
            else:
                job = jobs_by_artifact.get(path)
                precision = job["precision"] if job else "int8"
                variant = job["variant"] if job else stage.partition("@")[2]
                inputs = read_npz(repo / cfg.plan["variants"][variant]["reference"])["input"]
                ok, detail = compare_outputs(committed, repo / path, job, precision, inputs, cfg)
            failed += not ok
            print(f"{rule + (' ok' if ok else ' FAILED'):<18}{path}: {why}; {detail}")
        for path, (stage, _) in sorted(before.items()):
            if path not in after and stage in left_out:
                print(f"{'left out':<18}{path} ({stage}): {left_out[stage]}")
            elif path not in after:
                failed += 1
                print(f"{'MISSING':<18}{path} ({stage}): in the committed dvc.lock, not rebuilt")
    print(f"reproduce: {len(after)} outputs, {failed} fail their rule")
    return 1 if failed else 0


def host_plan(repo: Path) -> list[str]:
    """Recompose params.yaml in `repo` on this host when the committed one plans jobs this host leaves
    out (openvino-bf16 without bf16, TensorRT without a GPU) and differs in nothing else; returns the
    jobs left out. Raises SystemExit with one line when the committed plan is not conf/'s default."""
    params = repo / "params.yaml"
    committed_text = params.read_text(encoding="utf-8")
    check = subprocess.run([sys.executable, "-m", "pipeline.params", "--check"], cwd=repo, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    if check.returncode == 0:
        return []
    subprocess.run([sys.executable, "-m", "pipeline.params"], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(repo)})
    committed, here = yaml.safe_load(committed_text), yaml.safe_load(params.read_text(encoding="utf-8"))
    dropped = sorted(set(committed["plan"]["jobs"]) - set(here["plan"]["jobs"]))
    trimmed = json.loads(json.dumps(committed))
    for job in dropped:
        del trimmed["plan"]["jobs"][job]
    for entry in trimmed["plan"]["variants"].values():
        entry["jobs"] = [j for j in entry["jobs"] if j not in dropped]
    trimmed["plan"]["left_out"] = here["plan"]["left_out"]
    if not dropped or trimmed != here or not set(dropped) <= set(here["plan"]["left_out"]):
        params.write_text(committed_text, encoding="utf-8")
        raise SystemExit("error: the committed params.yaml is not what `python -m pipeline.params` composes here; "
                         "commit the params.yaml of the plan to reproduce")
    for job in dropped:
        print(f"{'left out':<18}{job}: {here['plan']['left_out'][job]} (params.yaml recomposed on this host)")
    return dropped


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
        host_plan(repo)
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


if __name__ == "__main__":
    raise SystemExit(main())

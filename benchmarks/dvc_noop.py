"""How long a no-op `dvc status` and `dvc repro` take on a built plan of the full released matrix.

    python benchmarks/dvc_noop.py                       # 75 variants x onnxruntime-fp32, simplify=none
    python benchmarks/dvc_noop.py --real 2 --runs 5     # build 2 variants for real, time 5 runs each
    python benchmarks/dvc_noop.py --keep /tmp/noop      # keep the built clone to time it again by hand

What it builds, in a temporary copy of this checkout (its tracked and unignored files, committed
to a fresh git repository with this checkout's `.dvc/config`):

1. `python -m pipeline.params matrix=released "targets=[onnxruntime-fp32]" simplify=none` (the
   plan the README measured: 75 variants, 453 stages, and `stage-deps`; `--overrides` composes
   another one).
2. The first `--real` variants of the plan are built for real (`dvc repro benchmark@<variant>`: the
   reference, export, simplify, build and verify stages of the variant and whatever they depend on).
3. Every other stage gets a placeholder at each of its outputs instead of running its command: a
   one-line JSON file naming its path where the output is a file (metrics must parse), a folder of
   such files where it is a folder (an output whose name has no suffix), with the file names of the
   same folder of a variant built for real (so `simplified/` holds 2 files, `onnxruntime-fp32/` 6).
   `dvc commit -f` then records their hashes in dvc.lock, as a run would have. The frozen
   `train-demo` stage is left as it is (its checkpoint is committed to git). `stage-deps` (each
   stage's params and source hashes, pipeline/planning/stage_deps.py) always runs for real.

The placeholders are honest for this measurement: a no-op status or repro compares each stage's
dvc.yaml entry, dependencies, params and outputs with dvc.lock; it hashes a file only when its size,
mtime or inode differ from DVC's state database, which the commit has filled (a profile of the no-op
repro reads no output file; it digests only the listings of folder outputs). So what it costs depends
on how many stages, dependencies, params and files there are, not on the bytes the commands wrote:
a built variant's 6 stages (58 MB of outputs) took 58 ms of CPU in `Stage.changed()`, a variant of
placeholders with 2 files per folder 43 ms, hence the same file names.

Then it runs `dvc status` and `dvc repro` `--runs` times each, checks that every stage is up to date
(status says so; repro runs no stage), and prints the median wall time and the median CPU time of
each (user + system, of dvc and its children), with the machine: CPU model (lscpu), cores, load
average, and whether ruamel.yaml, which DVC parses its YAML files with, has its C extension. Wall
time on a shared machine follows the load; CPU time much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OVERRIDES = ["matrix=released", "targets=[onnxruntime-fp32]", "simplify=none"]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {os.cpu_count()} cores"


def yaml_c_extension() -> str:
    code = "import ruamel.yaml.main as m; print('yes' if m.CParser else 'no')"
    return subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True).stdout.strip()


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def env() -> dict[str, str]:
    """This interpreter's `python` first on PATH. Stage commands run `python -m stages.<name>`, which puts
    the clone first on sys.path; a PYTHONPATH (e.g. a package to try) is passed on."""
    variables = dict(os.environ)
    variables.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{variables.get('PATH', '')}",
                     DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
                     GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
    return variables


def run(args: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=root, env=env(), stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and result.returncode != 0:
        sys.exit(f"error: {' '.join(args)} failed in {root}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], root, check)


def copy_checkout(root: Path) -> None:
    """This checkout's tracked and unignored files (not artifacts/, not the DVC cache) in a fresh git repo."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "copy"], root)


def plan_stages(root: Path) -> list[tuple[str, bool, list[str], list[str]]]:
    """(stage name, frozen, output paths, dependency paths) of every stage, as DVC resolves dvc.yaml."""
    code = ("import json\nfrom dvc.repo import Repo\nrepo = Repo('.')\n"
            "print(json.dumps([(s.addressing, bool(s.frozen), [o.def_path for o in s.outs], "
            "[d.def_path for d in s.deps]) for s in repo.index.stages]))")
    return json.loads(run([sys.executable, "-c", code], root).stdout)


def variant_of(stage: str) -> str | None:
    """The variant a stage of the plan works on (`build@<variant>.<target>` -> `<variant>`)."""
    _, _, key = stage.partition("@")
    return key.split(".")[0] or None


def folder_layouts(root: Path, stages: list, variants: list[str]) -> dict[str, list[str]]:
    """Each folder output of the built variants, named with `{variant}` for the variant: its file names."""
    layouts = {}
    for name, _, outs, _ in stages:
        variant = variant_of(name)
        if variant not in variants:
            continue
        for path in outs:
            if (root / path).is_dir():
                files = sorted(p.relative_to(root / path).as_posix() for p in (root / path).rglob("*") if p.is_file())
                layouts[path.replace(variant, "{variant}")] = files
    return layouts


def write_placeholder(root: Path, path: str, variant: str | None, deps: set[str],
                      layouts: dict[str, list[str]]) -> None:
    """A folder where the name has no suffix (`simplified`, `onnxruntime-fp32`, `report`), else a file.

    A folder gets the file names a built variant's same folder has, or else the files other stages
    depend on in it (`simplified/model.onnx`), or else two files.
    """
    def fill(name: str) -> None:
        file = root / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({"placeholder": name}) + "\n")

    if Path(path).suffix:
        fill(path)
        return
    layout = layouts.get(path.replace(variant, "{variant}")) if variant else None
    inside = [f"{path}/{name}" for name in layout] if layout else [dep for dep in deps if dep.startswith(f"{path}/")]
    for name in inside or (f"{path}/a.json", f"{path}/b.json"):
        fill(name)


def build(root: Path, overrides: list[str], real: int) -> int:
    """Compose the plan, build `real` variants, put placeholders at every other output; the stage count."""
    run([sys.executable, "-m", "pipeline.params", *overrides], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "plan"], root)
    variants = list(yaml.safe_load((root / "params.yaml").read_text())["plan"]["variants"])
    stages = plan_stages(root)
    deps = {dep for *_, stage_deps in stages for dep in stage_deps}
    if any(name == "stage-deps" for name, *_ in stages):
        dvc(root, "repro", "stage-deps")  # seconds: every stage's params and source hashes
    for variant in variants[:real]:
        started = time.monotonic()
        dvc(root, "repro", f"benchmark@{variant}")
        print(f"built {variant} for real in {time.monotonic() - started:.0f} s", flush=True)
    layouts = folder_layouts(root, stages, variants[:real])
    faked = 0
    for name, frozen, outs, _ in stages:
        if frozen:
            continue
        for path in outs:
            if not (root / path).exists():
                write_placeholder(root, path, variant_of(name), deps, layouts)
                faked += 1
    started = time.monotonic()
    dvc(root, "commit", "-f")
    print(f"{len(stages)} stages; placeholders at {faked} outputs; dvc commit -f took "
          f"{time.monotonic() - started:.0f} s", flush=True)
    return len(stages)


def timed(root: Path, *args: str) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the child processes), stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = dvc(root, *args)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout


def measure(root: Path, runs: int, stages: int) -> dict[str, tuple[float, float]]:
    figures = {}
    for command in (["status"], ["repro"]):
        walls, cpus = [], []
        for _ in range(runs):
            wall, cpu, out = timed(root, *command)
            if command == ["status"] and "up to date" not in out:
                sys.exit(f"error: dvc status found changes in the built plan:\n{out[:2000]}")
            if command == ["repro"]:
                ran = re.findall(r"Running stage '([^']+)'", out)
                if ran:
                    sys.exit(f"error: the no-op dvc repro ran {len(ran)} stages, e.g. {ran[:3]}")
                unchanged = len(re.findall(r"didn't change", out))
                if unchanged < stages - 1:  # every stage but the frozen one reports it
                    sys.exit(f"error: dvc repro checked {unchanged} stages of {stages}")
            walls.append(wall)
            cpus.append(cpu)
        figures[" ".join(command)] = (statistics.median(walls), statistics.median(cpus))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=int, default=1, help="variants built for real (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each command (median)")
    parser.add_argument("--keep", type=Path, help="build the clone here (a new folder) and keep it")
    parser.add_argument("overrides", nargs="*", default=DEFAULT_OVERRIDES,
                        help=f"the plan to compose (default: {' '.join(DEFAULT_OVERRIDES)})")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True)
        root = args.keep
    else:
        root = Path(tempfile.mkdtemp(prefix="dvc-noop-"))
    try:
        copy_checkout(root)
        stages = build(root, args.overrides, args.real)
        load_before = load_average()
        figures = measure(root, args.runs, stages)
        print(f"\nno-op on a built plan of {stages} stages ({' '.join(args.overrides)}; {args.real} variant(s) "
              f"built for real, placeholders elsewhere)")
        print(f"machine: {machine()}; load average {load_before} before, {load_average()} after; "
              f"dvc {metadata.version('dvc')}, ruamel.yaml C extension: {yaml_c_extension()}; "
              f"median of {args.runs} runs")
        for command, (wall, cpu) in figures.items():
            print(f"  dvc {command:<7} {wall:6.1f} s wall  {cpu:6.1f} s CPU  ({1000 * wall / stages:.0f} ms a stage)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

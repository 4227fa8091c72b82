""".github/workflows/gpu.yml, run: the workflow's own `run:` steps, in their order, as a GitHub runner runs them,
on CPU against a local-directory remote, from a fresh clone; then fresh clones run the same steps and restore
everything from the remote without running a stage command.

What the test supplies in place of GitHub: the checkout (a `git clone` of a repository holding this checkout's
files), the install step (`.venv` is this interpreter's environment instead of a fresh `pip install`), the
expression contexts (`vars.DVC_REMOTE_URL` is the local remote; no secrets) and the job's TARGETS without its
TensorRT targets (no GPU here). The `uses:` steps that talk to GitHub are skipped. Each `run:` block runs
unchanged in `bash --noprofile --norc -eo pipefail`, GitHub's default shell, with `$GITHUB_PATH` and
`$GITHUB_ENV` applied between steps, and with a PATH that does not hold this interpreter's environment, as on a
fresh runner.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import PYTHON, REPO_ROOT
from dvc_repo import (
    COPIED,
    GIT_IDENTITY,
    StageLog,
    assert_same_files,
    clone_of,
    git,
    init_repo,
    remote_objects,
    run_cache,
    status,
)

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "gpu.yml"
# A fresh clone of the project holds its committed params.yaml and dvc.lock as well.
SHIPPED = (*COPIED, ".ci", "params.yaml", "dvc.lock")
SKIPPED_ACTIONS = ("actions/checkout", "actions/setup-python", "actions/github-script")
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load_job() -> dict:
    (job,) = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["jobs"].values()
    return job


def is_install(step: dict) -> bool:
    return "-m venv" in step.get("run", "") and "pip install" in step.get("run", "")


def is_gpu_tests(step: dict) -> bool:
    """The `pytest -m gpu` step: its tests need the GPU, so the job's run on CPU leaves it to its own test."""
    return "pytest" in step.get("run", "") and "-m gpu" in step.get("run", "")


def evaluate(expression: str, contexts: dict[str, dict[str, str]]) -> str:
    """A GitHub expression made of `context.name` lookups joined by `||` (the first non-empty one wins)."""
    for operand in expression.split("||"):
        context, _, name = operand.strip().partition(".")
        assert context in contexts and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), \
            f"gpu.yml uses the expression `{expression}`, which this test cannot evaluate yet"
        if contexts[context].get(name):
            return contexts[context][name]
    return ""


def substitute(text: str, contexts: dict[str, dict[str, str]]) -> str:
    return EXPRESSION.sub(lambda m: evaluate(m.group(1), contexts), text)


def runner_path() -> str:
    """PATH without this interpreter's environment: on a fresh runner only the workflow can put the venv there."""
    venv_bin = Path(PYTHON).parent.resolve()
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != venv_bin)


@dataclass
class Run:
    """One run of the job in a checkout: each step's name and its completed process, in order."""

    checkout: Path
    steps: list[tuple[str, subprocess.CompletedProcess]] = field(default_factory=list)

    @property
    def failed(self) -> subprocess.CompletedProcess | None:
        return next((done for _, done in self.steps if done.returncode != 0), None)

    def describe(self) -> str:
        return "\n".join(f"--- {name} (exit {done.returncode})\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                         for name, done in self.steps)


def run_job(checkout: Path, contexts: dict[str, dict[str, str]], log: StageLog, scratch: Path,
            only: str | None = None) -> Run:
    """The job's steps in order in `checkout` (or only the step whose name contains `only`); stops at a failure."""
    job = load_job()
    scratch.mkdir(parents=True, exist_ok=True)
    github_path, github_env = scratch / "github_path", scratch / "github_env"
    github_path.touch()
    github_env.touch()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "STAGE_LOG")}
    env.update(PATH=runner_path(), CI="true", GITHUB_ACTIONS="true", GITHUB_WORKSPACE=str(checkout),
               GITHUB_EVENT_NAME=contexts["github"]["event_name"], GITHUB_BASE_REF=contexts["github"]["base_ref"],
               GITHUB_PATH=str(github_path), GITHUB_ENV=str(github_env), RUNNER_NAME="test-runner",
               DVC_NO_ANALYTICS="1", **GIT_IDENTITY, **log.env())
    env.update({k: substitute(str(v), contexts) for k, v in contexts["env"].items()})
    result = Run(checkout)
    for number, step in enumerate(job["steps"]):
        name = step.get("name") or step.get("uses") or step["run"].splitlines()[0]
        if "uses" in step:
            action = step["uses"].split("@")[0]
            assert action in SKIPPED_ACTIONS, f"gpu.yml uses {action}, which this test does not stand in for"
            if action == "actions/checkout":
                assert number == 0 and (checkout / ".git").is_dir()
            continue
        if is_install(step):  # this interpreter's environment stands in for the fresh venv
            (checkout / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
            assert (checkout / ".venv" / "bin" / "dvc").is_file()
            continue
        if is_gpu_tests(step):  # test_the_gpu_tests_step_skips_on_cpu_and_fails_where_a_gpu_is_required
            continue
        if only is not None and only not in name:
            continue
        script = scratch / f"step-{number}.sh"
        script.write_text(substitute(step["run"], contexts), encoding="utf-8")
        step_env = {**env, **{k: substitute(str(v), contexts) for k, v in (step.get("env") or {}).items()}}
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=checkout,
                              env=step_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
        result.steps.append((name, done))
        if done.returncode != 0:
            break
        added = [line for line in github_path.read_text().splitlines() if line.strip()]
        env["PATH"] = os.pathsep.join([*reversed(added), runner_path()])
        for line in github_env.read_text().splitlines():
            key, sep, value = line.partition("=")
            assert sep and "<<" not in key, f"multi-line $GITHUB_ENV entries are not handled: {line}"
            env[key] = value
    return result


def contexts_for(remote: str) -> dict[str, dict[str, str]]:
    """vars/secrets/github as GitHub gives them to a pull request, and the job's env with CPU targets only."""
    job_env = dict(load_job().get("env") or {})
    targets = [t for t in job_env["TARGETS"].strip("[]").split(",") if not t.startswith("tensorrt-")]
    assert targets, "the GPU workflow's TARGETS should keep a CPU reference target next to TensorRT"
    job_env["TARGETS"] = f"[{','.join(targets)}]"
    return {"vars": {"DVC_REMOTE_URL": remote} if remote else {}, "secrets": {},
            "github": {"event_name": "pull_request", "base_ref": "main"}, "env": job_env}


def test_the_gpu_tests_step_skips_on_cpu_and_fails_where_a_gpu_is_required():
    """The step's own command in this checkout (this interpreter for the fresh venv): on a host without a GPU the
    gpu tests skip with the reason; with the step's PIPELINE_REQUIRE_GPU the run fails with that reason instead."""
    (step,) = [s for s in load_job()["steps"] if is_gpu_tests(s)]
    command = step["run"].replace(".venv/bin/python", PYTHON).split()
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_REQUIRE_GPU"}
    skipped = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert skipped.returncode == 0, skipped.stdout[-3000:] + skipped.stderr[-3000:]
    assert re.search(r"\b[3-9]\d* skipped\b", skipped.stdout) and " passed" not in skipped.stdout, skipped.stdout[-2000:]
    assert "SKIPPED" in skipped.stdout and "needs an NVIDIA GPU" in skipped.stdout, skipped.stdout[-2000:]
    required = subprocess.run(command, cwd=REPO_ROOT, env={**env, **step["env"]}, capture_output=True, text=True,
                              timeout=900)
    assert required.returncode != 0, required.stdout[-2000:]
    assert "PIPELINE_REQUIRE_GPU=1 but" in required.stderr and "needs an NVIDIA GPU" in required.stderr, \
        required.stderr[-2000:]


@pytest.fixture()
def origin(tmp_path) -> Path:
    """The repository on GitHub: this checkout's files (committed params.yaml and dvc.lock included), branch main."""
    return init_repo(tmp_path / "origin", None, SHIPPED)


def test_without_a_remote_the_run_stops_with_one_line(origin, tmp_path):
    checkout = clone_of(origin, tmp_path / "checkout")
    run = run_job(checkout, contexts_for(""), StageLog(tmp_path / "stages.log"), tmp_path / "runner",
                  only="remote")
    (name, done), = run.steps
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, run.describe()
    assert lines[0].startswith("::error::no DVC remote") and "DVC_REMOTE_URL" in lines[0]


def metrics_rows(checkout: Path) -> list[str]:
    """The rows of the metrics table the workflow posts, sorted (DVC orders them as it finds them)."""
    return sorted(line for line in (checkout / "metrics.md").read_text().splitlines() if line.startswith("| artifacts/"))


def restore(origin: Path, remote: Path, first: Path, scratch: Path, lock: bool = True) -> Path:
    """A fresh clone runs the workflow against the remote `first` filled: no stage command runs, and every
    output (artifacts/) is that of `first`. `lock=False`: the clone's dvc.lock is removed first (a lock that
    names none of these outputs). Returns the clone."""
    checkout = clone_of(origin, scratch / "checkout")
    if not lock:
        (checkout / "dvc.lock").unlink()
    log = StageLog(scratch / "stages.log")
    run = run_job(checkout, contexts_for(str(remote)), log, scratch / "runner")
    assert run.failed is None, run.describe()
    assert log.stages() == [], run.describe()  # everything came from the remote
    assert_same_files(checkout, first, "artifacts")
    return checkout


@pytest.mark.slow
def test_the_workflow_runs_and_fresh_clones_restore_everything_without_running_a_stage(origin, tmp_path):
    """The first run builds everything into an empty remote. A second clone restores from it without a dvc.lock
    (the run-cache finds every stage by its command and dependencies), and a third one after dvc.lock and
    params.yaml of the first run were committed (the lock names every output).

    Not a clone with the lock as committed here: that lock names this machine's tune records, measurements
    that only a `dvc push` from here would put in the remote (the first run measures its own)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    first = clone_of(origin, tmp_path / "first")
    first_log = StageLog(tmp_path / "first-stages.log")
    run = run_job(first, contexts_for(str(remote)), first_log, tmp_path / "runner")
    assert run.failed is None, run.describe()
    assert [name for name, _ in run.steps][-1].startswith("Metrics diff"), run.describe()
    ran = first_log.stages()
    assert {"reference@rtmpose-t_coco17_256x192", "verify@rtmpose-t_coco17_256x192.onnxruntime-fp32",
            "release@rtmpose-t_coco17_256x192"} <= set(ran), ran
    assert set(status(first)) <= {"train-demo"}, status(first)  # up to date (train-demo: frozen, never reproduced)
    assert remote_objects(remote) and len(run_cache(remote)) >= len(set(ran))  # outputs and run-cache pushed

    second = restore(origin, remote, first, tmp_path / "second", lock=False)
    assert metrics_rows(first) and metrics_rows(second) == metrics_rows(first)  # the same table on the pull request

    for name in ("dvc.lock", "params.yaml"):
        (origin / name).write_bytes((first / name).read_bytes())
    git("commit", "-q", "-am", "dvc.lock and params.yaml of the first run", root=origin)
    third = restore(origin, remote, first, tmp_path / "third")
    assert metrics_rows(third) == []  # the base branch now holds these very metrics: nothing changed

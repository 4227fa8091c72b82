"""End to end under DVC, in a temporary copy of the repository: `dvc repro`, the metrics, a no-op
second run, `dvc exp run -S ...` composing conf/ through Hydra (also queued, two at a time), and a
second clone restoring from a shared remote."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import FP32_TARGETS, PYTHON, REPO_ROOT, VARIANT

pytestmark = pytest.mark.slow

COPIED = ("dvc.yaml", "conf", "stages", "pipeline", "hydra_plugins", "checkpoints", "pyproject.toml", ".gitignore",
          ".dvcignore")
STAGES = [f"reference@{VARIANT}", f"export@{VARIANT}", f"simplify@{VARIANT}",
          *(f"{stage}@{VARIANT}.{target}" for stage in ("tune", "build", "verify") for target in FP32_TARGETS)]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "local", "*.egg-info")


def env_for(root: Path | None) -> dict[str, str]:
    """`python` on PATH is this interpreter; PYTHONPATH (if given) puts the copy's packages first."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")
    if root is not None:
        env["PYTHONPATH"] = str(root)
    return env


def run(args: list[str], root: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=root, env=env_for(root), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def dvc(*args: str, root: Path) -> subprocess.CompletedProcess:
    result = run([PYTHON, "-m", "dvc", *args], root)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def copy_repo(root: Path) -> None:
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=IGNORE)
        else:
            shutil.copy2(source, root / name)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository holding a copy of the project and params.yaml for synthetic rtmpose-t."""
    root = tmp_path_factory.mktemp("repo")
    copy_repo(root)
    for args in (["git", "init", "-q"], [PYTHON, "-m", "dvc", "init", "-q"]):
        assert run(args, root).returncode == 0
    shutil.copy2(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")  # hydra.enabled for `dvc exp run`

    installed_params = (REPO_ROOT / "params.yaml").read_bytes()
    result = run([PYTHON, "-m", "pipeline.params", "model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"targets=[{','.join(FP32_TARGETS)}]"],
                 root)
    assert result.returncode == 0, result.stderr
    assert (REPO_ROOT / "params.yaml").read_bytes() == installed_params  # wrote the copy's, not the repo's
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert sorted(params["plan"]["jobs"]) == sorted(f"{VARIANT}.{t}" for t in FP32_TARGETS)

    for args in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "copy"]):
        assert run(args, root).returncode == 0
    return root


@pytest.fixture(scope="module")
def reproduced(repo) -> subprocess.CompletedProcess:
    # `verify` and its upstream: the stages of the planned jobs (benchmarks and demo training are not needed).
    return dvc("repro", "verify", root=repo)


def test_repro_runs_every_stage(reproduced):
    for stage in STAGES:
        assert f"Running stage '{stage}'" in reproduced.stdout, stage


def test_metrics_show_lists_both_jobs_as_passed(reproduced, repo):
    shown = json.loads(dvc("metrics", "show", "--json", root=repo).stdout)
    files = shown[""]["data"]
    for target in FP32_TARGETS:
        metrics = files[f"artifacts/{VARIANT}/metrics/{target}.json"]["data"]
        assert metrics["passed"] is True and metrics["job"] == f"{VARIANT}.{target}"


def test_second_repro_reruns_nothing(reproduced, repo):
    again = dvc("repro", "verify", root=repo)
    assert "Running stage" not in again.stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change" in again.stdout


def test_one_backends_source_edit_reruns_only_that_backends_stages(reproduced, repo, tmp_path):
    """Stages list their sources through their stage-deps file (pipeline/stage_deps.py): an edit to one
    backend's module reruns `stage-deps`, then that backend's build and verify only."""
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy, symlinks=True)  # the fixture's repository, cache and outputs
    result = run([PYTHON, "-m", "pipeline.params", "model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"targets=[{','.join(FP32_TARGETS)}]"],
                 copy)
    assert result.returncode == 0, result.stderr
    dvc("repro", "verify", root=copy)  # the fixture's plan, whatever experiment the workspace held
    module = copy / "pipeline" / "backends" / "openvino.py"
    module.write_text(module.read_text() + "\n# an edit that changes no behaviour\n")
    ran = set(re.findall(r"Running stage '([^']+)'", dvc("repro", "verify", root=copy).stdout))
    assert ran == {"stage-deps", f"build@{VARIANT}.openvino-fp32", f"verify@{VARIANT}.openvino-fp32"}


def test_exp_run_composes_conf_through_hydra(reproduced, repo):
    for args in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "repro"]):
        assert run(args, repo).returncode == 0
    result = dvc("exp", "run", "-S", "model=rtmpose-t_coco17_256x192", "-S", "model.checkpoint=null", "-S", "targets=[onnxruntime-fp32]",
                 "-S", "simplify.atol=0.001", "verify", root=repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["targets"] == ["onnxruntime-fp32"] and params["simplify"]["atol"] == 0.001
    assert list(params["plan"]["jobs"]) == [f"{VARIANT}.onnxruntime-fp32"]
    assert f"Running stage 'simplify@{VARIANT}'" in result.stdout  # its param changed ...
    assert f"Stage 'verify@{VARIANT}.onnxruntime-fp32' didn't change" in result.stdout  # ... its ONNX did not
    assert "openvino-fp32'" not in result.stdout  # no longer a job: no stage of it runs


def test_queued_sweep_runs_two_experiments_at_a_time(reproduced, repo):
    """`-S key=a,b` queues one experiment per value, each composed from conf/ by DVC; two workers run them."""
    dvc("exp", "run", "--queue", "-S", "model=rtmpose-t_coco17_256x192", "-S", "model.checkpoint=null", "-S", "targets=[onnxruntime-fp32]",
        "-S", "simplify.atol=0.002,0.003", "verify", root=repo)
    assert "Started '2' new experiments task queue workers" in dvc("queue", "start", "-j", "2", root=repo).stdout
    deadline = time.monotonic() + 240
    while re.search(r"\b(Queued|Running)\b", status := dvc("queue", "status", root=repo).stdout):
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(dvc("exp", "show", "--json", root=repo).stdout)
    experiments = [rev for baseline in shown for exp in baseline.get("experiments") or [] for rev in exp["revs"]]
    done = {}
    for rev in experiments:
        params = rev["data"]["params"]["params.yaml"]["data"]
        metrics = rev["data"]["metrics"][f"artifacts/{VARIANT}/metrics/onnxruntime-fp32.json"]["data"]
        done[params["simplify"]["atol"]] = (params["targets"], metrics["passed"])
    assert done[0.002] == done[0.003] == (["onnxruntime-fp32"], True)  # metrics come from the DVC cache


def test_stage_commands_run_the_checkout_they_are_in(tmp_path):
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=IGNORE)
    # A tripwire in place of the checkout's pipeline/cli.py: importing it marks the checkout and stops.
    (tmp_path / "pipeline" / "cli.py").write_text(
        "import pathlib, sys\npathlib.Path('imported-from-checkout').touch()\nsys.exit(0)\n")
    cmd = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["reference"]["do"]["cmd"]
    subprocess.run(cmd.replace("${key}", VARIANT), shell=True, cwd=tmp_path, env=env_for(None),
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert (tmp_path / "imported-from-checkout").exists()



@pytest.fixture(scope="module")
def shared_remote(reproduced, repo, tmp_path_factory) -> Path:
    """Clone A (the repo) pushes its outputs and its run-cache to a local-directory remote."""
    remote = tmp_path_factory.mktemp("remote")
    dvc("remote", "add", "-d", "-f", "shared", str(remote), root=repo)
    for args in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "lock and remote", "--allow-empty"]):
        assert run(args, repo).returncode == 0, args
    dvc("push", "--run-cache", root=repo)
    return remote


def clone_of(repo: Path, tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    assert run(["git", "clone", "-q", str(repo), str(clone)], tmp_path).returncode == 0
    return clone


def planned_stages(root: Path) -> list[str]:
    plan = yaml.safe_load((root / "params.yaml").read_text())["plan"]  # an earlier test's experiment
    assert plan["jobs"]
    return [*(f"{stage}@{v}" for v in plan["variants"] for stage in ("reference", "export", "simplify")),
            *(f"{stage}@{job}" for job in plan["jobs"] for stage in ("build", "verify"))]


def assert_same_outputs(clone: Path, repo: Path) -> None:
    targets = yaml.safe_load((clone / "params.yaml").read_text())["targets"]
    for relative in ([VARIANT, "reference.npz"], [VARIANT, "export", "model.onnx"], [VARIANT, "simplified", "model.onnx"],
                     *([VARIANT, target, "artifact.json"] for target in targets),
                     *([VARIANT, "metrics", f"{target}.json"] for target in targets)):
        path = Path("artifacts", *relative)
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path


def test_second_clone_restores_from_shared_remote_without_running(shared_remote, repo, tmp_path):
    """Clone B (dvc.lock committed) runs the GPU workflow's `dvc repro --pull --allow-missing`, which runs
    no stage command, and `dvc pull` then restores every artifact byte for byte."""
    clone = clone_of(repo, tmp_path)
    restored = dvc("repro", "--pull", "--allow-missing", "verify", root=clone)
    assert "Running stage" not in restored.stdout, restored.stdout
    dvc("pull", "--with-deps", "verify", root=clone)
    assert_same_outputs(clone, repo)


def test_second_clone_restores_from_the_run_cache_alone(shared_remote, repo, tmp_path):
    """Without dvc.lock only the run-cache knows that the stages ran. `dvc repro --pull` looks each stage up
    by its cmd and the hashes of its deps and params, downloads the outputs of the entry it finds and checks
    them out: no stage command runs. (`dvc pull --run-cache` downloads the entries but not their outputs,
    so a plain `dvc repro` after it runs every stage.)"""
    clone = clone_of(repo, tmp_path)
    (clone / "dvc.lock").unlink()
    restored = dvc("repro", "--pull", "verify", root=clone)
    assert "Running stage" not in restored.stdout, restored.stdout
    for stage in planned_stages(clone):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in restored.stdout, stage
    assert_same_outputs(clone, repo)

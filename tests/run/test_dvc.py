"""End to end under DVC, in a temporary copy of the repository: `dvc repro`, the metrics, a no-op
second run, `dvc exp run -S ...` composing conf/ through Hydra (also queued, two at a time), and a
second clone restoring from a shared remote.

Every test stands alone: the module's repository is reproduced and committed once, and a test that changes
it works in its own clone. Outcomes are checked, not DVC's wording: the stage commands that ran (StageLog),
dvc.lock, `dvc status --json`, `dvc exp show --json` and the files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import FP32_TARGETS, PYTHON, REPO_ROOT, VARIANT
from dvc_repo import (
    IGNORE,
    StageLog,
    assert_same_files,
    clone_of,
    dvc,
    env_for,
    git,
    init_repo,
    lock,
    plan,
    planned_stages,
    run,
    stage_sources,
    status,
    workspace_clone,
)

pytestmark = pytest.mark.slow

# Tune runs (its stage and workers are what these tests follow) but measures little: timing is not under test here.
BRIEF_TUNE = ("tune.threads=[1]", "tune.warmup=1", "tune.calls=2", "tune.blocks=1", "tune.settle_s=0",
              "tune.throughput_images=0")
SYNTHETIC = ("model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"targets=[{','.join(FP32_TARGETS)}]",
             *BRIEF_TUNE)
STAGES = ["stage-deps", f"reference@{VARIANT}", f"export@{VARIANT}", f"simplify@{VARIANT}",
          *(f"{stage}@{VARIANT}.{target}" for stage in ("tune", "build", "verify") for target in FP32_TARGETS)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository holding a copy of the project and params.yaml for synthetic rtmpose-t."""
    root = init_repo(tmp_path_factory.mktemp("repo") / "repo", SYNTHETIC)
    assert sorted(plan(root)["jobs"]) == sorted(f"{VARIANT}.{t}" for t in FP32_TARGETS)
    return root


@pytest.fixture(scope="module")
def reproduced(repo, tmp_path_factory) -> StageLog:
    """`verify` and its upstream (the stages of the planned jobs; benchmarks and demo training are not needed),
    with dvc.lock committed; returns the stage commands that ran."""
    log = StageLog(tmp_path_factory.mktemp("log") / "stages.log")
    dvc("repro", "verify", root=repo, log=log)
    git("add", "-A", root=repo)
    git("commit", "-q", "-m", "repro", root=repo)
    return log


def test_repro_runs_every_stage(reproduced, repo):
    assert sorted(reproduced.stages()) == sorted(STAGES)  # each once
    assert set(lock(repo)) == set(STAGES)
    assert status(repo, "--with-deps", "verify") == {}


def test_metrics_show_lists_both_jobs_as_passed(reproduced, repo):
    shown = json.loads(dvc("metrics", "show", "--json", root=repo).stdout)
    files = shown[""]["data"]
    for target in FP32_TARGETS:
        metrics = files[f"artifacts/{VARIANT}/metrics/{target}.json"]["data"]
        assert metrics["passed"] is True and metrics["job"] == f"{VARIANT}.{target}"


def test_second_repro_reruns_nothing(reproduced, repo, tmp_path):
    locked = (repo / "dvc.lock").read_bytes()
    log = StageLog(tmp_path / "stages.log")
    dvc("repro", "verify", root=repo, log=log)
    assert log.stages() == []
    assert (repo / "dvc.lock").read_bytes() == locked


def test_one_backends_source_edit_reruns_only_that_backends_stages(reproduced, repo, tmp_path):
    """Stages list their sources through their stage-deps file (pipeline/planning/stage_deps.py): an edit to one
    backend's module reruns `stage-deps`, then that backend's tune, build and verify only."""
    clone = workspace_clone(repo, tmp_path / "clone")
    dvc("repro", "verify", root=clone)  # the fixture's plan, whatever experiment the workspace held
    module = clone / "pipeline" / "backends" / "openvino.py"
    module.write_text(module.read_text() + "\n# an edit that changes no behaviour\n")
    log = StageLog(tmp_path / "stages.log")
    dvc("repro", "verify", root=clone, log=log)
    assert set(log.stages()) == {"stage-deps", *(f"{stage}@{VARIANT}.openvino-fp32" for stage in ("tune", "build", "verify"))}


SOURCE_FOLDERS = ("pipeline", "stages", "hydra_plugins")  # what `stage-deps` depends on and hashes from (dvc.yaml)


def uncovered(root: Path, stage: str, files: set[str]) -> list[str]:
    """The project files among `files` (what the stage's processes loaded or opened) that none of its sources
    covers: the files and folders its stage-deps file lists; for `stage-deps`, the source folders."""
    sources = set(SOURCE_FOLDERS) if stage == "stage-deps" else stage_sources(root, stage)
    return sorted(f for f in files if f.split("/")[0] in SOURCE_FOLDERS
                  and f not in sources and not any(f.startswith(f"{s}/") for s in sources))


def test_each_stage_executes_only_its_source_dependencies(reproduced, repo):
    """Every project file a stage process (or a process it started, e.g. a timing worker) loaded or opened is among
    the sources its stage-deps file lists, derived from the code (pipeline/planning/closure.py)."""
    loaded = reproduced.loaded()
    assert set(loaded) == set(STAGES)
    for stage, files in loaded.items():
        assert uncovered(repo, stage, files) == [], stage
    build = loaded[f"build@{VARIANT}.openvino-fp32"]  # the recorder sees what runs, and a job runs one backend
    assert "pipeline/backends/openvino.py" in build and "pipeline/backends/onnxruntime.py" not in build
    assert "pipeline/measure/timing.py" in loaded[f"tune@{VARIANT}.openvino-fp32"]  # its workers' modules
    assert "pipeline/inputs/data/astronaut.png" in loaded[f"reference@{VARIANT}"]  # data files opened


def test_the_other_stages_execute_only_their_source_dependencies(reproduced, repo, tmp_path):
    """The stages the fixture's plan leaves out, under `dvc repro` in a clone planned with an INT8 target and
    evaluation (16 demo scenes, few timed calls): demo-data, calibration, quantize, the INT8 job, benchmark
    (its workers and peers), evaluate, report and release load only files among their sources."""
    clone = workspace_clone(repo, tmp_path / "clone")
    demo = clone / "conf" / "train_demo.yaml"
    demo.write_text(demo.read_text().replace("\ncoco_images: 200", "\ncoco_images: 16"))
    overrides = (*SYNTHETIC[:2], *BRIEF_TUNE, f"targets=[{','.join(FP32_TARGETS)},onnxruntime-int8]", "calibration.num_samples=8",
                 "evaluate.enabled=true", "evaluate.max_ap_drop=1", "benchmark.warmup=1", "benchmark.calls=2",
                 "benchmark.blocks=1", "benchmark.settle_s=0", "benchmark.throughput_images=0")
    result = run([PYTHON, "-m", "pipeline.params", *overrides], clone)
    assert result.returncode == 0, result.stderr
    log = StageLog(tmp_path / "stages.log")
    dvc("repro", root=clone, log=log)
    loaded = log.loaded()
    stages = {"demo-data", "report", *(f"{s}@{VARIANT}" for s in ("calibration", "quantize", "benchmark", "evaluate",
                                                                   "release")),
              *(f"{s}@{VARIANT}.onnxruntime-int8" for s in ("tune", "build", "verify"))}
    assert stages <= set(loaded)
    for stage, files in loaded.items():
        assert uncovered(clone, stage, files) == [], stage
    assert "pipeline/report/templates/report.html.j2" in loaded["report"]  # opened data files are recorded
    assert "pipeline/measure/timing.py" in loaded[f"benchmark@{VARIANT}"]


def test_an_edit_makes_dvc_status_report_the_stages_that_execute_the_file(reproduced, repo, tmp_path):
    """Once `stage-deps` has read the edited sources, `dvc status` reports exactly the stages whose processes
    loaded the edited file in the fixture's run; undone, it reports nothing."""
    loaded = reproduced.loaded()
    clone = workspace_clone(repo, tmp_path / "clone")
    for edited, runs, not_runs in (("pipeline/check/verify.py", "verify@", "build@"),
                                   ("pipeline/graph/quantize.py", "build@", "openvino")):
        path = clone / edited
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit that changes no behaviour\n")
        dvc("repro", "stage-deps", root=clone)
        reported = set(status(clone, "--with-deps", "verify"))
        expected = {stage for stage, files in loaded.items() if edited in files and stage != "stage-deps"}
        assert reported == expected, edited
        assert [s for s in reported if s.startswith(runs)] and not [s for s in reported if not_runs in s], edited
        path.write_bytes(original)
        dvc("repro", "stage-deps", root=clone)
        assert status(clone, "--with-deps", "verify") == {}


def test_exp_run_composes_conf_through_hydra(reproduced, repo, tmp_path):
    clone = workspace_clone(repo, tmp_path / "clone")
    before = lock(clone)
    log = StageLog(tmp_path / "stages.log")
    same_tune = [flag for override in BRIEF_TUNE for flag in ("-S", override)]  # as the repo's params.yaml has it
    dvc("exp", "run", "-S", "model=rtmpose-t_coco17_256x192", "-S", "model.checkpoint=null", "-S", "targets=[onnxruntime-fp32]",
        *same_tune, "-S", "simplify.atol=0.001", "verify", root=clone, log=log)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    assert params["targets"] == ["onnxruntime-fp32"] and params["simplify"]["atol"] == 0.001
    assert list(params["plan"]["jobs"]) == [f"{VARIANT}.onnxruntime-fp32"]
    ran = log.stages()
    assert f"simplify@{VARIANT}" in ran  # its param changed ...
    assert f"verify@{VARIANT}.onnxruntime-fp32" not in ran  # ... its ONNX did not
    assert lock(clone)[f"verify@{VARIANT}.onnxruntime-fp32"] == before[f"verify@{VARIANT}.onnxruntime-fp32"]
    assert not [stage for stage in ran if "openvino-fp32" in stage]  # no longer a job: no stage of it runs


def experiments(root: Path) -> list[dict]:
    shown = json.loads(dvc("exp", "show", "--json", root=root).stdout)
    return [exp for baseline in shown for exp in baseline.get("experiments") or []]


def test_queued_sweep_runs_two_experiments_at_a_time(reproduced, repo, tmp_path):
    """`-S key=a,b` queues one experiment per value, each composed from conf/ by DVC; two workers run them."""
    clone = workspace_clone(repo, tmp_path / "clone")
    dvc("exp", "run", "--queue", "-S", "model=rtmpose-t_coco17_256x192", "-S", "model.checkpoint=null", "-S", "targets=[onnxruntime-fp32]",
        "-S", "simplify.atol=0.002,0.003", "verify", root=clone)
    assert [(exp["executor"] or {}).get("state") for exp in experiments(clone)] == ["queued", "queued"]
    dvc("queue", "start", "-j", "2", root=clone)
    deadline = time.monotonic() + 300
    while True:
        shown = experiments(clone)
        if not {(exp["executor"] or {}).get("state") for exp in shown} & {"queued", "running"}:
            break
        assert time.monotonic() < deadline, shown
        time.sleep(2)
    done = {}
    for exp in shown:
        assert (exp["executor"] or {}).get("state", "success") == "success", exp
        for rev in exp["revs"]:
            params = rev["data"]["params"]["params.yaml"]["data"]
            metrics = rev["data"]["metrics"][f"artifacts/{VARIANT}/metrics/onnxruntime-fp32.json"]["data"]
            done[params["simplify"]["atol"]] = (params["targets"], metrics["passed"])
    assert done == {0.002: (["onnxruntime-fp32"], True), 0.003: (["onnxruntime-fp32"], True)}  # from the DVC cache


def test_stage_commands_run_the_checkout_they_are_in(tmp_path):
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=IGNORE)
    # A tripwire in place of the checkout's pipeline/run/cli.py: importing it marks the checkout and stops.
    (tmp_path / "pipeline" / "run" / "cli.py").write_text(
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
    git("add", "-A", root=repo)
    git("commit", "-q", "-m", "remote", "--allow-empty", root=repo)
    dvc("push", "--run-cache", root=repo)
    return remote


def assert_same_outputs(clone: Path, repo: Path) -> None:
    targets = yaml.safe_load((clone / "params.yaml").read_text())["targets"]
    for relative in ("reference.npz", "export/model.onnx", "simplified", *targets,
                     *(f"metrics/{target}.json" for target in targets)):
        assert_same_files(clone, repo, Path("artifacts", VARIANT, relative))


def test_second_clone_restores_from_shared_remote_without_running(shared_remote, repo, tmp_path):
    """Clone B (dvc.lock committed) runs the GPU workflow's `dvc repro --pull --allow-missing`, which runs
    no stage command, and `dvc pull` then restores every artifact byte for byte."""
    clone = clone_of(repo, tmp_path / "clone")
    log = StageLog(tmp_path / "stages.log")
    dvc("repro", "--pull", "--allow-missing", "verify", root=clone, log=log)
    assert log.stages() == []
    dvc("pull", "--with-deps", "verify", root=clone)
    assert status(clone, "--with-deps", "verify") == {}
    assert_same_outputs(clone, repo)


def test_second_clone_restores_from_the_run_cache_alone(shared_remote, repo, tmp_path):
    """Without dvc.lock only the run-cache knows that the stages ran. `dvc repro --pull` looks each stage up
    by its cmd and the hashes of its deps and params, downloads the outputs of the entry it finds and checks
    them out: no stage command runs. (`dvc pull --run-cache` downloads the entries but not their outputs,
    so a plain `dvc repro` after it runs every stage.)"""
    clone = clone_of(repo, tmp_path / "clone")
    (clone / "dvc.lock").unlink()
    log = StageLog(tmp_path / "stages.log")
    dvc("repro", "--pull", "verify", root=clone, log=log)
    assert log.stages() == []
    assert set(lock(clone)) == set(planned_stages(clone))  # every stage restored, and recorded as if it ran
    assert status(clone, "--with-deps", "verify") == {}
    assert_same_outputs(clone, repo)

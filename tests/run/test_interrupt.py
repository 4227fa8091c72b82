"""A stage killed mid-write (SIGKILL during `build` and during `verify`, under `dvc repro`) leaves nothing
half-written in the DVC cache, the run-cache or a remote, and the rerun completes with the outputs, lock file,
cache and run-cache of an uninterrupted run.

The build stage is killed once its temporary artifact folder (`<artifact>.tmp-<host>-<pid>`, pipeline/core/io.py)
holds a file; the verify stage once it has loaded onnxruntime to run the artifact. Both are real processes
started by DVC, found through /proc and killed by their process id.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, VARIANT
from dvc_repo import (
    StageLog,
    assert_same_files,
    cache_objects,
    clone_of,
    dvc,
    env_for,
    init_repo,
    lock,
    locked_objects,
    remote_objects,
    run_cache,
    status,
    temporaries,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the stage processes in /proc")]

JOB = f"{VARIANT}.onnxruntime-fp32"
# tune.enabled=false: tuned settings are measurements, so two runs of `tune` differ (and verify depends on
# them); without them every output of an uninterrupted run is reproducible for the comparison below.
SMALL = ("model=rtmpose-t_coco17_256x192", "model.checkpoint=null", "targets=[onnxruntime-fp32]", "simplify=none",
         "tune.enabled=false")


def children(pid: int) -> list[int]:
    """Every live descendant of `pid`."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def build_writing(root: Path, repro: subprocess.Popen) -> int | None:
    """The build stage's pid once its temporary artifact folder holds a file."""
    for tmp in (root / "artifacts" / VARIANT).glob("onnxruntime-fp32.tmp-*"):
        if tmp.is_dir() and any(tmp.iterdir()):
            return int(tmp.name.rsplit("-", 1)[1])
    return None


def verify_running(root: Path, repro: subprocess.Popen) -> int | None:
    """The verify stage's pid once it has onnxruntime loaded (it is running the artifact)."""
    for pid in children(repro.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"stages.verify" in command and b"onnxruntime" in Path(f"/proc/{pid}/maps").read_bytes():
                return pid
        except OSError:
            continue
    return None


def repro_killing(root: Path, victim, log: StageLog, output: Path) -> tuple[int, int]:
    """`dvc repro verify`, SIGKILLing the stage process that `victim` finds; returns (dvc's exit code, the pid)."""
    with output.open("w") as out:
        repro = subprocess.Popen([PYTHON, "-m", "dvc", "repro", "verify"], cwd=root, env=env_for(root, log),
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        killed, deadline = None, time.monotonic() + 900
        while killed is None and repro.poll() is None and time.monotonic() < deadline:
            pid = victim(root, repro)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = pid
            time.sleep(0.005)
        code = repro.wait(timeout=300)
    assert killed is not None, f"the stage finished before it could be killed:\n{output.read_text()[-3000:]}"
    return code, killed


def assert_nothing_half_written(root: Path, remote: Path, stopped: str) -> None:
    """Everything in the cache, the run-cache and the remote belongs to a stage that completed (in dvc.lock)."""
    completed = lock(root)
    assert stopped not in completed
    assert cache_objects(root) == locked_objects(root)
    recorded = {(entry["cmd"], repr(entry.get("outs"))) for entry in completed.values()}
    assert {(entry["cmd"], repr(entry.get("outs"))) for entry in run_cache(root).values()} <= recorded
    dvc("push", "--run-cache", root=root)
    assert remote_objects(remote) <= locked_objects(root)
    assert {(entry["cmd"], repr(entry.get("outs"))) for entry in run_cache(remote).values()} <= recorded


def test_stages_killed_mid_write_cache_nothing_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
    uninterrupted = init_repo(tmp_path / "uninterrupted", SMALL)
    dvc("repro", "verify", root=uninterrupted)
    assert status(uninterrupted, "--with-deps", "verify") == {}

    root = clone_of(uninterrupted, tmp_path / "interrupted")
    remote = tmp_path / "remote"
    remote.mkdir()
    dvc("remote", "add", "--local", "-d", "shared", str(remote), root=root)
    log = StageLog(tmp_path / "stages.log")

    # SIGKILL while build writes its artifact: the partial folder stays as a temporary, never as the output.
    code, pid = repro_killing(root, build_writing, log, tmp_path / "build.log")
    assert code != 0
    variant = root / "artifacts" / VARIANT
    assert [p.name for p in temporaries(root)] == [f"onnxruntime-fp32.tmp-{socket.gethostname()}-{pid}"]
    assert not (variant / "onnxruntime-fp32").exists()
    assert_nothing_half_written(root, remote, f"build@{JOB}")

    # SIGKILL while verify runs the artifact: build completed this time (and removed the dead temporary).
    code, _ = repro_killing(root, verify_running, log, tmp_path / "verify.log")
    assert code != 0
    assert temporaries(root) == [] and (variant / "onnxruntime-fp32" / "model.onnx").is_file()
    assert f"build@{JOB}" in lock(root) and not (variant / "metrics" / "onnxruntime-fp32.json").exists()
    assert_nothing_half_written(root, remote, f"verify@{JOB}")

    # The rerun completes, running only what did not complete, and equals the uninterrupted run.
    log.clear()
    dvc("repro", "verify", root=root, log=log)
    assert log.stages() == [f"verify@{JOB}"]
    assert status(root, "--with-deps", "verify") == {}
    assert temporaries(root) == []
    assert lock(root) == lock(uninterrupted)
    assert cache_objects(root) == cache_objects(uninterrupted)
    assert run_cache(root) == run_cache(uninterrupted)
    for relative in ("reference.npz", "export", "simplified", "onnxruntime-fp32", "metrics"):
        assert_same_files(root, uninterrupted, Path("artifacts", VARIANT, relative))
    dvc("push", "--run-cache", root=root)
    assert remote_objects(remote) == cache_objects(uninterrupted)
    assert run_cache(remote) == run_cache(uninterrupted)

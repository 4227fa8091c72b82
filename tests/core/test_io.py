"""Atomic outputs (pipeline/core/io.py): a writer killed mid-write leaves only a temporary that DVC ignores and
the next write of the same output removes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
from pathlib import Path

from pipeline.core.io import atomic_path, remove_stale_temporaries, write_json

from conftest import PYTHON, REPO_ROOT

HOST = socket.gethostname()

# A real writer: opens the temporary of `final`, writes part of its content, says so, and waits to be killed.
WRITER = textwrap.dedent("""
    import sys, time
    from pipeline.core.io import atomic_path
    with atomic_path(sys.argv[1], is_dir=True) as tmp:
        (tmp / "model.onnx").write_bytes(b"half of a model")
        print(tmp, flush=True)
        time.sleep(600)
""")


def start_writer(final: Path) -> tuple[subprocess.Popen, Path]:
    writer = subprocess.Popen([PYTHON, "-c", WRITER, str(final)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    return writer, Path(writer.stdout.readline().strip())


def kill(writer: subprocess.Popen) -> None:
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)  # reaped: no process of that id is left
    writer.stdout.close()


def test_a_completed_write_leaves_only_the_output(tmp_path):
    write_json(tmp_path / "metrics.json", {"passed": True})
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_the_temporary_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    final = tmp_path / "onnxruntime-fp32"
    writer, tmp = start_writer(final)
    assert tmp.name == f"onnxruntime-fp32.tmp-{HOST}-{writer.pid}"
    kill(writer)
    assert (tmp / "model.onnx").read_bytes() == b"half of a model" and not final.exists()  # mid-write

    with atomic_path(final, is_dir=True) as again:
        (again / "model.onnx").write_bytes(b"a whole model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnxruntime-fp32"]
    assert (final / "model.onnx").read_bytes() == b"a whole model"


def test_temporaries_of_running_writers_and_of_other_hosts_are_kept(tmp_path):
    final = tmp_path / "metrics.json"
    running, running_tmp = start_writer(final)
    try:
        dead, dead_tmp = start_writer(final)
        kill(dead)
        other_host = tmp_path / f"metrics.json.tmp-{HOST}x-{dead.pid}"  # same pid, another machine
        other_host.write_text("{")
        other_output = tmp_path / f"metrics.json.old.tmp-{HOST}-{dead.pid}"  # the temporary of another output
        other_output.write_text("{")
        assert remove_stale_temporaries(final) == [dead_tmp]
        assert running_tmp.is_dir() and other_host.is_file() and other_output.is_file()
    finally:
        kill(running)
    assert remove_stale_temporaries(final) == [running_tmp]


def test_dvc_ignores_temporaries_in_a_directory(tmp_path):
    """The repository's .dvcignore keeps a stale temporary out of a directory's hash: a folder tracked by
    DVC, with a killed writer's temporary added inside it, is unchanged for `dvc status`."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def dvc(*args: str) -> str:
        result = subprocess.run([PYTHON, "-m", "dvc", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    dvc("init", "--no-scm", "-q")
    shutil.copy2(REPO_ROOT / ".dvcignore", tmp_path / ".dvcignore")
    variant = tmp_path / "variant"
    write_json(variant / "metrics" / "onnxruntime-fp32.json", {"passed": True})
    dvc("add", "-q", "variant")
    writer, tmp = start_writer(variant / "onnxruntime-fp32")
    kill(writer)
    assert tmp.parent == variant and tmp.is_dir()
    assert json.loads(dvc("status", "--json", "variant.dvc")) == {}
    (variant / "metrics" / "openvino-fp32.json").write_text("{}\n")  # a real change is still seen
    assert json.loads(dvc("status", "--json", "variant.dvc")) != {}

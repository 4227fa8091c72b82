"""The GitHub workflows are valid YAML and only run commands the README documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
README = (ROOT / "README.md").read_text(encoding="utf-8")


def commands(workflow: Path) -> list[str]:
    data = yaml.safe_load(workflow.read_text(encoding="utf-8"))
    steps = [step for job in data["jobs"].values() for step in job["steps"]]
    return [line.strip() for step in steps if "run" in step for line in step["run"].splitlines() if line.strip()]


def test_there_are_cpu_and_gpu_workflows():
    assert {w.name for w in WORKFLOWS} >= {"cpu.yml", "gpu.yml"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_workflow_is_valid(workflow):
    data = yaml.safe_load(workflow.read_text(encoding="utf-8"))
    assert data["name"] and data["jobs"]
    for job in data["jobs"].values():
        assert job["runs-on"] and job["steps"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_workflow_runs_only_documented_commands(workflow):
    for line in commands(workflow):
        tool = re.sub(r"^\.venv/bin/", "", line)
        if tool.startswith(("python3.11 -m venv", "pip install")):
            continue  # the set-up, as in the README's first command
        # the command itself (up to its first argument that carries a value) must appear in the README
        words = [w for w in tool.split() if not w.startswith(("$", '"$', "'"))]
        key = " ".join(words[:3])
        assert key in README or tool.split(" >")[0] in README, f"{workflow.name}: `{line}` is not in README.md"


def test_gpu_workflow_pulls_and_pushes_the_run_cache():
    """What tests/run/test_gpu_workflow.py runs, read off the file: the remote from DVC_REMOTE_URL, a reproduction that
    pulls (never skips: --allow-missing would leave the TensorRT stages without their ONNX), the push."""
    lines = commands(ROOT / ".github" / "workflows" / "gpu.yml")
    text = "\n".join(lines)
    assert 'bash .ci/dvc-remote "$DVC_REMOTE_URL"' in lines
    assert ".venv/bin/dvc repro --pull" in lines and "--allow-missing" not in text
    assert "dvc push --run-cache" in text
    assert "dvc metrics diff" in text and "--md" in text
    assert "tensorrt]" in text and "--extra-index-url https://pypi.nvidia.com" in text

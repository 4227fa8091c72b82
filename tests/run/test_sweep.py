"""Hydra sweeps (`python -m pipeline -m ...`): every launcher config composes, and a sweep through a local
Ray instance runs each job to the end and prints one summary table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from pipeline.config import CONF_DIR

from conftest import REPO_ROOT, run_python

VARIANTS = ("rtmpose-t_coco17_256x192", "rtmpose-t_hand21_256x192")


def hydra_launcher(launcher: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True).hydra.launcher


def test_the_default_launcher_runs_two_jobs_at_a_time():
    launcher = hydra_launcher("parallel")
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 2


def test_a_launcher_chosen_on_the_command_line_gets_no_joblib_keys():
    # Hydra's built-in launcher stands in for ray/slurm, whose plugins may not be installed.
    assert "n_jobs" not in hydra_launcher("basic")


@pytest.mark.slow
def test_ray_sweep_runs_every_job_and_prints_the_table(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (the `ray` extra: pip install -e '.[ray]')")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is not installed (the `ray` extra)")
    assert hydra_launcher("ray_local").ray.init.num_cpus == 2
    assert hydra_launcher("ray_cluster").ray.init.object_store_memory is None  # see conf/hydra/launcher/ray_cluster.yaml
    sweep, out = tmp_path / "sweep", tmp_path / "out"
    result = run_python("-m", "pipeline", "-m", "hydra/launcher=ray_local", "model=rtmpose-t_coco17_256x192", "model.checkpoint=null",
                        "targets=[onnxruntime-fp32]", f"model={','.join(VARIANTS)}", f"out_dir={out}", "tune.enabled=false",
                        f"hydra.sweep.dir={sweep}", cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    launcher = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["launcher"]  # what Hydra launched with
    assert launcher["_target_"].endswith("RayLauncher") and launcher["ray"]["init"]["address"] == "local"
    assert "sweep: 2 jobs, 2 passed or left out, 0 failed" in result.stdout
    for number, variant in enumerate(VARIANTS):
        results = json.loads((sweep / str(number) / "results.json").read_text())
        assert results["results"] == [{"job": f"{variant}.onnxruntime-fp32", "status": "passed"}]
        assert any(line.split()[:3] == [str(number), f"{variant}.onnxruntime-fp32", "passed"]
                   for line in result.stdout.splitlines())  # its row of the summary table
        assert json.loads(Path(out, variant, "metrics", "onnxruntime-fp32.json").read_text())["passed"] is True

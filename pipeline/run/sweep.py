"""Hydra sweeps: every job runs its chain in a fresh process, and the sweep ends with one table.

The joblib launcher keeps its worker processes alive between jobs, so runtime state (thread pools,
OpenVINO cores, torch settings) could leak from one job into the next; `run_isolated` therefore runs
each job's chain in a new interpreter, started with its resolved config. Each job writes `results.json` into its Hydra
output directory; `SweepSummary` (a Hydra callback) collects them when the multirun ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.core.errors import PipelineError, fail
from pipeline.run.chain import nothing_built, run_chain
from pipeline.run.configure import validate

RESULTS_FILE = "results.json"


def run_isolated(raw: DictConfig, workdir: str | Path) -> list[tuple[str, str]]:
    """Run the chain in a fresh interpreter (`python -m pipeline.run.sweep CONFIG RESULTS`)."""
    workdir = Path(workdir)
    config_file, results_file = workdir / "job_config.yaml", workdir / "job_results.json"
    config_file.write_text(OmegaConf.to_yaml(OmegaConf.to_container(raw, resolve=True)), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pipeline.run.sweep", str(config_file), str(results_file)],
                          capture_output=True, text=True)
    if done.stdout:
        print(done.stdout, end="")
    if done.returncode != 0 or not results_file.is_file():
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [(str(OmegaConf.select(raw, "model.name")), f"FAILED: {reason}")]
    return [tuple(row) for row in json.loads(results_file.read_text(encoding="utf-8"))]


def _job_main(config_file: str, results_file: str) -> int:

    try:
        cfg = validate(OmegaConf.load(config_file))
        empty = nothing_built(cfg)
        if empty:
            raise PipelineError(empty)
        results = run_chain(cfg)
    except Exception as exc:  # one line, whoever raised it (pipeline.core.errors.fail)
        return fail(exc)
    Path(results_file).write_text(json.dumps(results) + "\n", encoding="utf-8")
    return 0


def write_results(output_dir: str | Path, overrides: list[str], results: list[tuple[str, str]],
                  seconds: float) -> None:
    rows = [{"job": job, "status": status} for job, status in results]
    payload = {"overrides": overrides, "results": rows, "seconds": round(seconds, 1)}
    (Path(output_dir) / RESULTS_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def summary_table(sweep_dir: str | Path) -> list[str]:
    rows: list[tuple[str, str, str, str]] = []
    for path in sorted(Path(sweep_dir).glob(f"*/{RESULTS_FILE}"), key=lambda p: int(p.parent.name)
                       if p.parent.name.isdigit() else 0):
        data: dict[str, Any] = json.loads(path.read_text())
        for row in data["results"]:
            rows.append((path.parent.name, row["job"], row["status"].split(":")[0], f"{data['seconds']:.0f}s"))
    if not rows:
        return ["sweep: no job wrote results"]
    widths = [max(len(r[i]) for r in rows + [("run", "job", "status", "time")]) for i in range(4)]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths))  # noqa: E731
    failed = sum(1 for r in rows if r[2] == "FAILED")
    return [line(("run", "job", "status", "time")), *map(line, rows),
            f"sweep: {len(rows)} jobs, {len(rows) - failed} passed or left out, {failed} failed"]


class SweepSummary(Callback):
    """Prints the table of every job once the multirun is over; exits 1 if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        table = summary_table(config.hydra.sweep.dir)
        print("\n".join(table))
        if not table[-1].endswith(" 0 failed"):
            # SystemExit passes Hydra's run_and_report (which catches Exception): the sweep's exit code is 1.
            raise SystemExit(1)


if __name__ == "__main__":
    raise SystemExit(_job_main(sys.argv[1], sys.argv[2]))

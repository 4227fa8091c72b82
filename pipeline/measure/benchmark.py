"""Latency and throughput of benchmark candidates, each timed in a process of its own (issue 12).

A candidate is an artifact plus the runtime settings it runs with: one of our targets (its recorded
settings, pipeline/backends/runtime.py) or a peer, what a user gets without this pipeline (pipeline/measure/peers.py).
Method:
- every candidate runs in its own worker process (pipeline/measure/timing.py), loaded once, before any timing;
- timing is done in blocks: one block is `warmup` untimed then `calls` timed batch-1 calls of one
  candidate while every other worker waits idle on its pipe; before each block the harness sleeps
  `settle_s` so the previous worker's threads stop spinning;
- blocks alternate across candidates, `blocks` rounds, the order rotated by one each round, so slow
  drift (other load on the machine, frequency changes) hits every candidate alike and none always
  follows the same neighbour;
- per candidate: median, p10 and p90 of all timed calls, the median of each block, and the spread
  of those block medians ((max - min) / median), which says how much the machine drifted; and the
  process CPU time per call (every thread; median over blocks), the work a call costs: on a loaded
  machine wall-clock time grows with the wait for a core while CPU time stays near the unloaded
  latency times the threads kept busy (spinning included);
- throughput the same way: rounds of `throughput_images` images through the throughput runner
  (several streams, requests or sessions in flight, so every core is busy), images per second.
The machine (CPU model, ISA flags, cores, OS) and the load average before and after go with the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import OmegaConf

from pipeline.config import REPO_ROOT, BackendsConfig, BenchmarkConfig
from pipeline.core.errors import PipelineError
from pipeline.core.hardware import cpu_fingerprint

# The target every row's `speedup_vs_onnxruntime_fp32` divides by (the report's speed-up column).
BASELINE_TARGET = "onnxruntime-fp32"

KINDS = ("target", "peer")


@dataclass
class Candidate:
    """What to time: an artifact directory run by `target`'s Runner with the given settings."""

    name: str  # `openvino-int8` for a target, `peer-<what>` for a peer
    kind: str  # target | peer
    target: str  # `<backend>-<precision>`: whose Runner loads the artifact
    artifact_dir: str
    latency_runtime: dict | None = None  # None: the settings recorded in the artifact
    throughput_runtime: dict | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # carried into the result row as is

    @property
    def backend(self) -> str:
        return self.target.split("-", 1)[0]


class _Worker:
    """A running `python -m pipeline.measure.timing` process for one candidate."""

    def __init__(self, candidate: Candidate, config_path: Path, input_hw, cfg: BenchmarkConfig,
                 scratch: Path, throughput_images: int) -> None:
        self.candidate = candidate
        # Absolute: the worker runs in the repository root, the caller perhaps elsewhere (out_dir is relative).
        artifact_dir = str(Path(candidate.artifact_dir).resolve())
        spec = {"backend": candidate.backend, "target": candidate.target, "artifact_dir": artifact_dir,
                "config": str(config_path), "input_hw": list(input_hw), "seed": cfg.seed,
                "latency_runtime": candidate.latency_runtime, "throughput_runtime": candidate.throughput_runtime,
                "throughput_images": throughput_images}
        spec_path = scratch / f"{candidate.name}.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self.stderr = open(scratch / f"{candidate.name}.log", "w+", encoding="utf-8")
        self.process = subprocess.Popen([sys.executable, "-m", "pipeline.measure.timing", str(spec_path)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                        text=True, bufsize=1, cwd=REPO_ROOT)
        self.ready = self._read()
        self.settings = self.ready["settings"]
        self.throughput_settings = self.ready.get("throughput_settings")

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.stderr.seek(0)
            tail = " | ".join(self.stderr.read().strip().splitlines()[-3:])
            raise PipelineError(f"benchmark worker for {self.candidate.name} exited: {tail[-400:] or 'no output'}")
        answer = json.loads(line)
        if "error" in answer:
            raise PipelineError(f"benchmark candidate {self.candidate.name} ({self.candidate.artifact_dir}): "
                                f"{answer['error']}")
        return answer

    def ask(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.stderr.close()


def spread(values: Sequence[float]) -> float:
    """(max - min) / median of per-block figures: 0 when every block agreed."""
    values = np.asarray(values, dtype=np.float64)
    return float((values.max() - values.min()) / np.median(values)) if len(values) else float("nan")


def latency_stats(blocks: Sequence[Sequence[float]], cpu_ms: Sequence[float] = ()) -> dict[str, Any]:
    """Median, p10, p90 of all calls (ms), each block's median and their spread; with `cpu_ms` (one
    CPU-time-per-call figure per block) their median as `cpu_ms_per_call`."""
    pooled = np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks])
    medians = [float(np.median(b)) for b in blocks]
    stats = {"latency_ms_median": float(np.median(pooled)), "latency_ms_p10": float(np.percentile(pooled, 10)),
             "latency_ms_p90": float(np.percentile(pooled, 90)), "latency_ms_block_medians": medians,
             "latency_block_spread": spread(medians), "latency_calls": int(pooled.size)}
    if len(cpu_ms):
        stats["cpu_ms_per_call"] = float(np.median(cpu_ms))
    return stats


def throughput_stats(blocks: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Median images/s over all rounds, each block's median and their spread."""
    pooled = np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks])
    medians = [float(np.median(b)) for b in blocks]
    return {"throughput_img_s": float(np.median(pooled)), "throughput_block_medians": medians,
            "throughput_block_spread": spread(medians)}


def _config_file(backends_cfg: BackendsConfig, scratch: Path) -> Path:
    """The `backends` config as YAML, for the workers: each Runner is given its backend's section of it."""
    path = scratch / "backends.yaml"
    path.write_text(yaml.safe_dump(OmegaConf.to_container(OmegaConf.structured(backends_cfg))), encoding="utf-8")
    return path


def measure(candidates: Sequence[Candidate], backends_cfg: BackendsConfig, input_hw, cfg: BenchmarkConfig,
            progress: Callable[[int], None] | None = None,
            modes: Sequence[str] = ("latency", "throughput")) -> dict[str, dict[str, Any]]:
    """Time every candidate in `modes` as the module docstring says; one result row per candidate name.

    Rows hold `kind`, `target`, `backend`, the latency_stats and throughput_stats keys, the
    settings the worker's Runners report (`runtime_settings`, `throughput_settings`) and the
    candidate's `extra`. Raises PipelineError naming a candidate whose worker fails.
    """
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise PipelineError(f"benchmark candidates are not uniquely named: {names}")
    if cfg.blocks < 1 or cfg.calls < 1:
        raise PipelineError(f"benchmark.blocks={cfg.blocks}, benchmark.calls={cfg.calls}; both must be 1 or more")
    images = cfg.throughput_images if "throughput" in modes else 0
    workers: list[_Worker] = []
    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        config_path = _config_file(backends_cfg, Path(scratch))
        try:
            for candidate in candidates:  # loaded one after the other: no timing runs while another loads
                workers.append(_Worker(candidate, config_path, input_hw, cfg, Path(scratch), images))
            latency: dict[str, list[list[float]]] = {c.name: [] for c in candidates}
            cpu: dict[str, list[float]] = {c.name: [] for c in candidates}
            rates: dict[str, list[list[float]]] = {c.name: [] for c in candidates}
            for block in range(cfg.blocks):
                order = workers[block % len(workers):] + workers[:block % len(workers)]
                for worker in order if "latency" in modes else ():
                    time.sleep(cfg.settle_s)
                    answer = worker.ask({"op": "latency", "warmup": cfg.warmup, "calls": cfg.calls})
                    latency[worker.candidate.name].append(answer["ms"])
                    cpu[worker.candidate.name].append(answer["cpu_ms"])
                if images:
                    for worker in order:
                        time.sleep(cfg.settle_s)
                        answer = worker.ask({"op": "throughput", "warmup": 1, "rounds": cfg.throughput_rounds})
                        rates[worker.candidate.name].append(answer["images_per_s"])
                if progress:
                    progress(block)
        finally:
            for worker in workers:
                worker.close()
    results = {}
    for worker in workers:
        c = worker.candidate
        row: dict[str, Any] = {"name": c.name, "kind": c.kind, "target": c.target, "backend": c.backend,
                               "description": c.description, "runtime_settings": worker.settings, **c.extra}
        if latency[c.name]:
            row.update(latency_stats(latency[c.name], cpu[c.name]))
        if rates[c.name]:
            row.update(throughput_stats(rates[c.name]), throughput_images=images,
                       throughput_settings=worker.throughput_settings)
        results[c.name] = row
    return results


def machine() -> dict[str, Any]:
    """The CPU fingerprint and the load average (1, 5, 15 min) now."""
    return {**cpu_fingerprint(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def method_sentence(cfg: BenchmarkConfig) -> str:
    """How the figures were measured, in one sentence for the report (the settings go beside it as data)."""
    throughput = (f"throughput over {cfg.throughput_images} images in flight, {cfg.throughput_rounds} rounds per block"
                  if cfg.throughput_images else "no throughput measured")
    return (f"batch-1 latency: {cfg.blocks} blocks of {cfg.warmup} untimed and {cfg.calls} timed calls per "
            f"candidate, each candidate in its own process, blocks alternating across candidates with "
            f"{cfg.settle_s:g} s to settle before each; median, p10 and p90 over every timed call; {throughput}; "
            "peers are what a user gets without this pipeline, timed in the same run")

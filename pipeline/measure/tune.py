"""The `tune` step: a small measured search for the runtime settings of one target (issue 12).

For each mode (pipeline/backends/runtime.py) the backend offers a short list of settings, simplest first
(its module's `runtime_grid`, from the thread counts `tune.threads` (0: every usable core) and, with
`tune.static_batch`, the batch fixed to 1 before compilation as well as left dynamic); each is timed with
the benchmark harness (pipeline/measure/benchmark.py: a process per setting, alternating blocks) on the
artifact `build` made, which it only reads. The fastest setting wins, but a later (less plain) one must
beat the best earlier one by `tune.min_gain`, so timing noise does not flip the choice between
near-equal settings from one run to the next. The record, with every measured figure and the machine,
is the stage's output, beside the artifact (pipeline/backends/runtime.py: every Runner of the artifact reads
`chosen`); `release` copies it into the shipped artifact.json and SDK files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import backends
from pipeline.config import BackendsConfig, BenchmarkConfig, TuneConfig
from pipeline.core.hardware import cpu_fingerprint
from pipeline.measure.benchmark import Candidate, machine, measure


def _threads(cfg: TuneConfig) -> list[int]:
    cores = int(cpu_fingerprint()["logical_cores"]) or 1
    return sorted({t if t > 0 else cores for t in cfg.threads})


def runtime_grid(backend: str, mode: str, cfg: TuneConfig) -> list[dict[str, Any]]:
    """The settings to try for `backend` in `mode`, plainest first (its module's grid); [] where nothing is tuned."""
    return backends.runtime_grid(backend, mode, _threads(cfg), [0, 1] if cfg.static_batch else [0])


def choose(rows: list[dict[str, Any]], key: str, higher_is_better: bool, min_gain: float) -> int:
    """Index of the winning row: the best figure, unless an earlier row is within `min_gain` of it."""
    values = [r[key] for r in rows]
    best = max(range(len(rows)), key=lambda i: values[i]) if higher_is_better else \
        min(range(len(rows)), key=lambda i: values[i])
    for i in range(best):
        ratio = values[best] / values[i] if higher_is_better else values[i] / values[best]
        if ratio <= 1.0 + min_gain:
            return i
    return best


def tune(artifact_dir: Path, target_name: str, cfg: TuneConfig, backends_cfg: BackendsConfig,
         input_hw) -> dict[str, Any]:
    """Measure the grid on the artifact `build` made (its files are only read), its Runner given its section of
    `backends_cfg`; {"chosen": {mode: settings}, "measured": {mode: rows}, "machine", "method"}. With
    `tune.enabled` false, or nothing to tune, the record measures nothing and names no machine."""
    target = backends.get_target(target_name)
    latency_grid = runtime_grid(target.backend, "latency", cfg)
    if not cfg.enabled or not latency_grid:
        note = "tune.enabled is false" if not cfg.enabled else f"{target.backend} has no runtime settings to tune"
        # Nothing measured, so nothing of the machine: the record is the same wherever it is written.
        return {"target": target_name, "chosen": {}, "measured": {}, "method": {"note": note}}
    bench = BenchmarkConfig(warmup=cfg.warmup, calls=cfg.calls, blocks=cfg.blocks, settle_s=cfg.settle_s,
                            throughput_images=cfg.throughput_images, throughput_rounds=cfg.throughput_rounds,
                            peers=False, seed=0)
    chosen: dict[str, dict] = {}
    measured: dict[str, list] = {}
    candidates = [Candidate(f"latency-{i}", "target", target_name, str(artifact_dir), runtime, None)
                  for i, runtime in enumerate(latency_grid)]
    rows = list(measure(candidates, backends_cfg, input_hw, bench, modes=("latency",)).values())
    chosen["latency"] = latency_grid[choose(rows, "latency_ms_median", False, cfg.min_gain)]
    measured["latency"] = [_summary(r, runtime) for r, runtime in zip(rows, latency_grid)]
    throughput_grid = runtime_grid(target.backend, "throughput", cfg) if cfg.throughput_images else []
    if throughput_grid:
        candidates = [Candidate(f"throughput-{i}", "target", target_name, str(artifact_dir),
                                chosen.get("latency"), runtime) for i, runtime in enumerate(throughput_grid)]
        rows = list(measure(candidates, backends_cfg, input_hw, bench, modes=("throughput",)).values())
        chosen["throughput"] = throughput_grid[choose(rows, "throughput_img_s", True, cfg.min_gain)]
        measured["throughput"] = [_summary(r, runtime) for r, runtime in zip(rows, throughput_grid)]
    return {"target": target_name, "chosen": chosen, "measured": measured, "machine": machine(),
            "method": {"warmup": cfg.warmup, "calls": cfg.calls, "blocks": cfg.blocks, "min_gain": cfg.min_gain,
                       "throughput_images": cfg.throughput_images}}


def _summary(row: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    keys = ("latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_block_spread",
            "throughput_img_s", "throughput_block_spread")
    return {"runtime": runtime, **{k: row[k] for k in keys if k in row}}

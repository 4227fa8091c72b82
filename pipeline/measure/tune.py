"""The `tune` step: a small measured search for the runtime settings of one target (issue 12).

For each mode (pipeline/backends/runtime.py) the backend offers a short list of settings, simplest first
(`runtime_grid`); each is timed with the benchmark harness (pipeline/measure/benchmark.py: a process per
setting, alternating blocks) on the artifact as `build` makes it, built here into a scratch folder
by the same backend `build` function. The fastest setting wins, but a later (less plain) one must
beat the best earlier one by `tune.min_gain`, so timing noise does not flip the choice between
near-equal settings from one run to the next. The record, with every measured figure and the machine,
is the stage's output, beside the artifact (pipeline/backends/runtime.py: every Runner of the artifact reads
`chosen`); `release` copies it into the shipped artifact.json and SDK files.

Grids (threads: 1 and every usable core; "static": the batch fixed to 1 before compilation):
- onnxruntime latency: {threads} x {dynamic, static}; throughput: one session with every thread on
  the whole batch, or one single-thread static session per core.
- openvino latency: LATENCY hint, one stream, {threads} x {dynamic, static}; throughput: the
  THROUGHPUT hint (OpenVINO picks streams) with static or dynamic batch, one request per image/share.
- ncnn: {threads}, the same for throughput (ncnn has no streams).
- tensorrt: nothing to tune (the engine fixes its tactics at build time).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pipeline import backends
from pipeline.config import BenchmarkConfig, TuneConfig
from pipeline.core.hardware import cpu_fingerprint
from pipeline.measure.benchmark import Candidate, machine, measure


def _threads(cfg: TuneConfig) -> list[int]:
    cores = int(cpu_fingerprint()["logical_cores"]) or 1
    return sorted({t if t > 0 else cores for t in cfg.threads})


def runtime_grid(backend: str, mode: str, cfg: TuneConfig) -> list[dict[str, Any]]:
    """The settings to try for `backend` in `mode`, plainest first; [] where nothing is tuned."""
    threads = _threads(cfg)
    cores = max(threads)
    shapes = [0, 1] if cfg.static_batch else [0]
    if backend == "onnxruntime":
        if mode == "latency":
            return [{"intra_op_num_threads": t, "inter_op_num_threads": 1, "static_batch": s}
                    for s in shapes for t in threads]
        grid = [{"intra_op_num_threads": cores, "inter_op_num_threads": 1, "sessions": 1}]
        if cores > 1:
            grid.append({"intra_op_num_threads": 1, "inter_op_num_threads": 1, "sessions": cores, "static_batch": 1})
        return grid
    if backend == "openvino":
        if mode == "latency":
            return [{"performance_hint": "LATENCY", "num_streams": 1, "inference_num_threads": t, "static_batch": s}
                    for s in shapes for t in threads]
        return [{"performance_hint": "THROUGHPUT", "static_batch": s} for s in shapes]
    if backend == "ncnn":
        return [{"num_threads": t} for t in (threads if mode == "latency" else [cores])]
    return []


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


def tune_artifact(artifact_dir: Path, target_name: str, run_cfg, input_hw, cfg: TuneConfig) -> dict[str, Any]:
    """Measure the grid on a built artifact; {"chosen": {mode: settings}, "measured": {mode: rows}, ...}."""
    target = backends.get_target(target_name)
    bench = BenchmarkConfig(warmup=cfg.warmup, calls=cfg.calls, blocks=cfg.blocks, settle_s=cfg.settle_s,
                            throughput_images=cfg.throughput_images, throughput_rounds=cfg.throughput_rounds,
                            peers=False, seed=0)
    chosen: dict[str, dict] = {}
    measured: dict[str, list] = {}
    latency_grid = runtime_grid(target.backend, "latency", cfg)
    if latency_grid:
        candidates = [Candidate(f"latency-{i}", "target", target_name, str(artifact_dir), runtime, None)
                      for i, runtime in enumerate(latency_grid)]
        rows = list(measure(candidates, run_cfg, input_hw, bench, modes=("latency",)).values())
        chosen["latency"] = latency_grid[choose(rows, "latency_ms_median", False, cfg.min_gain)]
        measured["latency"] = [_summary(r, runtime) for r, runtime in zip(rows, latency_grid)]
    throughput_grid = runtime_grid(target.backend, "throughput", cfg) if cfg.throughput_images else []
    if throughput_grid:
        candidates = [Candidate(f"throughput-{i}", "target", target_name, str(artifact_dir),
                                chosen.get("latency"), runtime) for i, runtime in enumerate(throughput_grid)]
        rows = list(measure(candidates, run_cfg, input_hw, bench, modes=("throughput",)).values())
        chosen["throughput"] = throughput_grid[choose(rows, "throughput_img_s", True, cfg.min_gain)]
        measured["throughput"] = [_summary(r, runtime) for r, runtime in zip(rows, throughput_grid)]
    return {"target": target_name, "chosen": chosen, "measured": measured, "machine": machine(),
            "method": {"warmup": cfg.warmup, "calls": cfg.calls, "blocks": cfg.blocks, "min_gain": cfg.min_gain,
                       "throughput_images": cfg.throughput_images}}


def _summary(row: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    keys = ("latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_block_spread",
            "throughput_img_s", "throughput_block_spread")
    return {"runtime": runtime, **{k: row[k] for k in keys if k in row}}


def tune(onnx_path: Path, target_name: str, run_cfg, input_hw, calibration=None) -> dict[str, Any]:
    """Build the target into a scratch folder with its backend's `build` and tune it there."""
    target = backends.get_target(target_name)
    if not run_cfg.tune.enabled or not runtime_grid(target.backend, "latency", run_cfg.tune):
        note = ("tune.enabled is false" if not run_cfg.tune.enabled
                else f"{target.backend} has no runtime settings to tune")
        # Nothing measured, so nothing of the machine: the record is the same wherever it is written.
        return {"target": target_name, "chosen": {}, "measured": {}, "method": {"note": note}}
    module = backends.get(target.backend)
    with tempfile.TemporaryDirectory(prefix=f"tune-{target_name}-") as scratch:
        module.build(onnx_path, target, run_cfg, Path(scratch), calibration=calibration)
        return tune_artifact(Path(scratch), target_name, run_cfg, input_hw, run_cfg.tune)

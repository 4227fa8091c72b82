"""Latency and throughput of every artifact of a variant, measured side by side in one process.

Targets are timed round-robin on the same inputs, so a noisy neighbour slows all of them alike and
the ratios stay meaningful. Each turn is one untimed call and then `TURN` timed calls: runtimes keep
their own thread pools, and a pool that just yielded the cores to another runtime's spinning
threads is slow for a call or two, which single interleaved calls would charge to every target. Reported per target:
latency median and p90 at batch 1 (ms), and throughput at `throughput_batch` (images/s, from the
median batch latency), with the runner's settings (threads, precision hints).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np

from pipeline.config import BenchmarkConfig

TURN = 5  # timed consecutive calls per target and round


def _time_round_robin(calls: Mapping[str, Callable[[], object]], warmup: int, iterations: int,
                      progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    rounds = max(1, iterations // TURN)
    for i in range(rounds):
        for name, call in calls.items():
            call()  # one untimed call: the runtime's thread pool wakes up after the previous runtime's turn
            for _ in range(TURN):
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1000.0)
        if progress:
            progress(i)
    return {name: np.array(values) for name, values in times.items()}


def benchmark(runners: Mapping[str, Callable], input_hw: tuple[int, int], cfg: BenchmarkConfig,
              progress: Callable[[int], None] | None = None) -> dict[str, dict[str, object]]:
    rng = np.random.default_rng(cfg.seed)
    single = {"input": rng.standard_normal((1, 3, *input_hw)).astype(np.float32)}
    batch = {"input": rng.standard_normal((cfg.throughput_batch, 3, *input_hw)).astype(np.float32)}
    latency = _time_round_robin({n: (lambda r=r: r(single)) for n, r in runners.items()},
                                cfg.warmup, cfg.iterations, progress)
    batched = _time_round_robin({n: (lambda r=r: r(batch)) for n, r in runners.items()},
                                max(1, cfg.warmup // 2), max(3, cfg.iterations // 4))
    results = {}
    for name in runners:
        results[name] = {
            "latency_ms_median": float(np.median(latency[name])),
            "latency_ms_p90": float(np.percentile(latency[name], 90)),
            "throughput_batch": cfg.throughput_batch,
            "throughput_img_s": float(cfg.throughput_batch / (np.median(batched[name]) / 1000.0)),
            "iterations": cfg.iterations,
        }
    baseline = results.get("onnxruntime-fp32", {}).get("latency_ms_median")
    for result in results.values():
        result["speedup_vs_onnxruntime_fp32"] = float(baseline / result["latency_ms_median"]) if baseline else None
    return results

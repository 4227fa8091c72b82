"""One benchmark candidate in a process of its own: the worker side of the benchmark harness.

`python -m pipeline.measure.timing SPEC.json` loads one artifact with its backend's Runner (latency and,
if asked, throughput mode), prints one JSON line `{"ready": ..., "settings": ...}` and then answers
commands read from stdin, one JSON object per line, each with one JSON line:

    {"op": "latency", "warmup": W, "calls": N}     -> {"ms": [N wall-clock times of batch-1 calls],
                                                        "cpu_ms": process CPU time per call}
    {"op": "throughput", "warmup": W, "rounds": R}  -> {"images_per_s": [R rates over `images` images]}
    {"op": "exit"}

A process per candidate keeps runtimes apart: thread pools, allocators and OpenVINO's pinned
streams never share a process with another runtime, which in a single process slowed some
targets by up to 1.8x (issue 12). Between commands the worker blocks on stdin, so its threads go
idle; the harness lets them settle before the next candidate's block (pipeline/measure/benchmark.py).
Anything the runtimes print goes to stderr; stdout carries only the protocol.

SPEC keys: `backend`, `target` (`<backend>-<precision>`), `artifact_dir`, `config` (the `backends`
section of the config, YAML: the Runner is given its backend's part), `input_hw`, `seed`,
`latency_runtime` / `throughput_runtime` (settings, or null for the artifact's recorded ones),
`throughput_images` (0: no throughput runner).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from pipeline import backends
from pipeline.config import BackendsConfig, to_schema


def load_runners(spec: dict):
    """(latency runner, throughput runner or None) for the spec."""

    backends_cfg = to_schema(BackendsConfig, yaml.safe_load(Path(spec["config"]).read_text(encoding="utf-8")))
    target = backends.Target(spec["backend"], spec["target"].split("-", 1)[1])
    latency = backends.open_runner(spec["artifact_dir"], target, backends_cfg, spec.get("latency_runtime"), "latency")
    throughput = None
    if spec.get("throughput_images"):
        throughput = backends.open_runner(spec["artifact_dir"], target, backends_cfg, spec.get("throughput_runtime"),
                                          "throughput")
    return latency, throughput


def time_calls(call, feeds: dict, warmup: int, calls: int) -> tuple[list[float], float]:
    """Wall-clock milliseconds of `calls` consecutive calls after `warmup` untimed ones, and the
    process CPU time (every thread, user + system) per call in ms over the same calls."""
    for _ in range(warmup):
        call(feeds)
    times = []
    cpu_start = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        call(feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    return times, (time.process_time() - cpu_start) * 1000.0 / calls


def time_throughput(call, feeds: dict, warmup: int, rounds: int) -> list[float]:
    """Images per second of `rounds` calls on the whole batch after `warmup` untimed ones."""
    images = len(next(iter(feeds.values())))
    for _ in range(warmup):
        call(feeds)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        call(feeds)
        rates.append(images / (time.perf_counter() - start))
    return rates


def inputs(input_hw, count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((count, 3, *input_hw)).astype(np.float32)}


def main(argv: list[str]) -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the runtimes' own prints go to stderr
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        latency, throughput = load_runners(spec)
    except Exception as exc:  # reported to the harness, which names the candidate and fails
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        protocol.write(json.dumps({"error": f"{type(exc).__name__}: {reason[:400]}"}) + "\n")
        return 1
    single = inputs(spec["input_hw"], 1, spec.get("seed", 0))
    many = inputs(spec["input_hw"], spec["throughput_images"], spec.get("seed", 0) + 1) if throughput else None
    protocol.write(json.dumps({"ready": True, "settings": _plain(latency.settings),
                               "throughput_settings": _plain(throughput.settings) if throughput else None}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "exit":
            break
        if command["op"] == "latency":
            times, cpu_ms = time_calls(latency, single, command["warmup"], command["calls"])
            answer = {"ms": times, "cpu_ms": cpu_ms}
        elif command["op"] == "throughput" and throughput is not None:
            answer = {"images_per_s": time_throughput(throughput, many, command["warmup"], command["rounds"])}
        else:
            answer = {"error": f"unknown or unavailable command {command['op']!r}"}
        protocol.write(json.dumps(answer) + "\n")
    return 0


def _plain(value):
    """Settings as JSON-able values (numpy and OpenVINO scalars become str/int/float)."""
    return json.loads(json.dumps(value, default=str))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

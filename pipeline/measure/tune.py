"""The `tune` step: a small measured search for the runtime settings of one target (issue 12).

For each mode (pipeline/backends/runtime.py) the backend offers a short list of settings, simplest first
(its module's `runtime_grid`, from the thread counts `tune.threads` (0: every usable core) and, with
`tune.static_batch`, the batch fixed to 1 before compilation as well as left dynamic); each is timed, after
the runtime's defaults (the backend's `default_runtime`, what an artifact without a record runs), with the
benchmark harness (pipeline/measure/benchmark.py: a process per setting, alternating blocks) on the artifact
`build` made, which it only reads. A setting replaces the defaults only when it wins by more than the noise
(`choose`); on a busy machine (others' CPU use, or block medians far apart: `busy_reason`) the defaults are
kept whatever was measured, and the record says why in `kept_defaults` (issue 20: tune on a machine at load 2.3
on 2 cores chose 1 thread, 9.8 ms at rest against 5.5 ms for the defaults). The record, with every measured
figure and the machine, is the stage's output, beside the artifact (pipeline/backends/runtime.py: every Runner of
the artifact reads `chosen`); `release` copies it into the shipped artifact.json and SDK files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pipeline import backends
from pipeline.config import BackendsConfig, BenchmarkConfig, TuneConfig
from pipeline.core.hardware import cpu_fingerprint
from pipeline.measure.benchmark import Candidate, machine, measure


def _cores() -> int:
    return int(cpu_fingerprint()["logical_cores"]) or 1


def _threads(cfg: TuneConfig) -> list[int]:
    cores = _cores()
    return sorted({t if t > 0 else cores for t in cfg.threads})


def runtime_grid(backend: str, mode: str, cfg: TuneConfig) -> list[dict[str, Any]]:
    """The settings to try for `backend` in `mode`, plainest first (its module's grid); [] where nothing is tuned."""
    return backends.runtime_grid(backend, mode, _threads(cfg), [0, 1] if cfg.static_batch else [0])


def noise(rows: list[dict[str, Any]], spread_key: str, min_gain: float) -> float:
    """The relative difference timing noise can make between `rows`: `min_gain`, or the larger spread of their
    block medians (`spread_key`, (max - min) / median) where that is more."""
    return max([min_gain] + [float(r.get(spread_key) or 0.0) for r in rows])


def gain(challenger: dict[str, Any], default: dict[str, Any], key: str, higher_is_better: bool) -> float:
    """How much better `challenger`'s figure is than `default`'s, relative (0.1: 10% faster or more images/s)."""
    ratio = challenger[key] / default[key] if higher_is_better else default[key] / challenger[key]
    return ratio - 1.0


def choose(rows: list[dict[str, Any]], key: str, higher_is_better: bool, min_gain: float,
           spread_key: str = "") -> int:
    """Index of the winning row; rows[0] is the runtime's defaults. The best figure wins, unless an earlier row is
    within `min_gain` of it; and it replaces the defaults only when it beats them by more than `noise` (the larger
    block spread of the two, at least `min_gain`).

    Why the spread: it is how far one setting's own block medians moved during this run ((max - min) / median),
    so a difference smaller than it can be made by the machine's drift alone; only a gain beyond every block's
    wander is a property of the setting. With one block the spread is 0 and `min_gain` stands alone."""
    values = [r[key] for r in rows]
    best = max(range(len(rows)), key=lambda i: values[i]) if higher_is_better else \
        min(range(len(rows)), key=lambda i: values[i])
    for i in range(best):
        if gain(rows[best], rows[i], key, higher_is_better) <= min_gain:
            best = i
            break
    if best and gain(rows[best], rows[0], key, higher_is_better) <= noise([rows[best], rows[0]], spread_key,
                                                                           min_gain):
        return 0
    return best


def others_load(seconds: float, cores: int) -> float:
    """The machine's CPU use over the next `seconds` (this process sleeps), in cores per usable core, from
    /proc/stat's busy time (steal included: a VM's host taking the core); where /proc/stat is absent or `seconds`
    is 0, the 1-minute load average over `cores`. No error is raised."""
    def busy_total() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy

    if seconds <= 0 or not Path("/proc/stat").is_file():
        return os.getloadavg()[0] / cores
    busy0, total0 = busy_total()
    time.sleep(seconds)
    busy1, total1 = busy_total()
    return (busy1 - busy0) / max(total1 - total0, 1)


def busy_reason(load: dict[str, Any], measured: dict[str, list], cfg: TuneConfig) -> str:
    """'' when the machine was quiet enough to trust the timing, else the one line why the defaults are kept:
    others' CPU use before or after the timing above `tune.max_load_per_core`, or a setting's block medians
    spread beyond `tune.max_block_spread` (config.py says why those limits)."""
    worst_load = max(load["before_per_core"], load["after_per_core"])
    if worst_load > cfg.max_load_per_core:
        return (f"kept the defaults: the machine was busy ({worst_load:.2f} of each of {load['cores']} cores used by "
                f"others, load average {load['load_average_before'][0]:.2f}) > tune.max_load_per_core "
                f"{cfg.max_load_per_core:g}; rerun tune on a quiet machine")
    spreads = [(r.get(k) or 0.0, r["runtime"]) for rows in measured.values() for r in rows
               for k in ("latency_block_spread", "throughput_block_spread")]
    widest, runtime = max(spreads, key=lambda s: s[0], default=(0.0, None))
    if widest > cfg.max_block_spread:
        return (f"kept the defaults: block medians of {runtime} spread {100 * widest:.0f}% > tune.max_block_spread "
                f"{100 * cfg.max_block_spread:.0f}% (the machine changed under the timing); rerun tune on a quiet "
                "machine")
    return ""


def slower_than_defaults(tuned: dict[str, Any], default: dict[str, Any], min_gain: float) -> str:
    """'' unless the benchmark row `tuned` (an artifact with its tuned latency settings) is slower than `default`
    (the same artifact with the runtime's defaults, timed in the same run) by more than `noise` and in every
    block (its fastest block median above the defaults' slowest); then one line naming both medians (ms), the
    settings and the spread. With one block per row the noise is not measured and nothing is judged ('')."""
    tuned_blocks, default_blocks = tuned["latency_ms_block_medians"], default["latency_ms_block_medians"]
    if min(len(tuned_blocks), len(default_blocks)) < 2:
        return ""
    margin = noise([tuned, default], "latency_block_spread", min_gain)
    if gain(default, tuned, "latency_ms_median", False) <= margin or min(tuned_blocks) <= max(default_blocks):
        return ""
    return (f"{tuned['name']}: tuned setting {tuned['runtime_settings'].get('runtime', tuned['runtime_settings'])} "
            f"{tuned['latency_ms_median']:.2f} ms is slower than {tuned['backend']}'s defaults "
            f"{default['latency_ms_median']:.2f} ms beyond the noise (spread {100 * margin:.0f}%)")


def _load(cores: int, probe_s: float) -> dict[str, Any]:
    return {"cores": cores, "probe_s": probe_s, "load_average_before": [round(x, 2) for x in os.getloadavg()],
            "before_per_core": round(others_load(probe_s, cores), 3)}


def tune(artifact_dir: Path, target_name: str, cfg: TuneConfig, backends_cfg: BackendsConfig,
         input_hw) -> dict[str, Any]:
    """Measure the runtime's defaults and the grid on the artifact `build` made (its files are only read), its
    Runner given its section of `backends_cfg`; {"chosen": {mode: settings}, "measured": {mode: rows, defaults
    first}, "kept_defaults": '' or why, "load", "machine", "method"}. With `tune.enabled` false, or nothing to
    tune, the record measures nothing and names no machine. Raises PipelineError naming a setting whose worker
    fails."""
    target = backends.get_target(target_name)
    latency_grid = runtime_grid(target.backend, "latency", cfg)
    if not cfg.enabled or not latency_grid:
        note = "tune.enabled is false" if not cfg.enabled else f"{target.backend} has no runtime settings to tune"
        # Nothing measured, so nothing of the machine: the record is the same wherever it is written.
        return {"target": target_name, "chosen": {}, "measured": {}, "method": {"note": note}}
    bench = BenchmarkConfig(warmup=cfg.warmup, calls=cfg.calls, blocks=cfg.blocks, settle_s=cfg.settle_s,
                            throughput_images=cfg.throughput_images, throughput_rounds=cfg.throughput_rounds,
                            peers=False, seed=0)
    defaults = {mode: backends.default_runtime(target.backend, backends_cfg, mode)
                for mode in ("latency", "throughput")}
    load = _load(_cores(), cfg.load_probe_s)
    chosen: dict[str, dict] = {}
    measured: dict[str, list] = {}
    grid = _with_defaults(defaults["latency"], latency_grid)
    candidates = [Candidate(f"latency-{i}", "target", target_name, str(artifact_dir), runtime, None)
                  for i, runtime in enumerate(grid)]
    rows = list(measure(candidates, backends_cfg, input_hw, bench, modes=("latency",)).values())
    chosen["latency"] = grid[choose(rows, "latency_ms_median", False, cfg.min_gain, "latency_block_spread")]
    measured["latency"] = [_summary(r, runtime) for r, runtime in zip(rows, grid)]
    throughput_grid = runtime_grid(target.backend, "throughput", cfg) if cfg.throughput_images else []
    if throughput_grid:
        grid = _with_defaults(defaults["throughput"], throughput_grid)
        candidates = [Candidate(f"throughput-{i}", "target", target_name, str(artifact_dir),
                                chosen.get("latency"), runtime) for i, runtime in enumerate(grid)]
        rows = list(measure(candidates, backends_cfg, input_hw, bench, modes=("throughput",)).values())
        chosen["throughput"] = grid[choose(rows, "throughput_img_s", True, cfg.min_gain, "throughput_block_spread")]
        measured["throughput"] = [_summary(r, runtime) for r, runtime in zip(rows, grid)]
    load.update(after_per_core=round(others_load(cfg.load_probe_s, load["cores"]), 3),
                load_average_after=[round(x, 2) for x in os.getloadavg()])
    kept = busy_reason(load, measured, cfg)
    if kept:
        chosen = {mode: defaults[mode] for mode in chosen}
    return {"target": target_name, "chosen": chosen, "measured": measured, "kept_defaults": kept, "load": load,
            "machine": machine(),
            "method": {"warmup": cfg.warmup, "calls": cfg.calls, "blocks": cfg.blocks, "min_gain": cfg.min_gain,
                       "throughput_images": cfg.throughput_images, "max_load_per_core": cfg.max_load_per_core,
                       "max_block_spread": cfg.max_block_spread}}


def _with_defaults(default: dict[str, Any], grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runtime's defaults first, then the grid without an entry equal to them."""
    return [default] + [g for g in grid if g != default]


def _summary(row: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    keys = ("latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_block_spread",
            "throughput_img_s", "throughput_block_spread")
    return {"runtime": runtime, **{k: row[k] for k in keys if k in row}}

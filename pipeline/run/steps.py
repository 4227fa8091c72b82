"""The pipeline's steps, one function per DVC stage, shared by `stages/*.py` and `python -m pipeline`.

Each step reads its inputs from the paths in `cfg.plan`, writes its outputs atomically, and
raises a PipelineError subclass (one line, with the fix) on failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import backends
from pipeline.backends.interface import SelfCalibration
from pipeline.backends.runtime import recorded_runtime
from pipeline.check.reference import reference_runs, sha256_of_source, supplied_onnx
from pipeline.check.verify import (
    Golden,
    check_execution_precision,
    recorded_normalizations,
    summary_lines,
    verify_artifact,
)
from pipeline.config import RunConfig
from pipeline.core.errors import ConfigError, VerificationError
from pipeline.core.io import atomic_path, read_npz, remove_outputs, write_json, write_npz
from pipeline.core.onnx_io import INPUT_NAME, fixed_batch, get_metadata, load_onnx, save_onnx, set_metadata
from pipeline.core.progress import progress_bar
from pipeline.core.versions import tool_versions
from pipeline.graph.export import export_onnx, onnx_metadata
from pipeline.graph.quantize import quantize_qdq
from pipeline.graph.simplify import simplify_onnx
from pipeline.inputs.calibration import calibration_inputs
from pipeline.inputs.golden import PHOTO_BOXES, golden_crops, random_inputs
from pipeline.measure.benchmark import Candidate, machine, measure, method_sentence
from pipeline.measure.peers import build_peers
from pipeline.measure.tune import tune as run_tune
from pipeline.model.preprocess import normalize
from pipeline.package.dropin import write_dropin
from pipeline.planning.plan import model_config, spec_of
from pipeline.planning.plan import variant_entry as _variant_entry
from pipeline.report import build_report, report_dir, summary_line
from pipeline.sources.checkpoint import sha256_file
from pipeline.sources.weights import WeightsInfo, build_reference_model

ARTIFACT_META = "artifact.json"


def _job_entry(cfg: RunConfig, job: str) -> dict:
    if job not in cfg.plan["jobs"]:
        raise ConfigError(f"job {job!r} is not in the plan; choose one of {', '.join(cfg.plan['jobs'])} "
                          "or change model/targets")
    return cfg.plan["jobs"][job]


def _require(path: str | Path, stage: str, name: str) -> Path:
    """An upstream output that must exist; says which stage makes it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; run the `{stage}@{name}` stage first "
                          f"(dvc repro {stage}@{name}, or python -m pipeline for the whole chain)")
    return path


def reference(cfg: RunConfig, variant_name: str) -> Path:
    """Golden inputs and the reference outputs: PyTorch in float32 and float64, or the supplied ONNX in
    plain onnxruntime (float32 only)."""
    paths = _variant_entry(cfg, variant_name)
    spec = spec_of(cfg, variant_name)
    crops = golden_crops(spec, cfg.verify.num_figures)
    randoms = random_inputs(spec.input_hw, cfg.verify.num_random, cfg.verify.seed)
    inputs = np.concatenate([normalize(crops, spec.preprocess), randoms])  # as the reference model expects
    float32, float64 = reference_runs(cfg, variant_name, inputs)
    golden = Golden(inputs, crops, spec.preprocess, float32, float64, len(PHOTO_BOXES), spec.simcc_split_ratio)
    write_npz(paths["reference"], golden.arrays())
    return Path(paths["reference"])


def export(cfg: RunConfig, variant_name: str) -> Path:
    """PyTorch -> ONNX, or the supplied ONNX brought to the contract and labelled with its description."""
    paths = _variant_entry(cfg, variant_name)
    spec = spec_of(cfg, variant_name)
    model_cfg = model_config(cfg, variant_name)
    with atomic_path(paths["export"]) as tmp:
        if paths["from_onnx"]:
            proto = supplied_onnx(model_cfg, spec)
            info = WeightsInfo("onnx", "onnx", model_cfg.checkpoint, sha256_of_source(model_cfg))
            metadata = {**get_metadata(proto), **onnx_metadata(spec, info, fixed_batch(proto) is None, ("onnx",))}
            set_metadata(proto, metadata)
            save_onnx(proto, tmp)
        else:
            model, info = build_reference_model(model_cfg, spec)
            export_onnx(model, spec, info, cfg.export, tmp)
    return Path(paths["export"])


def simplify(cfg: RunConfig, variant_name: str) -> Path:
    """Simplify the export and accept the result only if it computes the same outputs."""
    paths = _variant_entry(cfg, variant_name)
    spec = spec_of(cfg, variant_name)
    inputs = read_npz(_require(paths["reference"], "reference", variant_name))["input"]
    with atomic_path(paths["simplified"], is_dir=True) as tmp:
        source = load_onnx(_require(paths["export"], "export", variant_name))
        report = simplify_onnx(source, spec, cfg.simplify, inputs, tmp / "model.onnx")
        # max|Δ| is measured with this CPU's kernels: printed, kept out of the cached artifact (issue 13)
        print(f"simplify {variant_name}: max|Δ| {report.pop('max_abs_diff'):.3g} <= atol {report['atol']:g}")
        write_json(tmp / "simplify.json", report)
    return Path(paths["simplified_onnx"])


def calibration(cfg: RunConfig, variant_name: str) -> Path:
    """INT8 calibration inputs: person crops, preprocessed exactly like inference inputs."""
    if variant_name not in cfg.plan["calibrations"]:
        raise ConfigError(f"variant {variant_name!r} has no INT8 target in the plan; nothing to calibrate")
    paths = cfg.plan["calibrations"][variant_name]
    inputs = calibration_inputs(cfg.calibration, spec_of(cfg, variant_name))
    write_npz(paths["calibration"], {"input": inputs})
    print(f"calibration {variant_name}: {len(inputs)} samples from {cfg.calibration.source}")
    return Path(paths["calibration"])


def quantize(cfg: RunConfig, variant_name: str) -> Path:
    """The shared INT8 Q/DQ ONNX (onnxruntime-int8, tensorrt-int8) from the simplified model."""
    if variant_name not in cfg.plan["quantizations"]:
        raise ConfigError(f"variant {variant_name!r} has no Q/DQ INT8 target in the plan; nothing to quantize")
    paths = cfg.plan["quantizations"][variant_name]
    inputs = read_npz(_require(paths["calibration"], "calibration", variant_name))["input"]
    _require(paths["simplified_onnx"], "simplify", variant_name)
    with atomic_path(paths["quantized"], is_dir=True) as tmp:
        report = quantize_qdq(Path(paths["simplified_onnx"]), inputs, cfg.quantize, tmp / "model.onnx")
        write_json(tmp / "quantize.json", report)
    return Path(paths["quantized_onnx"])


def _job_sources(cfg: RunConfig, entry: dict) -> tuple[Path, np.ndarray | None]:
    """The job's ONNX (simplified or Q/DQ) and, for targets that calibrate themselves, the calibration set."""
    upstream = "quantize" if entry["onnx"].endswith("quantized/model.onnx") else "simplify"
    source = _require(entry["onnx"], upstream, entry["variant"])
    calibration_set = (read_npz(_require(entry["calibration"], "calibration", entry["variant"]))["input"]
                       if entry["calibration"] else None)
    return source, calibration_set


def tune(cfg: RunConfig, job: str) -> dict:
    """Measure the runtime settings of the artifact `build` made (pipeline/measure/tune.py) and write the record
    that verify, the benchmark, infer and release read (pipeline/backends/runtime.py: recorded_runtime)."""

    entry = _job_entry(cfg, job)
    artifact = _require(entry["artifact"], "build", job)
    record = run_tune(artifact, entry["target"], cfg.tune, cfg.backends, spec_of(cfg, entry["variant"]).input_hw)
    record["job"] = job
    write_json(entry["tune"], record)
    for mode, settings in record["chosen"].items():
        print(f"tune {job} {mode}: {settings}")
    return record


def build(cfg: RunConfig, job: str) -> Path:
    """Build one target's artifact from its ONNX (simplified or Q/DQ), with its metadata. The runtime
    settings `tune` measures stay beside it (pipeline/backends/runtime.py says why); `release` records them."""
    entry = _job_entry(cfg, job)
    target = backends.get_target(entry["target"])
    module = backends.get(target.backend)
    source, calibration_set = _job_sources(cfg, entry)
    # A target that calibrates itself gets the set with the quantize and verify values it needs, nothing more.
    calibration = None if calibration_set is None else SelfCalibration(
        calibration_set, tuple(cfg.quantize.keep_float), cfg.quantize.openvino_max_drift_px, cfg.verify.min_peak_margin)
    runtime: dict = {}  # the backend's defaults until released with the tuned settings
    with atomic_path(entry["artifact"], is_dir=True) as tmp:
        module.build(source, target, backends.settings_of(cfg.backends, target.backend), tmp, calibration)
        write_json(tmp / ARTIFACT_META, {
            "job": job, "variant": entry["variant"], "target": target.name, "backend": target.backend,
            "precision": target.precision, "source_onnx_sha256": sha256_file(source),
            "onnx_metadata": get_metadata(load_onnx(source)),
            "tool_versions": tool_versions(*getattr(module, "TOOLS", (target.backend,)), "onnx"),
            "runtime": runtime,
        })
        write_dropin(tmp, target, spec_of(cfg, entry["variant"]), get_metadata(load_onnx(source)), runtime=runtime)
    return Path(entry["artifact"])


def verify(cfg: RunConfig, job: str) -> dict:
    """Run the artifact on the golden inputs, write the metrics, raise if any tolerance is breached."""
    entry = _job_entry(cfg, job)
    remove_outputs(entry["metrics"])
    target = backends.get_target(entry["target"])
    tolerance = cfg.verify.tolerances[target.precision]
    golden = Golden.from_arrays(read_npz(_require(entry["reference"], "reference", entry["variant"])),
                                entry["reference"])
    artifact = _require(entry["artifact"], "build", job)
    runner = backends.open_runner(artifact, target, cfg.backends)  # the artifact's recorded latency settings
    metrics = verify_artifact(lambda inputs: runner({INPUT_NAME: inputs}), golden, tolerance,
                              cfg.verify.min_peak_margin, recorded_normalizations(artifact))
    metrics["breaches"] += check_execution_precision(target.precision, runner.settings["execution_precision"])
    if recorded_runtime(artifact, "throughput"):
        # The throughput settings run the same files with other threads and streams: they must pass too.
        streams = backends.open_runner(artifact, target, cfg.backends, mode="throughput")
        throughput = verify_artifact(lambda inputs: streams({INPUT_NAME: inputs}), golden, tolerance,
                                     cfg.verify.min_peak_margin, recorded_normalizations(artifact))
        throughput["breaches"] += check_execution_precision(target.precision, streams.settings["execution_precision"])
        metrics["breaches"] += [f"throughput settings: {b}" for b in throughput["breaches"]]
        metrics["throughput_runtime_settings"] = streams.settings
    metrics["passed"] = not metrics["breaches"]
    metrics.update({"job": job, "target": target.name, "precision": target.precision,
                    "tolerance": vars(tolerance), "runtime_settings": runner.settings,
                    "num_inputs": int(golden.inputs.shape[0])})
    write_json(entry["metrics"], metrics)
    for line in summary_lines(job, metrics):
        print(line)
    if not metrics["passed"]:
        breaches = metrics["breaches"]
        first = next((b for b in breaches if b.startswith("executes")), breaches[0])  # the cause, if measured
        more = f" (+{len(breaches) - 1} more in {entry['metrics']})" if len(breaches) > 1 else ""
        raise VerificationError(f"{job} failed verification: {first}{more}")
    return metrics


def _verification(metrics: dict) -> dict:
    """The figures of a verify metrics file the benchmark rows carry (None where not verified)."""
    if not metrics:
        return {"status": "not verified", "passed": False, "mean_drift_px": None, "max_drift_px": None,
                "min_cosine": None, "max_abs_error": None}
    outputs = metrics.get("outputs", {}).values()
    confident = metrics.get("keypoints", {}).get("confident", {})
    return {"status": "passed" if metrics.get("passed") else "failed", "passed": bool(metrics.get("passed")),
            "mean_drift_px": confident.get("mean_drift_px"), "max_drift_px": confident.get("max_drift_px"),
            "min_cosine": min((o["cosine"] for o in outputs), default=None),
            "max_abs_error": max((o["needs_atol"] for o in outputs), default=None)}


def _peer_verification(cfg: RunConfig, candidate, golden: Golden) -> dict:
    """A peer's outputs on the golden inputs against the reference, at its precision's tolerance, the
    inputs preprocessed as the reference expects. Informational: peers are not ours to gate, but their
    drift belongs on the same plot."""
    target = backends.get_target(candidate.target)
    runner = backends.open_runner(candidate.artifact_dir, target, cfg.backends, candidate.latency_runtime)
    metrics = verify_artifact(lambda inputs: runner({INPUT_NAME: inputs}), golden,
                              cfg.verify.tolerances[target.precision], cfg.verify.min_peak_margin, {})
    return _verification(metrics)


BASELINE_TARGET = "onnxruntime-fp32"  # the benchmark's `speedup_vs_onnxruntime_fp32` divides its latency


def _executed_precision(row: dict) -> str:
    """A target's precision; for a peer, the precisions its runtime reports executing, most operations
    first (e.g. `bf16` for OpenVINO's default on a CPU with native bf16)."""
    if row["kind"] == "target":
        return backends.get_target(row["target"]).precision
    executed = (row.get("runtime_settings") or {}).get("execution_precision") or {}
    names = sorted(executed, key=lambda name: -executed[name])
    return "/".join(names) or backends.get_target(row["target"]).precision


def headline(rows: dict[str, dict]) -> dict:
    """Our fastest verified target against the best peer: latency ratio (lower is better)."""
    ours = [r for r in rows.values() if r["kind"] == "target" and r["verification"]["passed"]
            and r.get("latency_ms_median") is not None]
    peers = [r for r in rows.values() if r["kind"] == "peer" and r.get("latency_ms_median") is not None]
    best = min(ours, key=lambda r: r["latency_ms_median"]) if ours else None
    peer = min(peers, key=lambda r: r["latency_ms_median"]) if peers else None
    ratio = best["latency_ms_median"] / peer["latency_ms_median"] if best and peer else None
    return {"recommended": best["name"] if best else None,
            "recommended_latency_ms": best["latency_ms_median"] if best else None,
            "best_peer": peer["name"] if peer else None, "best_peer_latency_ms": peer["latency_ms_median"] if peer else None,
            "latency_ratio_vs_best_peer": ratio}


def benchmark(cfg: RunConfig, variant_name: str) -> dict:
    """Time every built artifact of the variant and the peers (pipeline/measure/peers.py), each in its own process;
    write the DVC metrics file: one row per candidate, the machine, the method and the headline."""
    import tempfile


    paths = _variant_entry(cfg, variant_name)
    spec = spec_of(cfg, variant_name)
    jobs = {cfg.plan["jobs"][j]["target"]: cfg.plan["jobs"][j] for j in paths["jobs"]}
    candidates = []
    for target_name, entry in jobs.items():
        _require(entry["artifact"], "build", f"{variant_name}.{target_name}")
        verification = _verification(read_metrics(entry["metrics"]))
        candidates.append(Candidate(target_name, "target", target_name, entry["artifact"], description="our artifact, "
                                    "its recorded runtime settings", extra={"verification": verification}))
    before = machine()
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        if cfg.benchmark.peers:
            golden = Golden.from_arrays(read_npz(_require(paths["reference"], "reference", variant_name)),
                                        paths["reference"])
            calibration = Path(paths["calibration"])
            used = {backends.get_target(t).backend for t in jobs}
            peers = build_peers(_require(paths["export"], "export", variant_name),
                                read_npz(calibration)["input"] if calibration.is_file() else None, Path(scratch),
                                used, cfg.benchmark.peer_static_shape)
            for peer in peers:
                peer.extra["verification"] = _peer_verification(cfg, peer, golden)
            candidates += peers
        with progress_bar(cfg.benchmark.blocks, f"benchmark {variant_name}") as advance:
            rows = measure(candidates, cfg.backends, spec.input_hw, cfg.benchmark, advance)
    top = headline(rows)
    baseline = rows.get(BASELINE_TARGET)
    for row in rows.values():
        row["mean_drift_px"] = row["verification"]["mean_drift_px"]
        row["precision"] = _executed_precision(row)
        if "throughput_images" in row:
            row["throughput_batch"] = row["throughput_images"]
        best_peer = top["best_peer_latency_ms"]
        row["speedup_vs_best_peer"] = best_peer / row["latency_ms_median"] if best_peer else None
        row["speedup_vs_onnxruntime_fp32"] = (baseline["latency_ms_median"] / row["latency_ms_median"]
                                              if baseline else None)
        if row["kind"] == "target":
            row["artifact"] = jobs[row["name"]]["artifact"]
    result = {"variant": variant_name, "machine": {**before, "load_average_after": machine()["load_average"]},
              "method": method_sentence(cfg.benchmark), "settings": dict(vars(cfg.benchmark)),
              "targets": {n: r for n, r in rows.items() if r["kind"] == "target"},
              "peers": {n: r for n, r in rows.items() if r["kind"] == "peer"}, "headline": top}
    write_json(paths["benchmark"], result)
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["latency_ms_median"]):
        status = r["verification"]["status"]
        print(f"benchmark {variant_name} {name} ({r['kind']}, {status}): {r['latency_ms_median']:.2f} ms median "
              f"[p10 {r['latency_ms_p10']:.2f}, p90 {r['latency_ms_p90']:.2f}, block spread "
              f"{100 * r['latency_block_spread']:.0f}%]" +
              (f", {r['throughput_img_s']:.1f} img/s" if "throughput_img_s" in r else ""))
    if top["latency_ratio_vs_best_peer"] is not None:
        print(f"benchmark {variant_name}: fastest verified {top['recommended']} {top['recommended_latency_ms']:.2f} ms "
              f"= {top['latency_ratio_vs_best_peer']:.2f}x the best peer {top['best_peer']} "
              f"{top['best_peer_latency_ms']:.2f} ms")
    return result


def read_metrics(path: str | Path) -> dict:
    import json

    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def report(cfg: RunConfig) -> None:
    """Write the report over every variant x target (failed and left-out jobs are rows, not errors)."""

    print(summary_line(build_report(cfg, report_dir(cfg))))

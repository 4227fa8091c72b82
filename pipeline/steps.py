"""The pipeline's steps, one function per DVC stage, shared by `stages/*.py` and `python -m pipeline`.

Each step reads its inputs from the paths in `cfg.plan`, writes its outputs atomically, and
raises a PipelineError subclass (one line, with the fix) on failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import backends
from pipeline.benchmark import benchmark as run_benchmark
from pipeline.calibration import calibration_inputs
from pipeline.checkpoint import sha256_file
from pipeline.config import RunConfig
from pipeline.dropin import write_dropin
from pipeline.errors import ConfigError, VerificationError
from pipeline.export import export_onnx, onnx_metadata
from pipeline.golden import PHOTO_BOXES, golden_crops, random_inputs
from pipeline.io import atomic_path, read_npz, remove_outputs, write_json, write_npz
from pipeline.onnx_io import INPUT_NAME, fixed_batch, get_metadata, load_onnx, save_onnx, set_metadata
from pipeline.plan import model_config, spec_of
from pipeline.plan import variant_entry as _variant_entry
from pipeline.preprocess import normalize
from pipeline.progress import progress_bar
from pipeline.quantize import quantize_qdq
from pipeline.reference import reference_runs, sha256_of_source, supplied_onnx
from pipeline.simplify import simplify_onnx
from pipeline.verify import Golden, check_execution_precision, recorded_normalizations, summary_lines, verify_artifact
from pipeline.versions import tool_versions
from pipeline.weights import WeightsInfo, build_reference_model

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


def build(cfg: RunConfig, job: str) -> Path:
    """Build one target's artifact from its ONNX (simplified or Q/DQ), with its metadata."""
    entry = _job_entry(cfg, job)
    target = backends.get_target(entry["target"])
    module = backends.get(target.backend)
    upstream = "quantize" if entry["onnx"].endswith("quantized/model.onnx") else "simplify"
    source = _require(entry["onnx"], upstream, entry["variant"])
    calibration_set = (read_npz(_require(entry["calibration"], "calibration", entry["variant"]))["input"]
                       if entry["calibration"] else None)
    with atomic_path(entry["artifact"], is_dir=True) as tmp:
        module.build(source, target, cfg, tmp, calibration=calibration_set)
        write_json(tmp / ARTIFACT_META, {
            "job": job, "variant": entry["variant"], "target": target.name, "backend": target.backend,
            "precision": target.precision, "source_onnx_sha256": sha256_file(source),
            "onnx_metadata": get_metadata(load_onnx(source)),
            "tool_versions": tool_versions(*getattr(module, "TOOLS", (target.backend,)), "onnx"),
        })
        write_dropin(tmp, target, spec_of(cfg, entry["variant"]), get_metadata(load_onnx(source)))
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
    runner = backends.get(target.backend).Runner(artifact, target, cfg)
    metrics = verify_artifact(lambda inputs: runner({INPUT_NAME: inputs}), golden, tolerance,
                              cfg.verify.min_peak_margin, recorded_normalizations(artifact))
    metrics["breaches"] += check_execution_precision(target.precision, runner.settings["execution_precision"])
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


def benchmark(cfg: RunConfig, variant_name: str) -> dict:
    """Time every artifact of the variant side by side; write the DVC metrics file."""
    paths = _variant_entry(cfg, variant_name)
    jobs = {cfg.plan["jobs"][j]["target"]: cfg.plan["jobs"][j] for j in paths["jobs"]}
    runners = {}
    settings = {}
    for target_name, entry in jobs.items():
        target = backends.get_target(target_name)
        runner = backends.get(target.backend).Runner(Path(entry["artifact"]), target, cfg)
        runners[target_name], settings[target_name] = runner, runner.settings
    with progress_bar(max(1, cfg.benchmark.iterations // 5), f"benchmark {variant_name}") as advance:
        results = run_benchmark(runners, spec_of(cfg, variant_name).input_hw, cfg.benchmark, advance)
    for target_name, result in results.items():
        result["runtime_settings"] = settings[target_name]
        drift = read_metrics(jobs[target_name]["metrics"]).get("keypoints", {}).get("confident", {})
        result["mean_drift_px"] = drift.get("mean_drift_px")
    write_json(paths["benchmark"], {"variant": variant_name, "targets": results})
    for target_name, r in sorted(results.items(), key=lambda kv: kv[1]["latency_ms_median"]):
        speedup = r["speedup_vs_onnxruntime_fp32"]
        print(f"benchmark {variant_name} {target_name}: {r['latency_ms_median']:.2f} ms median, "
              f"p90 {r['latency_ms_p90']:.2f} ms, {r['throughput_img_s']:.1f} img/s at batch "
              f"{r['throughput_batch']}" + (f", {speedup:.2f}x onnxruntime-fp32" if speedup else ""))
    return results


def read_metrics(path: str | Path) -> dict:
    import json

    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def report(cfg: RunConfig) -> None:
    """Write the report over every variant x target (failed and left-out jobs are rows, not errors)."""
    from pipeline.report import build_report, report_dir, summary_line

    print(summary_line(build_report(cfg, report_dir(cfg))))

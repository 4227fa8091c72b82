"""The pipeline's steps, one function per DVC stage, shared by `stages/*.py` and `python -m pipeline`.

Each step reads its inputs from the paths in `cfg.plan`, writes its outputs atomically, and
raises a PipelineError subclass (one line, with the fix) on failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline import backends
from pipeline.calibration import calibration_inputs
from pipeline.checkpoint import sha256_file
from pipeline.config import ModelConfig, RunConfig
from pipeline.dropin import write_dropin
from pipeline.errors import ConfigError, VerificationError
from pipeline.evaluate import evaluate  # noqa: F401  the `evaluate` stage's step lives with its library
from pipeline.export import export_onnx
from pipeline.golden import PHOTO_BOXES, golden_inputs
from pipeline.io import atomic_path, read_npz, remove_outputs, write_json, write_npz
from pipeline.onnx_io import check_variant, get_metadata, load_onnx, run_fp32, save_onnx, set_metadata
from pipeline.progress import progress_bar
from pipeline.quantize import quantize_qdq
from pipeline.runtime import recorded_runtime
from pipeline.simplify import simplify_onnx
from pipeline.variants import parse_variant
from pipeline.verify import check_execution_precision, compare, summary_lines
from pipeline.versions import tool_versions
from pipeline.weights import WeightsInfo, build_reference_model, is_onnx, resolve_path

ARTIFACT_META = "artifact.json"


def _variant_entry(cfg: RunConfig, variant: str) -> dict:
    if variant not in cfg.plan["variants"]:
        raise ConfigError(f"variant {variant!r} is not in the plan (model={cfg.model.name}); "
                          f"set model={variant} or pick one of {', '.join(cfg.plan['variants'])}")
    return cfg.plan["variants"][variant]


def _job_entry(cfg: RunConfig, job: str) -> dict:
    if job not in cfg.plan["jobs"]:
        raise ConfigError(f"job {job!r} is not in the plan; choose one of {', '.join(cfg.plan['jobs'])} "
                          "or change model/targets")
    return cfg.plan["jobs"][job]


def model_config(cfg: RunConfig, variant_name: str) -> ModelConfig:
    """The model config of a planned variant: `model` itself, or an extra variant's planned weights."""
    if variant_name == cfg.model.name:
        return cfg.model
    checkpoint = _variant_entry(cfg, variant_name)["checkpoint"]
    return ModelConfig(name=variant_name, checkpoint=checkpoint, synthetic_seed=cfg.model.synthetic_seed)


def _require(path: str | Path, stage: str, name: str) -> Path:
    """An upstream output that must exist; says which stage makes it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; run the `{stage}@{name}` stage first "
                          f"(dvc repro {stage}@{name}, or python -m pipeline for the whole chain)")
    return path


def _onnx_weights_info(model: ModelConfig) -> WeightsInfo:
    path = resolve_path(model.checkpoint)
    return WeightsInfo("onnx", "onnx", model.checkpoint, sha256_file(path) if path.is_file() else "")


def reference(cfg: RunConfig, variant_name: str) -> Path:
    """Golden inputs and the reference outputs: PyTorch, or the supplied ONNX in plain onnxruntime."""
    paths = _variant_entry(cfg, variant_name)
    variant = parse_variant(variant_name)
    model_cfg = model_config(cfg, variant_name)
    inputs = golden_inputs(variant.input_hw, cfg.verify.num_figures, cfg.verify.num_random, cfg.verify.seed)
    if is_onnx(model_cfg):
        source = load_onnx(resolve_path(model_cfg.checkpoint))
        check_variant(source, variant, f"model.checkpoint={model_cfg.checkpoint}")
        outputs = run_fp32(source, inputs)
    else:
        model, _, _ = build_reference_model(model_cfg)
        torch.set_num_threads(max(1, torch.get_num_threads()))
        with torch.no_grad():
            simcc_x, simcc_y = model(torch.from_numpy(inputs))
        outputs = {"simcc_x": simcc_x.numpy(), "simcc_y": simcc_y.numpy()}
    write_npz(paths["reference"], {"input": inputs, **outputs, "photo_count": np.array(len(PHOTO_BOXES))})
    return Path(paths["reference"])


def export(cfg: RunConfig, variant_name: str) -> Path:
    """PyTorch -> ONNX, or the supplied ONNX checked against the variant and re-labelled."""
    paths = _variant_entry(cfg, variant_name)
    variant = parse_variant(variant_name)
    model_cfg = model_config(cfg, variant_name)
    with atomic_path(paths["export"]) as tmp:
        if is_onnx(model_cfg):
            proto = load_onnx(resolve_path(model_cfg.checkpoint))
            check_variant(proto, variant, f"model.checkpoint={model_cfg.checkpoint}")
            info = _onnx_weights_info(model_cfg)
            metadata = {**get_metadata(proto), "variant": variant.name, "weights_source": "onnx",
                        "checkpoint_sha256": info.sha256}
            set_metadata(proto, metadata)
            save_onnx(proto, tmp)
        else:
            model, _, info = build_reference_model(model_cfg)
            export_onnx(model, variant, info, cfg.export, tmp)
    return Path(paths["export"])


def simplify(cfg: RunConfig, variant_name: str) -> Path:
    """Simplify the export and accept the result only if it computes the same outputs."""
    paths = _variant_entry(cfg, variant_name)
    variant = parse_variant(variant_name)
    inputs = read_npz(_require(paths["reference"], "reference", variant_name))["input"]
    with atomic_path(paths["simplified"], is_dir=True) as tmp:
        report = simplify_onnx(load_onnx(_require(paths["export"], "export", variant_name)), variant, cfg.simplify, inputs, tmp / "model.onnx")
        write_json(tmp / "simplify.json", report)
    return Path(paths["simplified_onnx"])


def calibration(cfg: RunConfig, variant_name: str) -> Path:
    """INT8 calibration inputs: person crops, preprocessed exactly like inference inputs."""
    if variant_name not in cfg.plan["calibrations"]:
        raise ConfigError(f"variant {variant_name!r} has no INT8 target in the plan; nothing to calibrate")
    paths = cfg.plan["calibrations"][variant_name]
    inputs = calibration_inputs(cfg.calibration, parse_variant(variant_name).input_hw)
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
    """Measure the target's runtime settings (pipeline/tune.py) and write the record `build` reads."""
    from pipeline.tune import tune as run_tune

    entry = _job_entry(cfg, job)
    source, calibration_set = _job_sources(cfg, entry)
    record = run_tune(source, entry["target"], cfg, parse_variant(entry["variant"]).input_hw, calibration_set)
    record["job"] = job
    write_json(entry["tune"], record)
    for mode, settings in record["chosen"].items():
        print(f"tune {job} {mode}: {settings}")
    return record


def build(cfg: RunConfig, job: str) -> Path:
    """Build one target's artifact from its ONNX (simplified or Q/DQ), with its metadata and the runtime
    settings the `tune` stage chose (none if it has not run)."""
    entry = _job_entry(cfg, job)
    target = backends.get_target(entry["target"])
    module = backends.get(target.backend)
    source, calibration_set = _job_sources(cfg, entry)
    runtime = read_metrics(entry["tune"]).get("chosen", {}) if entry.get("tune") else {}
    with atomic_path(entry["artifact"], is_dir=True) as tmp:
        module.build(source, target, cfg, tmp, calibration=calibration_set)
        write_json(tmp / ARTIFACT_META, {
            "job": job, "variant": entry["variant"], "target": target.name, "backend": target.backend,
            "precision": target.precision, "source_onnx_sha256": sha256_file(source),
            "onnx_metadata": get_metadata(load_onnx(source)),
            "tool_versions": tool_versions(*getattr(module, "TOOLS", (target.backend,)), "onnx"),
            "runtime": runtime,
        })
        write_dropin(tmp, target, entry["variant"], get_metadata(load_onnx(source)), runtime=runtime)
    return Path(entry["artifact"])


def verify(cfg: RunConfig, job: str) -> dict:
    """Run the artifact on the golden inputs, write the metrics, raise if any tolerance is breached."""
    entry = _job_entry(cfg, job)
    remove_outputs(entry["metrics"])
    target = backends.get_target(entry["target"])
    tolerance = cfg.verify.tolerances[target.precision]
    golden = read_npz(_require(entry["reference"], "reference", entry["variant"]))
    _require(entry["artifact"], "build", job)
    module = backends.get(target.backend)
    reference_outputs = {k: golden[k] for k in ("simcc_x", "simcc_y")}
    runner = module.Runner(Path(entry["artifact"]), target, cfg)
    metrics = compare(reference_outputs, runner({"input": golden["input"]}), tolerance, cfg.verify.min_score)
    metrics["breaches"] += check_execution_precision(target.precision, runner.settings["execution_precision"])
    if recorded_runtime(entry["artifact"], "throughput"):
        # The throughput settings run the same files with other threads and streams: they must pass too.
        streams = module.Runner(Path(entry["artifact"]), target, cfg, mode="throughput")
        throughput = compare(reference_outputs, streams({"input": golden["input"]}), tolerance, cfg.verify.min_score)
        throughput["breaches"] += check_execution_precision(target.precision, streams.settings["execution_precision"])
        metrics["breaches"] += [f"throughput settings: {b}" for b in throughput["breaches"]]
        metrics["throughput_runtime_settings"] = streams.settings
    metrics["passed"] = not metrics["breaches"]
    metrics.update({"job": job, "target": target.name, "precision": target.precision,
                    "tolerance": vars(tolerance), "runtime_settings": runner.settings,
                    "num_inputs": int(golden["input"].shape[0])})
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


def _peer_verification(cfg: RunConfig, candidate, golden: dict) -> dict:
    """A peer's outputs on the golden inputs against the reference, at its precision's tolerance.
    Informational: peers are not ours to gate, but their drift belongs on the same plot."""
    target = backends.get_target(candidate.target)
    runner = backends.get(target.backend).Runner(Path(candidate.artifact_dir), target, cfg, candidate.latency_runtime)
    actual = runner({"input": golden["input"]})
    metrics = compare({k: golden[k] for k in ("simcc_x", "simcc_y")}, actual, cfg.verify.tolerances[target.precision],
                      cfg.verify.min_score)
    return _verification(metrics)


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
    """Time every built artifact of the variant and the peers (pipeline/peers.py), each in its own process;
    write the DVC metrics file: one row per candidate, the machine, the method and the headline."""
    import tempfile

    from pipeline.benchmark import Candidate, machine, measure
    from pipeline.peers import build_peers

    paths = _variant_entry(cfg, variant_name)
    variant = parse_variant(variant_name)
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
            golden = read_npz(_require(paths["reference"], "reference", variant_name))
            calibration = Path(paths["calibration"])
            used = {t.split("-", 1)[0] for t in jobs}
            peers = build_peers(_require(paths["export"], "export", variant_name),
                                read_npz(calibration)["input"] if calibration.is_file() else None, Path(scratch),
                                cfg.benchmark.peer_static_shape, tuple(b for b in ("onnxruntime", "openvino") if b in used))
            for peer in peers:
                peer.extra["verification"] = _peer_verification(cfg, peer, golden)
            candidates += peers
        with progress_bar(cfg.benchmark.blocks, f"benchmark {variant_name}") as advance:
            rows = measure(candidates, cfg, variant.input_hw, cfg.benchmark, advance)
    top = headline(rows)
    for row in rows.values():
        row["artifact"] = jobs[row["name"]]["artifact"] if row["kind"] == "target" else None
        best_peer = top["best_peer_latency_ms"]
        row["speedup_vs_best_peer"] = best_peer / row["latency_ms_median"] if best_peer else None
    result = {"variant": variant_name, "machine": {**before, "load_average_after": machine()["load_average"]},
              "method": {k: v for k, v in vars(cfg.benchmark).items()}, "candidates": rows, "headline": top}
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
    from pipeline.report import build_report, report_dir, summary_line

    print(summary_line(build_report(cfg, report_dir(cfg))))

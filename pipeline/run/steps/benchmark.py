"""Step `benchmark@<variant>`: every built artifact of the variant and the peers timed side by side."""

from __future__ import annotations

from pathlib import Path

from pipeline import backends
from pipeline.backends.runtime import recorded_runtime
from pipeline.check.verify import Golden, verify_artifact
from pipeline.config import RunConfig
from pipeline.core.errors import PipelineError
from pipeline.core.io import read_npz, write_json
from pipeline.core.onnx_io import INPUT_NAME
from pipeline.core.progress import progress_bar
from pipeline.measure.benchmark import BASELINE_TARGET, Candidate, machine, measure, method_sentence
from pipeline.measure.headline import latency_ratio, recommend
from pipeline.measure.peers import build_peers
from pipeline.measure.tune import slower_than_defaults
from pipeline.planning.plan import spec_of
from pipeline.planning.plan import variant_entry as _variant_entry
from pipeline.run.steps.common import _require


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


DEFAULTS_KIND = "defaults"  # the same artifact as a target, run with its runtime's default settings


def _defaults_candidates(cfg: RunConfig, jobs: dict[str, dict]) -> list[Candidate]:
    """For each target whose tuned latency settings are not its runtime's defaults, the same artifact with the
    defaults (`<target>@defaults`), timed in the same run so a tune misled by a busy machine shows (issue 20)."""
    found = []
    for target_name, entry in jobs.items():
        backend = backends.get_target(target_name).backend
        tuned = recorded_runtime(entry["artifact"], "latency")
        default = backends.default_runtime(backend, cfg.backends, "latency")
        if tuned is not None and tuned != default:
            found.append(Candidate(f"{target_name}@defaults", DEFAULTS_KIND, target_name, entry["artifact"], default,
                                   backends.default_runtime(backend, cfg.backends, "throughput"),
                                   description=f"our artifact, {backend}'s default runtime settings"))
    return found


def _tuned_vs_defaults(rows: dict[str, dict], defaults: dict[str, dict], min_gain: float) -> dict[str, dict]:
    """Per target timed with its defaults too: both medians (ms), the defaults' settings and `breach` ('' unless
    the tuned setting is slower beyond the noise, pipeline/measure/tune.py: slower_than_defaults)."""
    found = {}
    for row in defaults.values():
        tuned = rows[row["target"]]
        found[row["target"]] = {"tuned_latency_ms": tuned["latency_ms_median"],
                                "defaults_latency_ms": row["latency_ms_median"],
                                "defaults_block_spread": row["latency_block_spread"],
                                "defaults_runtime_settings": row["runtime_settings"],
                                "breach": slower_than_defaults(tuned, row, min_gain)}
    return found


def _executed_precision(row: dict) -> str:
    """A target's precision; for a peer, the precisions its runtime reports executing, most operations
    first (e.g. `bf16` for OpenVINO's default on a CPU with native bf16)."""
    if row["kind"] == "target":
        return backends.get_target(row["target"]).precision
    executed = (row.get("runtime_settings") or {}).get("execution_precision") or {}
    names = sorted(executed, key=lambda name: -executed[name])
    return "/".join(names) or backends.get_target(row["target"]).precision


def headline(rows: dict[str, dict]) -> dict:
    """The recommended verified target against the best peer on two axes: latency ratio (lower is better) and
    mean keypoint drift (px, ours and the peer's). The rule is the report's (pipeline/measure/headline.py)."""
    def timing(row: dict) -> tuple:
        return row["name"], row.get("latency_ms_median"), row["verification"].get("mean_drift_px")

    best, peer = recommend((r for r in rows.values() if r["kind"] == "target" and r["verification"]["passed"]),
                           (r for r in rows.values() if r["kind"] == "peer"), timing)
    ratio = latency_ratio(best["latency_ms_median"], peer["latency_ms_median"]) if best and peer else None
    return {"recommended": best["name"] if best else None,
            "recommended_latency_ms": best["latency_ms_median"] if best else None,
            "recommended_drift_px": timing(best)[2] if best else None,
            "best_peer": peer["name"] if peer else None, "best_peer_latency_ms": peer["latency_ms_median"] if peer else None,
            "best_peer_drift_px": timing(peer)[2] if peer else None,
            "latency_ratio_vs_best_peer": ratio, "peer_is_faster": bool(ratio and ratio > 1.0)}


def _px(drift: float | None) -> str:
    return "unmeasured" if drift is None else f"{drift:.2f} px"


def headline_sentence(top: dict) -> str:
    """The headline on both axes, saying plainly when the best peer is faster."""
    ours = (f"recommended {top['recommended']} {top['recommended_latency_ms']:.2f} ms, drift "
            f"{_px(top['recommended_drift_px'])}")
    peer = f"the best peer {top['best_peer']} {top['best_peer_latency_ms']:.2f} ms, drift {_px(top['best_peer_drift_px'])}"
    ratio = top["latency_ratio_vs_best_peer"]
    if top["peer_is_faster"]:
        return f"{ours} = {ratio:.2f}x {peer}: the peer is faster"
    return f"{ours} = {ratio:.2f}x {peer}"


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
        candidates += _defaults_candidates(cfg, jobs)
        with progress_bar(cfg.benchmark.blocks, f"benchmark {variant_name}") as advance:
            rows = measure(candidates, cfg.backends, spec.input_hw, cfg.benchmark, advance)
    defaults = {n: rows.pop(n) for n in list(rows) if rows[n]["kind"] == DEFAULTS_KIND}
    versus = _tuned_vs_defaults(rows, defaults, cfg.tune.min_gain)
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
              "peers": {n: r for n, r in rows.items() if r["kind"] == "peer"}, "headline": top,
              "tuned_vs_defaults": versus}
    write_json(paths["benchmark"], result)
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["latency_ms_median"]):
        status = r["verification"]["status"]
        print(f"benchmark {variant_name} {name} ({r['kind']}, {status}): {r['latency_ms_median']:.2f} ms median "
              f"[p10 {r['latency_ms_p10']:.2f}, p90 {r['latency_ms_p90']:.2f}, block spread "
              f"{100 * r['latency_block_spread']:.0f}%]" +
              (f", {r['throughput_img_s']:.1f} img/s" if "throughput_img_s" in r else ""))
    if top["latency_ratio_vs_best_peer"] is not None:
        print(f"benchmark {variant_name}: {headline_sentence(top)}")
    for target, v in sorted(versus.items()):
        slower = " (slower beyond the noise)" if v["breach"] else ""
        print(f"benchmark {variant_name} {target}: tuned {v['tuned_latency_ms']:.2f} ms, "
              f"{v['defaults_latency_ms']:.2f} ms with the runtime's defaults{slower}")
    breaches = [(target, v["breach"]) for target, v in sorted(versus.items()) if v["breach"]]
    if breaches:
        more = f" (+{len(breaches) - 1} more in {paths['benchmark']})" if len(breaches) > 1 else ""
        raise PipelineError(f"benchmark {variant_name}: {breaches[0][1]}; rerun tune@{variant_name}.{breaches[0][0]} "
                            f"on a quiet machine{more}")
    return result


def read_metrics(path: str | Path) -> dict:
    import json

    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

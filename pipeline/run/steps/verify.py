"""Step `verify@<job>`: the artifact against the reference, with metrics; raises on a breach."""

from __future__ import annotations

from pipeline import backends
from pipeline.backends.runtime import recorded_runtime
from pipeline.check.binding import RECORD_KEY, bytes_judged
from pipeline.check.verify import (
    Golden,
    check_execution_precision,
    recorded_normalizations,
    summary_lines,
    verify_artifact,
)
from pipeline.config import RunConfig
from pipeline.core.errors import VerificationError
from pipeline.core.io import read_npz, remove_outputs, write_json
from pipeline.core.onnx_io import INPUT_NAME
from pipeline.run.steps.common import _job_entry, _require


def verify(cfg: RunConfig, job: str) -> dict:
    """Run the artifact on the golden inputs, write the metrics, raise if any tolerance is breached."""
    entry = _job_entry(cfg, job)
    remove_outputs(entry["metrics"])
    target = backends.get_target(entry["target"])
    tolerance = cfg.verify.tolerances[target.precision]
    golden = Golden.from_arrays(read_npz(_require(entry["reference"], "reference", entry["variant"])),
                                entry["reference"])
    artifact = _require(entry["artifact"], "build", job)
    judged = bytes_judged(artifact, entry["reference"], entry["tune"])  # before any runtime opens the files
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
                    "num_inputs": int(golden.inputs.shape[0]), RECORD_KEY: judged})
    write_json(entry["metrics"], metrics)
    for line in summary_lines(job, metrics):
        print(line)
    if not metrics["passed"]:
        breaches = metrics["breaches"]
        first = next((b for b in breaches if b.startswith("executes")), breaches[0])  # the cause, if measured
        more = f" (+{len(breaches) - 1} more in {entry['metrics']})" if len(breaches) > 1 else ""
        raise VerificationError(f"{job} failed verification: {first}{more}")
    return metrics

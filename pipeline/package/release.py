"""Only verified artifacts ship: `artifacts/release/<variant>/<target>/` plus a `manifest.json`.

The `release@<variant>` stage (last in dvc.yaml) copies every artifact of the variant whose verify metrics say
`passed`, with its drop-in files (MMDeploy SDK JSON, `rtmlib.zip`), and writes the manifest: per target the
sha256 of each file, the precision (named and executed), the verification figures (error, cosine, keypoint
drift, which tolerance rule applied), the runtime settings `tune` measured (pipeline/backends/runtime.py;
written into the shipped artifact.json and detail.json) next to what verify ran, and the tool versions. A job
that failed, was not built or was left out never appears there; the manifest lists it under `withheld` with
the reason; a drop-in file whose consumer cannot express the model (rtmlib's fixed split ratio 2.0) is left
out of its target and listed under the target's `not_shipped` with the reason. A passed verdict ships only the
bytes it judged: verify records the sha256 of every artifact file, of the reference and of the tune record
(pipeline/check/binding.py), and an artifact whose bytes differ now is withheld with the files named. Ship
from `artifacts/release/`.

The file hashes are the same on every x86 CPU wherever the artifacts are (pipeline/reproduce.py
compares them one by one) except artifact.json and the SDK files, which carry the tuned runtime
settings; those and the verification figures are measurements of this machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.backends import get_target
from pipeline.backends.runtime import ARTIFACT_META, tuned_runtime
from pipeline.check.binding import RECORD_KEY, changed_since_verified
from pipeline.core.digest import changed_files, tree_digests
from pipeline.core.io import atomic_path, write_json
from pipeline.package.dropin import not_shipped, write_dropin
from pipeline.planning.plan import spec_of, variant_entry

MANIFEST = "manifest.json"
# Verification figures copied into the manifest (the full metrics stay in artifacts/<variant>/metrics/).
FIGURES = ("rule", "keypoints")  # the executed precisions come from the runtime settings


def _metrics(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The verification figures a consumer needs to trust the artifact, per output and over keypoints."""
    keys = ("needs_atol", "needs_rtol", "cosine", "cosine_limit", "rule", "cosine_rule")
    outputs = {name: {key: result.get(key) for key in keys if key in result}
               for name, result in metrics.get("outputs", {}).items()}
    summary: dict[str, Any] = {"outputs": outputs}
    for key in FIGURES:
        if key in metrics:
            summary[key] = metrics[key]
    settings = metrics.get("runtime_settings") or {}
    if "execution_precision" in settings:
        summary["execution_precision"] = settings["execution_precision"]
    return summary


def _record_tuned_runtime(copy: Path, artifact: Path, cfg, variant: str) -> dict[str, Any]:
    """Write the tuned runtime settings of `artifact` into its released `copy`: artifact.json's `runtime`
    and the SDK files' backend_config (pipeline/package/dropin.py). Returns the copy's artifact.json."""

    meta = _metrics(copy / ARTIFACT_META)
    runtime = tuned_runtime(artifact)
    if runtime and meta:
        meta["runtime"] = runtime
        write_json(copy / ARTIFACT_META, meta)
        write_dropin(copy, meta["target"], spec_of(cfg, variant), meta.get("onnx_metadata", {}), runtime=runtime)
    return meta


def release(cfg, variant: str) -> Path:
    """Gather the variant's verified artifacts into `<out_dir>/release/<variant>/` (atomically) with the manifest.

    Raises ConfigError (pipeline.planning.plan.variant_entry) for a variant outside the plan. A variant none of whose jobs passed gets a
    manifest with no targets (and every job under `withheld`)."""
    entry = variant_entry(cfg, variant)
    shipped: dict[str, Any] = {}
    withheld: dict[str, str] = {}
    final = Path(entry["release"])
    with atomic_path(final, is_dir=True) as tmp:
        for job in entry["jobs"]:
            job_entry = cfg.plan["jobs"][job]
            target, artifact = job_entry["target"], Path(job_entry["artifact"])
            metrics = _metrics(Path(job_entry["metrics"]))
            if not metrics.get("passed") or not artifact.is_dir():
                reason = "; ".join(metrics.get("breaches", [])) or ("not built" if not artifact.is_dir()
                                                                     else "not verified")
                withheld[target] = reason
                continue
            changed = changed_since_verified(metrics.get(RECORD_KEY), artifact, job_entry["reference"],
                                             job_entry["tune"])
            if changed:  # the verdict belongs to other bytes
                withheld[target] = f"{changed}; rerun verify@{job} (dvc repro, or python -m pipeline)"
                print(f"release {variant}: withheld {target}: {withheld[target]}")
                continue
            shutil.copytree(artifact, tmp / target)
            meta = _record_tuned_runtime(tmp / target, artifact, cfg, variant)
            shipped[target] = {
                "precision": job_entry["precision"],
                "backend": job_entry["backend"],
                "files": tree_digests(tmp / target),
                # What verify judged (artifact files, reference, tune record); release rewrites only the files
                # that carry the tuned runtime settings (artifact.json and the SDK's), listed here.
                "verified_sha256": metrics[RECORD_KEY],
                "rewritten_at_release": changed_files(metrics[RECORD_KEY]["artifact"], tree_digests(tmp / target)),
                "verification": _summary(metrics),
                # What a consumer runs it with: the settings `tune` measured per mode (pipeline/backends/runtime.py;
                # {} where none were measured: the backend's defaults), and what verify's Runner ran.
                "runtime_settings": meta.get("runtime") or {},
                "verified_with": metrics.get("runtime_settings", {}),
                "tool_versions": meta.get("tool_versions", {}),
                "source_onnx_sha256": meta.get("source_onnx_sha256", ""),
            }
            missing = not_shipped(get_target(target), spec_of(cfg, variant))
            if missing:  # a drop-in file whose consumer cannot express the model (pipeline/package/dropin.py)
                shipped[target]["not_shipped"] = missing
                print(f"release {variant}: {target} without " + "; ".join(f"{f} ({why})" for f, why in missing.items()))
        for job, reason in cfg.plan["left_out"].items():
            if cfg.plan["jobs"].get(job, {}).get("variant", job.partition(".")[0]) == variant:
                withheld[job.partition(".")[2]] = f"left out: {reason}"
        write_json(tmp / MANIFEST, {"variant": variant, "targets": shipped, "withheld": withheld,
                                    "model": {k: entry["spec"][k] for k in ("name", "codec", "preprocess")},
                                    "keypoint_names": entry["spec"]["keypoints"]["names"]})
    print(f"release {variant}: {len(shipped)} verified artifact(s) in {final}"
          + (f"; withheld {', '.join(sorted(withheld))}" if withheld else ""))
    return final

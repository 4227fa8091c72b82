"""Step `simplify@<variant>`: the simplified ONNX, checked against the export."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import RunConfig
from pipeline.core.io import atomic_path, read_npz, write_json
from pipeline.core.onnx_io import load_onnx
from pipeline.graph.simplify import simplify_onnx
from pipeline.planning.plan import spec_of
from pipeline.planning.plan import variant_entry as _variant_entry
from pipeline.run.steps.common import _require


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

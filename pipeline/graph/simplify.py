"""Graph simplification with onnxslim or onnxsim, accepted only if it computes the same function.

The simplified graph is run next to the unsimplified one in onnxruntime (fp32, CPU) on the golden
inputs; a difference above `simplify.atol` rejects it. Names, I/O contract and metadata are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from pipeline.config import SimplifyConfig
from pipeline.core.errors import VerificationError
from pipeline.core.finite import non_finite
from pipeline.core.onnx_io import check_io, get_metadata, run_fp32, set_metadata
from pipeline.core.versions import tool_versions
from pipeline.model.spec import ModelSpec


def _run_simplifier(model: onnx.ModelProto, tool: str) -> onnx.ModelProto:
    if tool == "onnxslim":
        import onnxslim

        return onnxslim.slim(model)
    if tool == "onnxsim":
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise VerificationError("onnxsim's own check rejected the simplified model; use simplify=onnxslim")
        return simplified
    return model


def simplify_onnx(source: onnx.ModelProto, spec: ModelSpec, cfg: SimplifyConfig, inputs: np.ndarray,
                  out_path: Path) -> dict[str, object]:
    """Write the simplified model; return a report with node counts and the measured difference.

    The simplified bytes depend on the export and the tool alone: onnxslim and onnxsim fold constants
    with onnxruntime, but the export holds no float subgraph to fold (tests/graph/test_cpu_independence.py).
    `max_abs_diff` is measured with this CPU's kernels, so the caller keeps it out of the artifact.
    """
    metadata = get_metadata(source)
    simplified = _run_simplifier(onnx.ModelProto.FromString(source.SerializeToString()), cfg.tool)
    simplified.ir_version = source.ir_version
    if cfg.tool != "none":
        metadata["simplified_by"] = f"{cfg.tool} {tool_versions(cfg.tool)[cfg.tool]}"
    set_metadata(simplified, metadata)
    check_io(simplified, spec, f"model simplified by {cfg.tool}")
    before, after = run_fp32(source, inputs), run_fp32(simplified, inputs)
    found = non_finite(before.items())
    if found:  # the simplifier is not to blame for what the export already computes
        raise VerificationError(f"the exported graph itself outputs non-finite values on the golden inputs ({found}), "
                                "before any simplification; check the model's weights and its export")
    # np.max over all outputs at once: Python's max(0.0, nan) would drop a NaN in a later output.
    max_abs = float(np.max([np.max(np.abs(before[k].astype(np.float64) - after[k])) for k in before]))
    if not np.isfinite(max_abs) or max_abs > cfg.atol:
        raise VerificationError(f"simplify.tool={cfg.tool} changed the outputs: max|Δ| {max_abs:.3g} > "
                                f"simplify.atol {cfg.atol:g}; use simplify=none or another tool")
    onnx.save_model(simplified, str(out_path))
    return {"tool": cfg.tool, "nodes_before": len(source.graph.node), "nodes_after": len(simplified.graph.node),
            "max_abs_diff": max_abs, "atol": cfg.atol}

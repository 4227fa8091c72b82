"""The peers: what a user gets on this machine without this pipeline, the benchmark's baseline (issue 12).

Each peer starts from the plain export (`export/model.onnx`, as MMDeploy exports it: opset 17,
dynamic batch, nothing simplified or quantized) and uses only the runtime's documented defaults:

- `peer-onnxruntime`: `onnxruntime.InferenceSession(path)`, default SessionOptions (onnxruntime
  then uses one intra-op thread per physical core and every graph optimization).
- `peer-openvino`: `openvino.convert_model(path)` compiled for "CPU" with no properties: OpenVINO's
  default precision for the CPU (bf16 where it has AVX512_BF16 or AMX, else f32) and its default
  LATENCY hint.
- `peer-openvino-nncf-int8`: `nncf.quantize(model, nncf.Dataset(calibration))` with every default
  (NNCF 3.x: preset PERFORMANCE, 300-sample subset, fast bias correction), on the same calibration
  set as our int8 targets, compiled with no properties.

OpenVINO peers are reshaped to a static [1,3,H,W] before compiling (`benchmark.peer_static_shape`,
on by default), as OpenVINO's documentation advises for a model served one image at a time; a user
who keeps the dynamic batch gets a slower model, so the baseline is the stronger of the two forms
and the comparison errs against us. OpenVINO peers are saved as IR with float32 weights, which
compiles to the same model as compiling the ONNX file or the quantized model in memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pipeline.measure.benchmark import Candidate

PEERS = ("peer-onnxruntime", "peer-openvino", "peer-openvino-nncf-int8")


def _throughput_runtime(backend: str, static: bool) -> dict:
    """What a user who wants throughput is told to do: OpenVINO's THROUGHPUT hint; one onnxruntime
    session fed the whole batch."""
    if backend == "openvino":
        return {"inference_precision_hint": None, "performance_hint": "THROUGHPUT", **({"static_batch": 1} if static else {})}
    return {}


def build_peers(export_onnx: Path, calibration: np.ndarray | None, out_dir: Path, static_shape: bool = True,
                backends_available: tuple[str, ...] = ("onnxruntime", "openvino")) -> list[Candidate]:
    """Write the peers' files under `out_dir` and return them as benchmark candidates.

    `calibration` [N,3,H,W] float32 is the int8 targets' calibration set; without it (no int8
    target in the plan) the NNCF peer is left out. Backends missing from `backends_available` are left out.
    """
    peers: list[Candidate] = []
    static = {"static_batch": 1} if static_shape else {}
    shape_note = "static [1,3,H,W]" if static_shape else "dynamic batch"
    if "onnxruntime" in backends_available:
        folder = out_dir / "peer-onnxruntime"
        folder.mkdir(parents=True)
        shutil.copyfile(export_onnx, folder / "model.onnx")
        peers.append(Candidate("peer-onnxruntime", "peer", "onnxruntime-fp32", str(folder), {}, {},
                               "plain export in onnxruntime, default SessionOptions"))
    if "openvino" in backends_available:
        import openvino as ov

        model = ov.convert_model(str(export_onnx))
        folder = out_dir / "peer-openvino"
        folder.mkdir(parents=True)
        ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
        runtime = {"inference_precision_hint": None, **static}
        peers.append(Candidate("peer-openvino", "peer", "openvino-fp32", str(folder), runtime,
                               _throughput_runtime("openvino", static_shape),
                               f"plain export in OpenVINO, default precision and hint, {shape_note}"))
        if calibration is not None and len(calibration):
            import nncf

            dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
            quantized = nncf.quantize(ov.convert_model(str(export_onnx)), dataset)
            folder = out_dir / "peer-openvino-nncf-int8"
            folder.mkdir(parents=True)
            ov.save_model(quantized, str(folder / "model.xml"), compress_to_fp16=False)
            peers.append(Candidate("peer-openvino-nncf-int8", "peer", "openvino-int8", str(folder), runtime,
                                   _throughput_runtime("openvino", static_shape),
                                   f"plain export, nncf.quantize defaults on the same calibration set, "
                                   f"OpenVINO defaults, {shape_note}"))
    return peers

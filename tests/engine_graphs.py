"""The graphs TensorRT builds engines from, for one model, made in-process as the stages make them: the exported
ONNX, the reference stage's golden set (PyTorch float32 and float64 on VerifyConfig's defaults) and the quantize
stage's Q/DQ ONNX. Shared by tests/check/test_preview.py (CPU) and tests/backends/test_backend_tensorrt.py (GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.backends import TARGETS
from pipeline.check.preview import preview_engine
from pipeline.check.verify import Golden, torch_reference
from pipeline.graph.export import export_onnx
from pipeline.graph.quantize import quantize_qdq
from pipeline.inputs.golden import PHOTO_BOXES, figure_crops, golden_crops, random_inputs
from pipeline.model.preprocess import normalize
from pipeline.planning.plan import model_config, spec_of
from pipeline.run.configure import load_config
from pipeline.sources.weights import build_reference_model

FP16, INT8 = TARGETS["tensorrt-fp16"], TARGETS["tensorrt-int8"]
CALIBRATION_CROPS = 32  # figure crops after the golden set's, as the demo chain calibrates on 32 crops


class ModelGraphs:
    """One model: its composed config, exported ONNX, golden set and shared Q/DQ graph (made on demand)."""

    def __init__(self, checkpoint: Path, root: Path, calibration_crops: int = CALIBRATION_CROPS) -> None:
        self.cfg = load_config([f"model.checkpoint={checkpoint}", f"out_dir={root / 'out'}"])
        (self.variant,) = self.cfg.plan["variants"]
        self.spec = spec_of(self.cfg, self.variant)
        model, info = build_reference_model(model_config(self.cfg, self.variant), self.spec)
        self.onnx = root / "model.onnx"
        export_onnx(model, self.spec, info, self.cfg.export, self.onnx)
        verify = self.cfg.verify
        crops = golden_crops(self.spec, verify.num_figures)
        inputs = np.concatenate([normalize(crops, self.spec.preprocess),
                                 random_inputs(self.spec.input_hw, verify.num_random, verify.seed)])
        float32, float64 = torch_reference(model, inputs)
        self.golden = Golden(inputs, crops, self.spec.preprocess, float32, float64, len(PHOTO_BOXES),
                             self.spec.simcc_split_ratio)
        self.root, self.calibration_crops, self._qdq = root, calibration_crops, None

    @property
    def settings(self):
        return self.cfg.backends.tensorrt

    def tolerance(self, target):
        return self.cfg.verify.tolerances[target.precision]

    @property
    def qdq(self) -> Path:
        """The quantize stage's Q/DQ ONNX (default QuantizeConfig), calibrated on procedural figure crops."""
        if self._qdq is None:
            crops = figure_crops(self.spec.input_hw, self.cfg.verify.num_figures + self.calibration_crops)
            self._qdq = self.root / "quantized.onnx"
            quantize_qdq(self.onnx, normalize(crops[self.cfg.verify.num_figures:], self.spec.preprocess),
                         self.cfg.quantize, self._qdq)
        return self._qdq

    def source(self, target) -> Path:
        """What the build stage hands `target`: the Q/DQ ONNX for int8, else the float32 export."""
        return self.qdq if target.precision == "int8" else self.onnx

    def preview(self, target) -> dict:
        """`preview_engine` of `target` on this model's golden set, with the default tolerance."""
        return preview_engine(self.source(target), target, self.settings, self.golden, self.tolerance(target),
                              self.cfg.verify.min_peak_margin)

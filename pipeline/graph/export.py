"""PyTorch -> ONNX export with the consumer contract and self-describing metadata.

Uses the TorchScript-based exporter (`dynamo=False`): it honours any opset from 11, and its graphs
are what MMDeploy, rtmlib and pnnx consume.

Same bytes on every x86 CPU: the export computes no float value with a CPU-dispatched kernel. Left
to itself, the exporter folds each eval-mode BatchNorm into the Conv before it with torch's float32
kernels (`fuseConvBatchNorm` in torch/csrc/jit/passes/onnx/eval_peephole.cpp: w * g / sqrt(var + eps)),
and torch's float32 `sqrt` is MKL's `vsSqrt`, whose code path MKL picks per CPU: on a non-Intel CPU
its generic path (`mkl_vml_kernel_sSqrt_EXHAynn`) is 1 ulp off in about 20% of values, on Intel its
AVX2/AVX-512 paths (`_L9HAynn`, `_Z0HAynn`) round differently. So 2-3% of the folded weights differed
between an AMD EPYC and an Xeon. `fold_batchnorm` folds them first, in numpy float64 (IEEE
operations, correctly rounded on every CPU), and rounds once to float32; the exporter then only moves
and transposes weights. tests/graph/test_export.py checks every initializer against the checkpoint.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from pipeline.config import ExportConfig
from pipeline.core.onnx_io import INPUT_NAME, OUTPUT_NAMES, canonicalize_io, check_io, set_metadata
from pipeline.core.versions import tool_versions
from pipeline.model.spec import ModelSpec
from pipeline.sources.describe import METADATA_SPEC_KEY
from pipeline.sources.weights import WeightsInfo


def onnx_metadata(spec: ModelSpec, weights: WeightsInfo, dynamic_batch: bool,
                  tools: tuple[str, ...] = ("torch", "onnx")) -> dict[str, object]:
    """`metadata_props` of every ONNX we write: the full description (`model_spec`, which
    pipeline/sources/describe.py reads back; without its `source` notes, which name local paths) and the
    facts consumers look for, flat."""
    h, w = spec.input_hw
    pre = spec.preprocess
    return {
        "variant": spec.name,
        METADATA_SPEC_KEY: {k: v for k, v in spec.to_dict().items() if k != "source"},
        "keypoint_set": spec.keypoints.dataset_name,
        "keypoint_names": list(spec.keypoint_names),
        "input_size_hw": [h, w],
        "mean": list(pre.mean),
        "std": list(pre.std),
        "channel_order": pre.channel_order,
        "simcc_split_ratio": spec.simcc_split_ratio,
        "dynamic_batch": dynamic_batch,
        "weights_source": weights.source,
        "synthetic_weights": weights.source == "synthetic",
        "checkpoint_sha256": weights.sha256,
        "tool_versions": tool_versions(*tools),
    }


def min_ir_version(opset: int) -> int:
    """The oldest IR version that carries this opset, so older runtimes (onnxruntime 1.15) read it."""
    return min(row[1] for row in onnx.helper.VERSION_TABLE if row[2] >= opset)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in which every eval-mode BatchNorm2d that directly follows a Conv2d in an
    nn.Sequential (our ConvModule: conv -> bn -> act) is folded into that conv, computed in float64.

    w' = w * s, b' = beta + (b - mean) * s with s = gamma / sqrt(running_var + eps) per output channel,
    every operation in numpy float64, then rounded once to float32; the BatchNorm becomes Identity.
    Same function as conv -> bn in eval mode (running statistics); `model` itself is not changed.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for conv_name, bn_name in zip(names, names[1:]):
            conv, bn = module._modules[conv_name], module._modules[bn_name]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats):
                continue
            def f64(tensor, default: float = 0.0):
                return tensor.detach().numpy().astype(np.float64) if tensor is not None else default

            w = f64(conv.weight)
            scale = f64(bn.weight, 1.0) / np.sqrt(f64(bn.running_var) + float(bn.eps))
            weight = w * scale.reshape(-1, *[1] * (w.ndim - 1))
            bias = f64(bn.bias) + (f64(conv.bias) - f64(bn.running_mean)) * scale
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
            with torch.no_grad():
                fused.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
                fused.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
            module._modules[conv_name], module._modules[bn_name] = fused.eval(), nn.Identity()
    return folded


def export_onnx(model: torch.nn.Module, spec: ModelSpec, weights: WeightsInfo, export_cfg: ExportConfig,
                out_path: Path) -> onnx.ModelProto:
    """Export the network of `spec` to `out_path`: the consumer contract (pipeline/core/onnx_io.py), the
    minimal IR version for the opset, and the description in metadata. Same inputs, same bytes."""
    h, w = spec.input_hw
    batch = 1 if export_cfg.dynamic_batch else export_cfg.static_batch
    dummy = torch.zeros(batch, 3, h, w)
    dynamic_axes = ({name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
                    if export_cfg.dynamic_batch else None)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(fold_batchnorm(model), (dummy,), buffer, dynamo=False, opset_version=export_cfg.opset,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    canonicalize_io(proto, spec)  # the exporter leaves K symbolic under dynamic batch; consumers expect it fixed
    proto.ir_version = min_ir_version(export_cfg.opset)
    proto.producer_name, proto.producer_version = "rtmpose-pipeline", ""
    set_metadata(proto, onnx_metadata(spec, weights, export_cfg.dynamic_batch))
    onnx.checker.check_model(proto)
    check_io(proto, spec, "exported model")
    onnx.save_model(proto, str(out_path))
    return proto

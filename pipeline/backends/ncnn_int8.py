"""ncnn's int8 model format, written by the project: calibrate activation scales with ncnn itself and rewrite a
fp32 `.param`/`.bin` (pnnx's) into the int8 `.param`/`.bin` that `ncnn.Net` runs with `use_int8_inference`.

The specification is ncnn's own (facts from Tencent/ncnn `tools/quantize/ncnn2table.cpp`, `net_quantize.cpp`,
`src/modelbin.cpp`, `src/layer/convolution.cpp`, `convolutiondepthwise.cpp`, `innerproduct.cpp` and the
"quantized int8 inference" doc; the code here is our own):

- A quantized layer is a Convolution, ConvolutionDepthWise or InnerProduct. Its param `8=` (int8_scale_term)
  is 2 for Convolution and InnerProduct (one weight scale per output channel) and 1 for ConvolutionDepthWise
  (one per group); +100 when the layer requantizes its output for the next int8 layer.
- Its weight blob is tagged int8 (0x000D4B38) and holds round(w x scale) clamped to [-127, 127] (C's round:
  half away from zero), padded to 4 bytes; after the bias come, untagged float32, the weight scales, then the
  input ("bottom blob") scale, then, when requantizing, the output scale of the next layer's input.
- Scales multiply: int8 = round(x x scale). Weight scale = 127 / max|w| of the output channel (group for
  depthwise); a 3x3 stride-1 dilation-1 Convolution gets 31 / max|w| (6 bits), because ncnn's int8 Winograd
  F(4,3) kernel, on by default, overflows with full 8-bit weights.
- Input scale = 127 / threshold, from the layer's input blob over the calibration crops: `maxabs` takes the
  largest |x|; `kl` (ncnn2table's default) takes the threshold whose 128-level quantization of a 2048-bin
  histogram of |x| (zeros left out, bins up to max|x|) has the least KL divergence from the clipped histogram,
  threshold = (bin + 0.5) x max|x| / 2048.
- Requantization is fused where ncnn2int8 fuses it: a quantized Convolution/ConvolutionDepthWise whose output
  feeds a quantized Convolution/ConvolutionDepthWise directly (an activation between them, as RTMPose's Swish,
  leaves nothing to fuse).

Determinism: the weights and their scales are computed in float32 by numpy from the fp32 `.bin` (pnnx's bytes
are stable), so they are the same bytes on every x86 CPU; activation scales come from ncnn's float arithmetic on
this CPU and may differ in their last bits between CPUs, like every calibrated int8 artifact's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputError, PipelineError

MAGIC = "7767517"
TAG_FP32 = 0x00000000
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
INT8_SCALE_KEY = 8  # int8_scale_term in Convolution, ConvolutionDepthWise and InnerProduct
QUANTIZABLE = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
CALIBRATION_METHODS = ("kl", "maxabs")
HISTOGRAM_BINS = 2048  # ncnn2table's KL search: histogram of |x| ...
TARGET_BINS = 128  # ... against 128 quantization levels
# ncnn layer types that hold no weights in the .bin (Tencent/ncnn src/layer/*.cpp have no load_model, or read
# nothing from the ModelBin). A type outside this set and `_blob_layout` stops the rewrite with its name.
WEIGHTLESS = frozenset({
    "AbsVal", "ArgMax", "BinaryOp", "BNLL", "Cast", "CELU", "Clip", "Concat", "Crop", "CumulativeSum", "Dequantize",
    "Dropout", "ELU", "Eltwise", "Erf", "ExpandDims", "Exp", "Flatten", "Fold", "GELU", "GLU", "GridSample",
    "HardSigmoid", "HardSwish", "Input", "Interp", "Log", "LRN", "MatMul", "Mish", "Noop", "Normalize", "Packing",
    "Padding", "Permute", "PixelShuffle", "Pooling", "Pooling1D", "Pooling3D", "Power", "ReLU", "Reduction",
    "Reorg", "Reshape", "RMSNorm", "Selu", "ShuffleChannel", "Sigmoid", "Slice", "Softmax", "Softplus", "Split",
    "Squeeze", "Swish", "TanH", "Threshold", "Tile", "UnaryOp", "Unfold",
})


@dataclass
class Layer:
    """One line of a `.param`: type, name, bottom and top blob names, and its `key=value` params as text."""

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, str]  # key -> value as written (arrays keep ncnn's `-23300-key` form and comma list)
    blobs: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of its weight blobs in the .bin

    def int_param(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))

    def line(self) -> str:
        head = f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)}"
        fields = [*self.bottoms, *self.tops, *(f"{k}={v}" for k, v in self.params.items())]
        return " ".join([head, *fields])


def read_param(param: Path) -> tuple[list[Layer], int]:
    """The layers of a text `.param` and its blob count. Raises InputError on a file that is not one."""
    lines = [line for line in param.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines or lines[0].strip() != MAGIC or len(lines) < 2:
        raise InputError(f"{param} is not an ncnn text .param (magic {MAGIC})")
    layer_count, blob_count = (int(v) for v in lines[1].split())
    layers = []
    for line in lines[2:]:
        fields = line.split()
        n_bottom, n_top = int(fields[2]), int(fields[3])
        blobs = fields[4:4 + n_bottom + n_top]
        params: dict[int, str] = {}
        for item in fields[4 + n_bottom + n_top:]:
            key, value = item.split("=", 1)
            params[int(key)] = value
        layers.append(Layer(fields[0], fields[1], blobs[:n_bottom], blobs[n_bottom:], params))
    if len(layers) != layer_count:
        raise InputError(f"{param} declares {layer_count} layers but holds {len(layers)}")
    return layers, blob_count


def write_param(path: Path, layers: list[Layer], blob_count: int) -> None:
    path.write_text("\n".join([MAGIC, f"{len(layers)} {blob_count}", *(layer.line() for layer in layers)]) + "\n",
                    encoding="utf-8")


def _blob_layout(layer: Layer) -> list[tuple[int, bool]]:
    """The blobs `load_model` reads for this layer, in order: (element count, tagged). Tagged blobs
    (ModelBin type 0) start with a 4-byte tag that says fp32/fp16/int8; untagged ones are plain float32."""
    p = layer.int_param
    if layer.type in ("Convolution", "ConvolutionDepthWise"):
        if p(19):  # dynamic_weight: the weights are an input
            return []
        blobs = [(p(6), True)] + ([(p(0), False)] if p(5) else [])
        per_channel = p(7, 1) if layer.type == "ConvolutionDepthWise" and p(INT8_SCALE_KEY) % 100 == 1 else p(0)
        if layer.type == "ConvolutionDepthWise" and p(INT8_SCALE_KEY) % 100 == 2:
            per_channel = 1
        if p(INT8_SCALE_KEY):
            blobs += [(per_channel, False), (1, False)]
        if p(INT8_SCALE_KEY) > 100:
            blobs.append((1, False))
        return blobs
    if layer.type == "InnerProduct":
        blobs = [(p(2), True)] + ([(p(0), False)] if p(1) else [])
        return blobs + ([(p(0), False), (1, False)] if p(INT8_SCALE_KEY) else [])
    if layer.type == "Gemm":
        m, n, k = p(7), p(8), p(9)
        blobs = ([(m * k, True)] if p(4) else []) + ([(n * k, True)] if p(5) else [])
        if p(6) and p(10) != -1:
            blobs.append(({0: 1, 1: m, 2: m, 3: m * n, 4: n}[p(10)], False))
        if p(18):
            raise PipelineError(f"ncnn layer {layer.name}: an int8 Gemm is not read by this writer")
        return blobs
    if layer.type == "MemoryData":
        dims = [d for d in (p(0), p(1), p(11), p(2)) if d]
        return [(int(np.prod(dims)) if dims else 1, False)]
    if layer.type in WEIGHTLESS:
        return []
    raise PipelineError(f"ncnn layer {layer.name} of type {layer.type}: its weight layout is unknown to the int8 "
                        "writer (pipeline/backends/ncnn_int8.py); add it there or keep the model in fp32/fp16")


def locate_blobs(layers: list[Layer], weights: Path) -> bytes:
    """Fill every layer's `blobs` with (offset, length) in the .bin and return the file's bytes. Raises
    PipelineError when the layout does not account for the file exactly (an unknown or damaged model)."""
    data = weights.read_bytes()
    offset = 0
    for layer in layers:
        layer.blobs = []
        for count, tagged in _blob_layout(layer):
            start = offset
            if tagged:
                (tag,) = struct.unpack_from("<I", data, offset)
                offset += 4
                if tag == TAG_FP32:
                    offset += 4 * count
                elif tag == TAG_FP16:
                    offset += (2 * count + 3) // 4 * 4
                elif tag == TAG_INT8:
                    offset += (count + 3) // 4 * 4
                else:
                    raise PipelineError(f"{weights}: layer {layer.name} has weight tag {tag:#010x}, which the int8 "
                                        "writer does not read (quantized-table weights)")
            else:
                offset += 4 * count
            layer.blobs.append((start, offset - start))
            if offset > len(data):
                raise PipelineError(f"{weights} ends inside layer {layer.name}'s weights; rebuild the fp32 model")
    if offset != len(data):
        raise PipelineError(f"{weights}: the layers read {offset} bytes of {len(data)}; the .param and .bin differ")
    return data


def fp32_weights(data: bytes, blob: tuple[int, int]) -> np.ndarray:
    """A tagged fp32 weight blob's values (float32, flat)."""
    offset, length = blob
    (tag,) = struct.unpack_from("<I", data, offset)
    if tag != TAG_FP32:
        raise PipelineError(f"the int8 writer needs fp32 weights, found tag {tag:#010x}; build from the fp32 model")
    return np.frombuffer(data, "<f4", (length - 4) // 4, offset + 4)


def weight_scales(layer: Layer, weights: np.ndarray) -> np.ndarray:
    """float32 [channels]: 127 / max|w| per output channel (per group for depthwise); 31 / max|w| for a 3x3
    stride-1 dilation-1 Convolution (ncnn's int8 Winograd needs 6-bit weights); 1 for an all-zero channel."""
    channels = layer.int_param(7, 1) if layer.type == "ConvolutionDepthWise" else layer.int_param(0)
    absmax = np.abs(weights.reshape(channels, -1)).max(axis=1)
    p = layer.int_param
    kernel = (p(1), p(11, p(1)), p(2, 1), p(12, p(2, 1)), p(3, 1), p(13, p(3, 1)))  # k_w k_h d_w d_h s_w s_h
    levels = np.float32(31 if layer.type == "Convolution" and kernel == (3, 3, 1, 1, 1, 1) else 127)
    with np.errstate(divide="ignore"):
        scales = np.where(absmax > 0, levels / absmax.astype(np.float32), np.float32(1))
    return scales.astype(np.float32)


def round_half_away(values: np.ndarray) -> np.ndarray:
    """C's round(): halves away from zero (numpy's rint rounds them to even)."""
    return np.sign(values) * np.floor(np.abs(values) + np.float32(0.5))


def quantize_weights(weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """int8 [size]: round(w x scale of its channel), clamped to [-127, 127] as ncnn's float2int8."""
    per_channel = weights.reshape(len(scales), -1) * scales[:, None]
    return np.clip(round_half_away(per_channel), -127, 127).astype(np.int8).reshape(-1)


def kl_threshold(histogram: np.ndarray) -> int:
    """The histogram bin (>= 128) at which clipping |x| loses the least information when the clipped
    distribution is quantized to 128 levels (KL divergence, ncnn2table's `kl` method with eps 1e-4)."""
    total = histogram.sum()
    if total == 0:
        return len(histogram) - 1
    normed = histogram.astype(np.float64) / total
    eps = 1e-4
    best, best_kl = TARGET_BINS, np.inf
    cumulative = np.concatenate([[0.0], np.cumsum(normed)])
    tail = normed[::-1].cumsum()[::-1]  # tail[t]: the mass at or beyond bin t
    for threshold in range(TARGET_BINS, len(normed)):
        # P: the histogram clipped at the threshold, its outliers counted in the last bin.
        clipped = normed[:threshold].copy()
        clipped[-1] += tail[threshold] if threshold < len(normed) else 0.0
        # Q: the bins below the threshold (outliers left out) on 128 levels, each level's mass spread back over
        # its non-empty bins.
        edges = np.arange(TARGET_BINS + 1) * threshold / TARGET_BINS
        level_mass = np.diff(np.interp(edges, np.arange(threshold + 1), cumulative[:threshold + 1]))
        level_of_bin = np.minimum((np.arange(threshold) * TARGET_BINS) // threshold, TARGET_BINS - 1)
        nonzero = normed[:threshold] > 0
        nonzero_bins = np.bincount(level_of_bin[nonzero], minlength=TARGET_BINS)
        expanded = np.where(nonzero, level_mass[level_of_bin] / np.maximum(nonzero_bins[level_of_bin], 1), 0.0)
        p, q = clipped + eps, expanded + eps
        kl = float(np.sum(p * np.log(p / q)))
        if kl < best_kl:
            best, best_kl = threshold, kl
    return best


@dataclass
class BlobStatistics:
    """|x| statistics of one blob over the calibration crops (two passes: max, then histogram)."""

    absmax: float = 0.0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, np.int64))

    def add_histogram(self, values: np.ndarray) -> None:
        magnitudes = np.abs(values[values != 0])
        if self.absmax > 0 and magnitudes.size:
            index = np.minimum((magnitudes / self.absmax * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
            self.histogram += np.bincount(index, minlength=HISTOGRAM_BINS)

    def scale(self, method: str) -> float:
        """127 / threshold (ncnn's multiplicative scale); 1 for a blob that was always zero."""
        if self.absmax == 0:
            return 1.0
        if method == "maxabs":
            return float(np.float32(127) / np.float32(self.absmax))
        threshold = (kl_threshold(self.histogram) + 0.5) * self.absmax / HISTOGRAM_BINS
        return float(np.float32(127) / np.float32(threshold))


def activation_scales(forward: Callable[[np.ndarray, Iterable[str]], Mapping[str, np.ndarray]],
                      inputs: np.ndarray, blobs: list[str], method: str) -> dict[str, float]:
    """Blob name -> input scale, from `forward(image [3,H,W], blob names) -> {blob: array}` (the fp32 ncnn net)
    over the calibration crops `inputs` [N,3,H,W] float32."""
    stats = {blob: BlobStatistics() for blob in blobs}
    for image in inputs:
        for blob, array in forward(image, blobs).items():
            stats[blob].absmax = max(stats[blob].absmax, float(np.abs(array).max(initial=0.0)))
    if method == "kl":
        for image in inputs:
            for blob, array in forward(image, blobs).items():
                stats[blob].add_histogram(array)
    return {blob: stats[blob].scale(method) for blob in blobs}


def _consumers(layers: list[Layer]) -> dict[str, list[Layer]]:
    found: dict[str, list[Layer]] = {}
    for layer in layers:
        for blob in layer.bottoms:
            found.setdefault(blob, []).append(layer)
    return found


def quantize(layers: list[Layer], data: bytes, chosen: list[Layer], input_scales: Mapping[str, float]) -> bytes:
    """Rewrite `chosen` layers to int8 in place (their params) and return the new .bin bytes. `input_scales`
    maps each chosen layer's input blob to its scale. Requantization is fused as module docstring says."""
    chosen_names = {layer.name for layer in chosen}
    consumers = _consumers(layers)
    new_blobs: dict[str, list[bytes]] = {}
    for layer in chosen:
        weight_blob = layer.blobs[0]
        weights = fp32_weights(data, weight_blob)
        scales = weight_scales(layer, weights)
        quantized = quantize_weights(weights, scales)
        padded = quantized.tobytes() + b"\0" * (-len(quantized) % 4)
        parts = [struct.pack("<I", TAG_INT8) + padded]
        parts += [data[offset:offset + length] for offset, length in layer.blobs[1:]]  # the bias, unchanged
        parts += [scales.tobytes(), np.float32(input_scales[layer.bottoms[0]]).tobytes()]
        term = 1 if layer.type == "ConvolutionDepthWise" else 2
        next_layers = consumers.get(layer.tops[0], [])
        if (layer.type != "InnerProduct" and len(next_layers) == 1 and next_layers[0].name in chosen_names
                and next_layers[0].type != "InnerProduct" and len(next_layers[0].bottoms) == 1):
            term += 100
            parts.append(np.float32(input_scales[next_layers[0].bottoms[0]]).tobytes())
        layer.params[INT8_SCALE_KEY] = str(term)
        new_blobs[layer.name] = parts
    out = bytearray()
    for layer in layers:
        if layer.name in new_blobs:
            out += b"".join(new_blobs[layer.name])
        else:
            out += b"".join(data[offset:offset + length] for offset, length in layer.blobs)
    return bytes(out)


def int8_layers(param: Path) -> dict[str, str]:
    """Layer name -> type of the layers a `.param` marks int8 (int8_scale_term set)."""
    layers, _ = read_param(param)
    return {layer.name: layer.type for layer in layers
            if layer.type in QUANTIZABLE and layer.int_param(INT8_SCALE_KEY)}

"""RTMPose-family top-down pose estimators (RTMPose, DWPose, RTMW) in plain PyTorch.

Papers: RTMPose https://arxiv.org/abs/2303.07399, RTMW https://arxiv.org/abs/2407.08634,
DWPose https://arxiv.org/abs/2307.15880 (a distilled RTMPose: the same network).
Upstream: open-mmlab/mmpose `mmpose/models/backbones/cspnext.py`, `mmpose/models/utils/csp_layer.py`,
`mmpose/models/necks/cspnext_pafpn.py`, `mmpose/models/heads/coord_cls_heads/rtmcc_head.py` and
`rtmw_head.py`, `mmpose/models/utils/rtmcc_block.py`.

The network is built from a `ModelSpec` (pipeline/model/spec.py), i.e. from what the model's own config
says. Attribute names follow the official checkpoint keys (`backbone.stage4.2.final_conv.bn.weight`,
`neck.top_down_blocks.0.main_conv.conv.weight`, `head.gau.uv.weight`, ...) so that official
state_dicts load strictly, without a remap table. Only the inference path is implemented: no
relative position bias, no rotary encoding, no dropout or drop-path (all off in every released config;
pipeline/sources/mmpose_config.py refuses configs that turn them on).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.core.errors import ConfigError
from pipeline.model.spec import BackboneSpec, HeadSpec, ModelSpec, NeckSpec

# CSPNeXt P5: (in_channels, out_channels, num_blocks, add_identity, use_spp) before scaling.
P5_STAGES = ((64, 128, 3, True, False), (128, 256, 6, True, False),
             (256, 512, 6, True, False), (512, 1024, 3, False, True))
SPP_KERNELS = (5, 9, 13)
ACTIVATIONS = {"SiLU": nn.SiLU, "Swish": nn.SiLU, "ReLU": nn.ReLU}  # mmcv's Swish is SiLU


class ConvModule(nn.Sequential):
    """conv (no bias) -> BatchNorm -> activation, keys `.conv` and `.bn` like mmcv's ConvModule."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, eps: float = 1e-5,
                 act: str = "SiLU"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)
        self.activate = ACTIVATIONS[act]()


class DepthwiseSeparableConvModule(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, eps: float):
        super().__init__()
        self.depthwise_conv = ConvModule(cin, cin, k, groups=cin, eps=eps)
        self.pointwise_conv = ConvModule(cin, cout, 1, eps=eps)


class CSPNeXtBlock(nn.Module):
    def __init__(self, channels: int, add_identity: bool, eps: float):
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 3, eps=eps)
        self.conv2 = DepthwiseSeparableConvModule(channels, channels, 5, eps)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class ChannelAttention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.hardsigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))
        return x * weight


class CSPLayer(nn.Module):
    """mmpose's CSPLayer with CSPNeXt blocks; the backbone's has channel attention, the neck's not."""

    def __init__(self, cin: int, cout: int, num_blocks: int, add_identity: bool, expand_ratio: float,
                 channel_attention: bool, eps: float):
        super().__init__()
        mid = int(cout * expand_ratio)
        self.main_conv = ConvModule(cin, mid, 1, eps=eps)
        self.short_conv = ConvModule(cin, mid, 1, eps=eps)
        self.final_conv = ConvModule(2 * mid, cout, 1, eps=eps)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, add_identity, eps) for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Concat order matters for the checkpoint: main branch first, then the shortcut.
        x_final = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        if self.attention is not None:
            x_final = self.attention(x_final)
        return self.final_conv(x_final)


class SPPBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float, kernels: tuple[int, ...] = SPP_KERNELS):
        super().__init__()
        mid = cin // 2
        self.conv1 = ConvModule(cin, mid, 1, eps=eps)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.conv2 = ConvModule(mid * (len(kernels) + 1), cout, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


def stage_channels(widen_factor: float) -> list[int]:
    """Output channels of [stem, stage1..stage4]: what `out_indices` select."""
    return [int(P5_STAGES[0][0] * widen_factor)] + [int(cout * widen_factor) for _, cout, *_ in P5_STAGES]


class CSPNeXt(nn.Module):
    """CSPNeXt P5 backbone returning the maps of `out_indices` (0 stem, 1..4 stages; RTMPose uses (4,))."""

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        widen, eps = spec.widen_factor, spec.norm_eps
        stem_out = int(P5_STAGES[0][0] * widen)
        stem_mid = int(P5_STAGES[0][0] * widen // 2)
        self.stem = nn.Sequential(
            ConvModule(3, stem_mid, 3, stride=2, eps=eps),
            ConvModule(stem_mid, stem_mid, 3, eps=eps),
            ConvModule(stem_mid, stem_out, 3, eps=eps),
        )
        for i, (cin, cout, blocks, add_identity, use_spp) in enumerate(P5_STAGES, start=1):
            cin, cout = int(cin * widen), int(cout * widen)
            layers: list[nn.Module] = [ConvModule(cin, cout, 3, stride=2, eps=eps)]
            if use_spp:
                layers.append(SPPBottleneck(cout, cout, eps))
            layers.append(CSPLayer(cout, cout, max(round(blocks * spec.deepen_factor), 1), add_identity,
                                   spec.expand_ratio, spec.channel_attention, eps))
            self.add_module(f"stage{i}", nn.Sequential(*layers))
        self.out_indices = tuple(spec.out_indices)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for i, layer in enumerate((self.stem, self.stage1, self.stage2, self.stage3, self.stage4)):
            x = layer(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class CSPNeXtPAFPN(nn.Module):
    """RTMW's neck: top-down then bottom-up path aggregation over the backbone maps (no out convs)."""

    def __init__(self, spec: NeckSpec):
        super().__init__()
        chans, eps = list(spec.in_channels), spec.norm_eps

        def csp(cin: int, cout: int) -> CSPLayer:
            return CSPLayer(cin, cout, spec.num_csp_blocks, False, spec.expand_ratio, False, eps)

        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.reduce_layers = nn.ModuleList(ConvModule(chans[i], chans[i - 1], 1, eps=eps)
                                           for i in range(len(chans) - 1, 0, -1))
        self.top_down_blocks = nn.ModuleList(csp(chans[i - 1] * 2, chans[i - 1]) for i in range(len(chans) - 1, 0, -1))
        self.downsamples = nn.ModuleList(ConvModule(chans[i], chans[i], 3, stride=2, eps=eps)
                                         for i in range(len(chans) - 1))
        self.bottom_up_blocks = nn.ModuleList(csp(chans[i] * 2, chans[i + 1]) for i in range(len(chans) - 1))
        self.out_indices = tuple(spec.out_indices)

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        levels = len(inputs)
        inner = [inputs[-1]]
        for j, idx in enumerate(range(levels - 1, 0, -1)):
            high = self.reduce_layers[j](inner[0])
            inner[0] = high
            inner.insert(0, self.top_down_blocks[j](torch.cat([self.upsample(high), inputs[idx - 1]], 1)))
        outs = [inner[0]]
        for idx in range(levels - 1):
            outs.append(self.bottom_up_blocks[idx](torch.cat([self.downsamples[idx](outs[-1]), inner[idx + 1]], 1)))
        return tuple(outs[i] for i in self.out_indices)


class ScaleNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class Scale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class RTMCCBlock(nn.Module):
    """Gated attention unit, self-attention form, as configured in every released model."""

    def __init__(self, dim: int, s: int, expansion: int, act: str):
        super().__init__()
        self.e = dim * expansion
        self.s = s
        self.uv = nn.Linear(dim, 2 * self.e + s, bias=False)
        self.gamma = nn.Parameter(torch.ones(2, s))
        self.beta = nn.Parameter(torch.zeros(2, s))
        self.o = nn.Linear(self.e, dim, bias=False)
        self.ln = ScaleNorm(dim)
        self.res_scale = Scale(dim)
        self.act = ACTIVATIONS[act]()
        self.sqrt_s = math.sqrt(s)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        uv = self.act(self.uv(self.ln(inputs)))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=2)
        q, k = torch.unbind(base.unsqueeze(2) * self.gamma + self.beta, dim=2)
        kernel = torch.square(F.relu(torch.bmm(q, k.transpose(1, 2)) / self.sqrt_s))
        return self.res_scale(inputs) + self.o(u * torch.bmm(kernel, v))


def _simcc_bins(spec: ModelSpec) -> tuple[int, int]:
    return spec.simcc_shapes["simcc_x"][1], spec.simcc_shapes["simcc_y"][1]


class RTMCCHead(nn.Module):
    """RTMPose's head: 7x7 conv to K maps, flatten, ScaleNorm + Linear, GAU, SimCC classifiers."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        head: HeadSpec = spec.head
        fw, fh = head.in_featuremap_size
        k = head.final_layer_kernel_size
        self.final_layer = nn.Conv2d(head.in_channels, head.out_channels, k, padding=k // 2)
        self.mlp = nn.Sequential(ScaleNorm(fw * fh), nn.Linear(fw * fh, head.hidden_dims, bias=False))
        self.gau = RTMCCBlock(head.hidden_dims, head.s, head.expansion_factor, head.act_fn)
        bins_x, bins_y = _simcc_bins(spec)
        self.cls_x = nn.Linear(head.hidden_dims, bins_x, bias=False)
        self.cls_y = nn.Linear(head.hidden_dims, bins_y, bias=False)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.gau(self.mlp(torch.flatten(self.final_layer(feats[-1]), 2)))
        return self.cls_x(tokens), self.cls_y(tokens)


class RTMWHead(nn.Module):
    """RTMW's head: the stride-32 map as in RTMCCHead, plus a pixel-shuffled decoder branch joined with
    the stride-16 map; both token sets (hidden/2 each) are concatenated before the GAU."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        head: HeadSpec = spec.head
        cin, kpts, k = head.in_channels, head.out_channels, head.final_layer_kernel_size
        fw, fh = head.in_featuremap_size
        self.ps = nn.PixelShuffle(2)
        self.conv_dec = ConvModule(cin // 4, cin // 4, k, act="ReLU")
        self.final_layer = ConvModule(cin, kpts, k, act="ReLU")
        self.final_layer2 = ConvModule(cin // 2 + cin // 4, kpts, k, act="ReLU")
        self.mlp = nn.Sequential(ScaleNorm(fw * fh), nn.Linear(fw * fh, head.hidden_dims // 2, bias=False))
        self.mlp2 = nn.Sequential(ScaleNorm(fw * fh * 4), nn.Linear(fw * fh * 4, head.hidden_dims // 2, bias=False))
        self.gau = RTMCCBlock(head.hidden_dims, head.s, head.expansion_factor, head.act_fn)
        bins_x, bins_y = _simcc_bins(spec)
        self.cls_x = nn.Linear(head.hidden_dims, bins_x, bias=False)
        self.cls_y = nn.Linear(head.hidden_dims, bins_y, bias=False)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        enc_b, enc_t = feats
        tokens_t = self.mlp(torch.flatten(self.final_layer(enc_t), 2))
        enc_b = torch.cat([self.conv_dec(self.ps(enc_t)), enc_b], dim=1)
        tokens_b = self.mlp2(torch.flatten(self.final_layer2(enc_b), 2))
        tokens = self.gau(torch.cat([tokens_t, tokens_b], dim=2))
        return self.cls_x(tokens), self.cls_y(tokens)


HEADS = {"RTMCCHead": RTMCCHead, "RTMWHead": RTMWHead}


class RTMPose(nn.Module):
    """Image [N,3,H,W] (normalised, in the spec's channel order) -> (simcc_x [N,K,Wx], simcc_y [N,K,Wy])
    raw SimCC logits, Wx = W * split ratio, Wy = H * split ratio."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.backbone = CSPNeXt(spec.backbone)
        self.neck = CSPNeXtPAFPN(spec.neck) if spec.neck is not None else None
        self.head = HEADS[spec.head.type](spec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        return self.head(feats)


def build_network(spec: ModelSpec) -> RTMPose:
    """The plain-PyTorch network a description fixes, freshly initialised, in train mode.

    Raises ConfigError for a description without a network (an ONNX source)."""
    if not spec.has_network:
        raise ConfigError(f"{spec.name} is described by an ONNX graph; there is no PyTorch network to build")
    return RTMPose(spec)

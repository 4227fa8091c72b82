"""RTMPose top-down pose estimator (CSPNeXt backbone + RTMCC SimCC head) in plain PyTorch.

Paper: RTMPose, https://arxiv.org/abs/2303.07399
Upstream: open-mmlab/mmpose `mmpose/models/backbones/cspnext.py`, `mmpose/models/utils/csp_layer.py`,
`mmpose/models/heads/coord_cls_heads/rtmcc_head.py`, `mmpose/models/utils/rtmcc_block.py`.

Attribute names follow the official checkpoint keys (`backbone.stage4.2.final_conv.bn.weight`,
`head.gau.uv.weight`, ...) so that official state_dicts load strictly, without a remap table.
Only the inference path of the released configs is implemented: no relative position bias,
no rotary encoding, no dropout or drop-path (all are off in every released RTMPose config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ArchConfig:
    """Everything that fixes the tensor shapes of one RTMPose variant."""

    deepen_factor: float
    widen_factor: float
    num_keypoints: int
    input_hw: tuple[int, int]
    simcc_split_ratio: float = 2.0
    gau_hidden: int = 256
    gau_s: int = 128
    gau_expansion: int = 2
    final_kernel: int = 7


# CSPNeXt P5: (in_channels, out_channels, num_blocks, add_identity, use_spp) before scaling.
P5_STAGES = ((64, 128, 3, True, False), (128, 256, 6, True, False),
             (256, 512, 6, True, False), (512, 1024, 3, False, True))
SPP_KERNELS = (5, 9, 13)
BN_EPS = 1e-5  # released configs use SyncBN with the default eps


class ConvModule(nn.Sequential):
    """conv (no bias) -> BatchNorm -> SiLU, keys `.conv` and `.bn` like mmcv's ConvModule."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.activate = nn.SiLU()


class DepthwiseSeparableConvModule(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.depthwise_conv = ConvModule(cin, cin, k, groups=cin)
        self.pointwise_conv = ConvModule(cin, cout, 1)


class CSPNeXtBlock(nn.Module):
    def __init__(self, channels: int, add_identity: bool):
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 3)
        self.conv2 = DepthwiseSeparableConvModule(channels, channels, 5)
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
    def __init__(self, cin: int, cout: int, num_blocks: int, add_identity: bool, expand_ratio: float = 0.5):
        super().__init__()
        mid = int(cout * expand_ratio)
        self.main_conv = ConvModule(cin, mid, 1)
        self.short_conv = ConvModule(cin, mid, 1)
        self.final_conv = ConvModule(2 * mid, cout, 1)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, add_identity) for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Concat order matters for the checkpoint: main branch first, then the shortcut.
        x_final = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        return self.final_conv(self.attention(x_final))


class SPPBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...] = SPP_KERNELS):
        super().__init__()
        mid = cin // 2
        self.conv1 = ConvModule(cin, mid, 1)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.conv2 = ConvModule(mid * (len(kernels) + 1), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


class CSPNeXt(nn.Module):
    """CSPNeXt P5 backbone returning only the stride-32 feature map (out_indices=(4,))."""

    def __init__(self, deepen_factor: float, widen_factor: float):
        super().__init__()
        stem_out = int(P5_STAGES[0][0] * widen_factor)
        stem_mid = int(P5_STAGES[0][0] * widen_factor // 2)
        self.stem = nn.Sequential(
            ConvModule(3, stem_mid, 3, stride=2),
            ConvModule(stem_mid, stem_mid, 3),
            ConvModule(stem_mid, stem_out, 3),
        )
        for i, (cin, cout, blocks, add_identity, use_spp) in enumerate(P5_STAGES, start=1):
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            layers: list[nn.Module] = [ConvModule(cin, cout, 3, stride=2)]
            if use_spp:
                layers.append(SPPBottleneck(cout, cout))
            layers.append(CSPLayer(cout, cout, max(round(blocks * deepen_factor), 1), add_identity))
            self.add_module(f"stage{i}", nn.Sequential(*layers))
        self.out_channels = int(P5_STAGES[-1][1] * widen_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))


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
    """Gated attention unit, self-attention form, as configured in every released RTMPose."""

    def __init__(self, dim: int, s: int, expansion: int):
        super().__init__()
        self.e = dim * expansion
        self.s = s
        self.uv = nn.Linear(dim, 2 * self.e + s, bias=False)
        self.gamma = nn.Parameter(torch.ones(2, s))
        self.beta = nn.Parameter(torch.zeros(2, s))
        self.o = nn.Linear(self.e, dim, bias=False)
        self.ln = ScaleNorm(dim)
        self.res_scale = Scale(dim)
        self.sqrt_s = math.sqrt(s)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        uv = F.silu(self.uv(self.ln(inputs)))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=2)
        q, k = torch.unbind(base.unsqueeze(2) * self.gamma + self.beta, dim=2)
        kernel = torch.square(F.relu(torch.bmm(q, k.transpose(1, 2)) / self.sqrt_s))
        return self.res_scale(inputs) + self.o(u * torch.bmm(kernel, v))


class RTMCCHead(nn.Module):
    def __init__(self, in_channels: int, arch: ArchConfig):
        super().__init__()
        h, w = arch.input_hw
        flat = (h // 32) * (w // 32)
        self.final_layer = nn.Conv2d(in_channels, arch.num_keypoints, arch.final_kernel,
                                     padding=arch.final_kernel // 2)
        self.mlp = nn.Sequential(ScaleNorm(flat), nn.Linear(flat, arch.gau_hidden, bias=False))
        self.gau = RTMCCBlock(arch.gau_hidden, arch.gau_s, arch.gau_expansion)
        self.cls_x = nn.Linear(arch.gau_hidden, int(w * arch.simcc_split_ratio), bias=False)
        self.cls_y = nn.Linear(arch.gau_hidden, int(h * arch.simcc_split_ratio), bias=False)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.gau(self.mlp(torch.flatten(self.final_layer(feats), 2)))
        return self.cls_x(tokens), self.cls_y(tokens)


class RTMPose(nn.Module):
    """Image [N,3,H,W] (normalised RGB) -> (simcc_x [N,K,2W], simcc_y [N,K,2H]) raw logits."""

    def __init__(self, arch: ArchConfig):
        super().__init__()
        h, w = arch.input_hw
        if h % 32 or w % 32:
            raise ValueError(f"input size {h}x{w} must be a multiple of 32 in both dimensions")
        self.arch = arch
        self.backbone = CSPNeXt(arch.deepen_factor, arch.widen_factor)
        self.head = RTMCCHead(self.backbone.out_channels, arch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))

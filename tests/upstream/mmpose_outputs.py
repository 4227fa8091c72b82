"""Run mmpose's own CSPNeXt + RTMCCHead on a state_dict and inputs; print outputs as .npz.

Usage: python tests/upstream/mmpose_outputs.py <variant> <state_dict.pt> <inputs.npy> <out.npz>

Only the model modules are imported (see mmpose_import.py: mmpose's package __init__ files pull in
dataset and mmdet code with compiled extensions that the model does not use). Runs in its own
process so that none of this leaks into the test session. mmpose_model_outputs.py does the same
for a checkpoint file, building the model from the file's own config.
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# this checkout's `pipeline`, not whatever an editable install points at
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
from mmpose_import import import_mmpose  # noqa: E402


def import_mmpose_model_classes():
    mm = import_mmpose()
    return mm.CSPNeXt, mm.RTMCCHead


class MMPoseRTMPose(torch.nn.Module):
    """The released RTMPose config (e.g. rtmpose-m_8xb256-420e_coco-256x192.py), model part only."""

    def __init__(self, deepen, widen, num_keypoints, input_hw):
        super().__init__()
        CSPNeXt, RTMCCHead = import_mmpose_model_classes()
        h, w = input_hw
        self.backbone = CSPNeXt(arch="P5", expand_ratio=0.5, deepen_factor=deepen, widen_factor=widen,
                                out_indices=(4,), channel_attention=True, norm_cfg=dict(type="BN"),
                                act_cfg=dict(type="SiLU"))
        self.head = RTMCCHead(in_channels=int(1024 * widen), out_channels=num_keypoints, input_size=(w, h),
                              in_featuremap_size=(w // 32, h // 32), simcc_split_ratio=2.0,
                              final_layer_kernel_size=7,
                              gau_cfg=dict(hidden_dims=256, s=128, expansion_factor=2, dropout_rate=0.0,
                                           drop_path=0.0, act_fn="SiLU", use_rel_bias=False, pos_enc=False),
                              loss=dict(type="KLDiscretLoss", use_target_weight=True, beta=10.0,
                                        label_softmax=True))

    def forward(self, x):
        return self.head.forward(self.backbone(x))


def main(variant_name, state_path, inputs_path, out_path):
    from pipeline.model.presets import preset_spec

    spec = preset_spec(variant_name)
    model = MMPoseRTMPose(spec.backbone.deepen_factor, spec.backbone.widen_factor, spec.num_keypoints,
                          spec.input_hw).eval()
    model.load_state_dict(torch.load(state_path, weights_only=True), strict=True)
    with torch.no_grad():
        simcc_x, simcc_y = model(torch.from_numpy(np.load(inputs_path)))
    np.savez(out_path, simcc_x=simcc_x.numpy(), simcc_y=simcc_y.numpy())


if __name__ == "__main__":
    main(*sys.argv[1:5])

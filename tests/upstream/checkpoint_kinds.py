"""The fixture kinds and file forms of make_checkpoints.py, importable without torch or mmpose.

make_checkpoints.py's docstring says what each kind and form is and how the files are made;
tests/mmpose_files.py reads this table to parametrize tests at collection time.
"""

from __future__ import annotations

from dataclasses import dataclass

FORMS = ("publish", "train", "ema", "state_dict", "state_dict-module", "state_dict-model",
         "publish-fp16", "publish-bf16", "transfer")


@dataclass(frozen=True)
class Kind:
    config: str  # under mmpose/.mim/configs
    num_keypoints: int
    input_size: tuple[int, int]  # (W, H), as mmpose writes it
    edit: str = ""  # name of a function in make_checkpoints.EDITS that rewrites the config text

    @property
    def has_ema(self) -> bool:
        """The config trains with EMAHook (rtmpose-t's switches it off)."""
        return "rtmpose-t_" not in self.config

    @property
    def is_dwpose(self) -> bool:
        return "/dwpose/" in self.config

    @property
    def forms(self) -> tuple[str, ...]:
        """The forms make_checkpoints.py writes for this kind."""
        if self.is_dwpose:
            return ("publish", "transfer")
        return tuple(f for f in FORMS if f != "transfer" and (f != "ema" or self.has_ema))


KINDS: dict[str, Kind] = {
    "rtmpose-t_coco17_256x192": Kind("body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py", 17, (192, 256)),
    "rtmpose-s_coco17_256x192": Kind("body_2d_keypoint/rtmpose/coco/rtmpose-s_8xb256-420e_coco-256x192.py", 17, (192, 256)),
    "rtmpose-m_coco17_256x192": Kind("body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py", 17, (192, 256)),
    "rtmpose-l_coco17_256x192": Kind("body_2d_keypoint/rtmpose/coco/rtmpose-l_8xb256-420e_coco-256x192.py", 17, (192, 256)),
    "rtmpose-m_coco17_384x288": Kind("body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_aic-coco-384x288.py", 17, (288, 384)),
    "rtmpose-m_wholebody133_256x192": Kind(
        "wholebody_2d_keypoint/rtmpose/coco-wholebody/rtmpose-m_8xb64-270e_coco-wholebody-256x192.py", 133, (192, 256)),
    "rtmpose-m_hand21_256x256": Kind("hand_2d_keypoint/rtmpose/hand5/rtmpose-m_8xb256-210e_hand5-256x256.py", 21, (256, 256)),
    "rtmpose-m_lapa106_256x256": Kind("face_2d_keypoint/rtmpose/lapa/rtmpose-m_8xb64-120e_lapa-256x256.py", 106, (256, 256)),
    "rtmpose-m_wflw98_256x256": Kind("face_2d_keypoint/rtmpose/wflw/rtmpose-m_8xb64-60e_wflw-256x256.py", 98, (256, 256)),
    "rtmpose-m_face68_256x256": Kind(
        "face_2d_keypoint/rtmpose/coco_wholebody_face/rtmpose-m_8xb32-60e_coco-wholebody-face-256x256.py", 68, (256, 256)),
    "rtmpose-m_crowdpose14_256x192": Kind(
        "body_2d_keypoint/rtmpose/crowdpose/rtmpose-m_8xb64-210e_crowdpose-256x192.py", 14, (192, 256)),
    "rtmpose-m_mpii16_256x256": Kind("body_2d_keypoint/rtmpose/mpii/rtmpose-m_8xb64-210e_mpii-256x256.py", 16, (256, 256)),
    "rtmpose-m_custom38_256x192": Kind(
        "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py", 38, (192, 256), edit="custom38"),
    "rtmpose-m_coco17_320x240": Kind(
        "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py", 17, (240, 320), edit="size320x240"),
    "rtmw-m_wholebody133_256x192": Kind(
        "wholebody_2d_keypoint/rtmpose/cocktail14/rtmw-m_8xb1024-270e_cocktail14-256x192.py", 133, (192, 256)),
    "dwpose-l_wholebody133_256x192": Kind(
        "wholebody_2d_keypoint/dwpose/ubody/s2_dis/dwpose_l-ll_coco-ubody-256x192.py", 133, (192, 256)),
}

# Kinds whose codec settings differ from the released configs: made like the others, kept out of KINDS
# (whose every kind converts and is compared with mmpose) because they test a refusal or a manifest entry.
CODEC_KINDS: dict[str, Kind] = {
    # mmdeploy#2696: a head and codec at simcc_split_ratio 3.0 (the head's bins follow the ratio)
    "rtmpose-m_coco17_256x192-ratio3": Kind(
        "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py", 17, (192, 256), edit="ratio3"),
    # mmdeploy#2316: the codec decodes with DARK refinement
    "rtmpose-m_coco17_256x192-dark": Kind(
        "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py", 17, (192, 256), edit="dark"),
}
ALL_KINDS: dict[str, Kind] = {**KINDS, **CODEC_KINDS}

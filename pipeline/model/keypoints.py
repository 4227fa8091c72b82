"""Keypoint sets of the released RTMPose models, with the names mmpose's dataset metas use.

Sources: mmpose `configs/_base_/datasets/coco.py`, `halpe26.py`, `coco_wholebody.py`,
`coco_wholebody_hand.py` (hand21) and `lapa.py` (face106).
"""

from __future__ import annotations

COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# Limbs as index pairs into COCO17, for drawing and for the procedural demo figures.
COCO17_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

HALPE26 = COCO17 + (
    "head", "neck", "hip", "left_big_toe", "right_big_toe", "left_small_toe",
    "right_small_toe", "left_heel", "right_heel",
)

_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")


def _hand(prefix: str, root: str) -> tuple[str, ...]:
    return (root,) + tuple(f"{prefix}{finger}{i}" for finger in _FINGERS for i in range(1, 5))


HAND21 = _hand("", "wrist")

WHOLEBODY133 = (
    COCO17
    + ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")
    + tuple(f"face-{i}" for i in range(68))
    + _hand("left_", "left_hand_root")
    + _hand("right_", "right_hand_root")
)

FACE106 = tuple(f"face-{i}" for i in range(106))

KEYPOINT_SETS: dict[str, tuple[str, ...]] = {
    "coco17": COCO17,
    "halpe26": HALPE26,
    "wholebody133": WHOLEBODY133,
    "hand21": HAND21,
    "face106": FACE106,
}


def skeleton_for(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """Limbs for drawing a set whose file gives none: the COCO-17 body where the names start with it."""
    return COCO17_SKELETON if tuple(names[:len(COCO17)]) == COCO17 else ()

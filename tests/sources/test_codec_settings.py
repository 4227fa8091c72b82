"""The file's own statements come first (#21): meta.cfg's split ratio and input size are read before the tensor
shapes, overrides are checked against them, and codec decode settings this project does not implement are refused.

Files made by mmpose 1.3.2 itself (tests/mmpose_files.py; kinds in tests/upstream/checkpoint_kinds.py CODEC_KINDS).
"""

from __future__ import annotations

import pytest

from pipeline.config import ModelConfig
from pipeline.core.errors import ConfigError, InputError
from pipeline.sources.describe import describe

RATIO3 = "rtmpose-m_coco17_256x192-ratio3"
DARK = "rtmpose-m_coco17_256x192-dark"


@pytest.fixture(scope="module")
def files(mmpose_files):
    paths = mmpose_files.make((RATIO3, "publish"), (DARK, "publish"))
    return dict(zip((RATIO3, DARK), paths))


def test_a_split_ratio_3_file_is_described_from_its_meta_cfg(files):
    spec = describe(ModelConfig(checkpoint=str(files[RATIO3])))
    assert spec.codec.simcc_split_ratio == 3.0 and tuple(spec.codec.input_size) == (192, 256)
    assert spec.source["architecture"].endswith("(meta.cfg)") and spec.keypoints.names[0] == "nose"
    assert describe(ModelConfig(checkpoint=str(files[RATIO3]), simcc_split_ratio=3.0)) == spec


@pytest.mark.parametrize("override, line", [
    ({"simcc_split_ratio": 2.0}, "model.simcc_split_ratio=2.0 contradicts model.checkpoint={path}, whose meta.cfg "
                                 "states simcc_split_ratio=3.0; drop the override"),
    ({"input_size": [256, 192]}, "model.input_size=[256, 192] contradicts model.checkpoint={path}, whose meta.cfg "
                                 "states input_size=[192, 256] (W, H); drop the override"),
])
def test_an_override_that_contradicts_meta_cfg_fails_with_one_line(files, override, line):
    with pytest.raises(ConfigError) as info:
        describe(ModelConfig(checkpoint=str(files[RATIO3]), **override))
    assert str(info.value) == line.format(path=files[RATIO3])


def test_a_dark_codec_is_refused_naming_the_setting(files):
    with pytest.raises(InputError, match=r"codec\.use_dark=True: DARK refinement is not implemented by this "
                                         r"project's decode") as info:
        describe(ModelConfig(checkpoint=str(files[DARK])))
    assert "\n" not in str(info.value)


def test_decode_visibility_is_refused_and_normalize_is_not(files):
    """`normalize` scales only SimCCLabel's training targets (encode); `decode_visibility` adds an output."""
    from pipeline.sources.checkpoint import load_weights
    from pipeline.sources.mmpose_config import parse_config_text, spec_from_config

    config = parse_config_text(load_weights(files[RATIO3]).meta["cfg"])
    decoder = config["model"]["head"]["decoder"]
    for key, value, refused in (("decode_visibility", True, True), ("normalize", True, False)):
        edited = {**config, "model": {**config["model"], "head": {**config["model"]["head"],
                                                                  "decoder": {**decoder, key: value}}}}
        if refused:
            with pytest.raises(InputError, match=rf"codec\.{key}=True: "):
                spec_from_config(edited, "x", None, "file.pth")
        else:
            assert spec_from_config(edited, "x", None, "file.pth").codec.simcc_split_ratio == 3.0

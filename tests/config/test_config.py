"""Config composition: every group option and target composes and validates; every mistake is a
ConfigError naming the key; params.yaml is in sync with conf/; the plan's names and paths."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from pipeline.backends import TARGETS
from pipeline.config import (
    CALIBRATE_METHODS,
    CALIBRATION_SOURCES,
    CONF_DIR,
    INT8_FLOAT_PARTS,
    PRECISION_HINTS,
    SIMPLIFY_TOOLS,
    RunConfig,
    dump_yaml,
)
from pipeline.core.errors import ConfigError
from pipeline.demo.config import PROGRESS_MODES, load_train_demo_config
from pipeline.model.presets import all_presets
from pipeline.planning.plan import job_paths, variant_paths
from pipeline.run.configure import compose, load_config

from conftest import FP32_TARGETS, REPO_ROOT, VARIANT, run_python

GROUP_OPTIONS = sorted((group.name, option.stem) for group in CONF_DIR.iterdir()
                       if group.is_dir() and group.name != "local"  # git-ignored, machine-specific
                       for option in group.glob("*.yaml"))


def compose_in(tmp_path: Path, *overrides: str):
    return load_config(["model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"out_dir={tmp_path}", *overrides])


def test_every_preset_is_a_model_option_without_a_file():
    from hydra.core.config_store import ConfigStore

    from pipeline.planning.plan import register_resolvers

    register_resolvers()
    options = {name.removesuffix(".yaml") for name in ConfigStore.instance().repo["model"]}
    assert options == {*all_presets(), "demo"} and len(all_presets()) == 75
    assert not (CONF_DIR / "model").exists()  # composed from pipeline/model/presets.py, not generated files


@pytest.mark.parametrize("preset", ["rtmpose-t_coco17_256x192", "rtmpose-s_halpe26_384x288",
                                    "rtmpose-x_wholebody133_256x256", "rtmpose-l_face106_256x192"])
def test_model_presets_compose_into_their_description(preset, tmp_path):
    cfg = compose_in(tmp_path, f"model={preset}", "model.checkpoint=null")
    assert (cfg.model.preset, list(cfg.plan["variants"])) == (preset, [preset])
    spec = cfg.plan["variants"][preset]["spec"]
    h, w = (int(v) for v in preset.rsplit("_", 1)[1].split("x"))
    assert spec["codec"]["input_size"] == [w, h] and spec["head"]["type"] == "RTMCCHead"


def test_the_default_model_is_the_demo_file_described_by_itself(tmp_path):
    cfg = load_config([f"out_dir={tmp_path}"])
    (name, entry), = cfg.plan["variants"].items()
    assert (cfg.model.preset, name) == (None, VARIANT)  # named by the file's experiment_name
    assert entry["spec"]["source"]["architecture"].endswith("(meta.cfg)")


@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes_and_validates(group, option, tmp_path):
    cfg = compose_in(tmp_path, f"{group}={option}")
    if group == "simplify":
        assert cfg.simplify.tool == option


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_composes(target, tmp_path):
    cfg = compose_in(tmp_path, f"targets=[{target}]")
    job = f"{VARIANT}.{target}"
    # A target this host cannot run (TensorRT without a GPU) is left out of the plan with a reason.
    assert job in cfg.plan["jobs"] or cfg.plan.get("left_out", {}).get(job)
    if job in cfg.plan["jobs"]:
        assert cfg.plan["jobs"][job]["target"] == target


def is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def test_plan_names_jobs_variant_dot_target_and_keeps_paths_under_out_dir(tmp_path):
    cfg = compose_in(tmp_path, f"targets=[{','.join(FP32_TARGETS)}]")
    assert list(cfg.plan["variants"]) == [VARIANT]
    assert sorted(cfg.plan["jobs"]) == sorted(f"{VARIANT}.{t}" for t in FP32_TARGETS)
    out_dir, root = str(tmp_path), str(tmp_path / VARIANT)
    variant = cfg.plan["variants"][VARIANT]
    assert variant["weights"] == "pipeline/model/synthetic.py"  # a code dependency, not an output
    outputs = {k: v for k, v in variant.items() if isinstance(v, str) and "/" in v and k != "weights"}
    assert set(variant_paths(out_dir, VARIANT)) <= set(outputs)
    assert all(is_under(path, out_dir) for path in outputs.values()), outputs
    for name, job in cfg.plan["jobs"].items():
        variant_name, _, target = name.partition(".")
        assert (job["variant"], job["target"]) == (variant_name, target)
        assert (job["backend"], job["precision"]) == tuple(target.split("-"))
        for key in ("onnx", "reference", *job_paths(out_dir, VARIANT, target)):
            assert is_under(job[key], root), key
    metrics = [job["metrics"] for job in cfg.plan["jobs"].values()]
    artifacts = [job["artifact"] for job in cfg.plan["jobs"].values()]
    assert len(set(metrics)) == len(set(artifacts)) == len(FP32_TARGETS)  # no two jobs share a file


@pytest.mark.parametrize("overrides, fragments", [
    (["targets=[nope-fp32]"], ["unknown target 'nope-fp32'", "onnxruntime-fp32", "openvino-fp32"]),
    (["model=rtmpose-q_coco17_256x192"], ["rtmpose-q_coco17_256x192", "unknown scale 'q'", "t, s, m, l, x"]),
    (["model.name=my/model"], ["model.name='my/model' is not a usable model name", "no dots, slashes"]),
    (["model.input_size=[192,256,3]"], ["model.input_size=[192, 256, 3] must be [W, H]"]),
    (["export.opsett=11"], ["export.opsett"]),
    (["+export.opsett=11"], ["export.opsett", "opsett"]),
    (["export.opset=eleven"], ["export.opset", "eleven"]),
    (["simplify=onnxsimplifier"], ["simplify=onnxsimplifier", "none, onnxsim, onnxslim"]),
    (["export.opset=6"], ["export.opset=6", "7..21"]),
    (["export.opset=22"], ["export.opset=22", "7..21"]),
    (["targets=[]"], ["targets is empty"]),
])
def test_mistakes_are_config_errors_naming_the_key(overrides, fragments, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(fragments[0])) as info:
        compose_in(tmp_path, *overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


ENUM_TYPOS = [("simplify.tool", "onnxsimplifier", SIMPLIFY_TOOLS), ("calibration.source", "cocoo", CALIBRATION_SOURCES),
              ("quantize.calibrate_method", "max", CALIBRATE_METHODS),
              ("backends.openvino.int8_float_part", "fp32", INT8_FLOAT_PARTS),
              ("backends.openvino.inference_precision_hint", "fp16", PRECISION_HINTS)]


def _one_line_naming(message: str, key: str, typo: str, choices: tuple[str, ...]) -> None:
    assert "\n" not in message and f"{key!r}" in message and f"{typo!r} is not one of" in message
    assert message.endswith(", ".join(repr(c) for c in choices)), message


@pytest.mark.parametrize("key, typo, choices", ENUM_TYPOS, ids=[key for key, _, _ in ENUM_TYPOS])
def test_a_typo_in_an_enum_like_field_fails_at_load_naming_the_key_and_the_choices(key, typo, choices, tmp_path):
    with pytest.raises(ConfigError) as info:
        compose_in(tmp_path, f"{key}={typo}")
    _one_line_naming(str(info.value), key, typo, choices)


def test_a_typo_in_the_demo_progress_mode_fails_at_load():
    with pytest.raises(ConfigError) as info:
        load_train_demo_config(["progress=bars"])
    _one_line_naming(str(info.value), "progress", "bars", PROGRESS_MODES)


def test_unknown_model_option_names_the_allowed_choices(tmp_path):
    with pytest.raises(ConfigError, match="t, s, m, l, x|rtmpose-t_coco17_256x192") as info:
        compose_in(tmp_path, "model=rtmpose-q_coco17_256x192")
    message = str(info.value)
    assert "t, s, m, l, x" in message or "rtmpose-t_coco17_256x192" in message


@pytest.fixture
def params_file(tmp_path):
    """A composed params file (what `python -m pipeline.params` writes), for editing."""
    path = tmp_path / "params.yaml"
    path.write_text(dump_yaml(compose(["model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"out_dir={tmp_path / 'out'}"])))
    return path


def edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


def test_params_file_loads(params_file, tmp_path):
    cfg = load_config(params_file=params_file)
    assert cfg.model.preset == VARIANT and cfg.out_dir == str(tmp_path / "out")


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d["export"].update(opsett=11), "export.opsett"),
    (lambda d: d.update(out_dri="x"), "out_dri"),
    (lambda d: d["verify"]["tolerances"]["fp32"].update(atoll=1.0), "atoll"),
    (lambda d: d["model"].update(trust_pickle="perhaps"), "model.trust_pickle"),
    (lambda d: d["backends"]["openvino"].update(int8_float_part="fp32"), "backends.openvino.int8_float_part"),
    (lambda d: d.update(out_dir="elsewhere"), "plan does not match"),  # a hand-edited, stale plan
])
def test_params_file_mistakes_are_config_errors(edit, fragment, params_file):
    edit_yaml(params_file, edit)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(params_file=params_file)


def test_params_file_and_overrides_are_exclusive(params_file, tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        load_config(["export.opset=11"], params_file=params_file)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(params_file=tmp_path / "missing.yaml")


SELECTORS = {"simplify.tool", "extra_variants"}  # what a group option selects, stated even where it is the default


def _leaves(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_conf_restates_no_default_of_the_schema():
    """Every default lives in pipeline/config.py; conf/ only selects and overrides (and sets what has no default)."""
    defaults = dict(_leaves(dataclasses.asdict(RunConfig())))
    files = {CONF_DIR / "config.yaml": ""}
    for group in ("matrix", "simplify", "verify"):
        for path in (CONF_DIR / group).glob("*.yaml"):
            files[path] = "" if path.read_text().startswith("# @package _global_") else f"{group}."
    for path, prefix in files.items():
        data = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k not in ("defaults", "hydra")}
        for key, value in _leaves(data, prefix):
            assert key in SELECTORS or defaults.get(key, object()) != value, (
                f"{path.relative_to(REPO_ROOT)}: {key}: {value!r} restates the default of pipeline/config.py")


def test_params_yaml_is_in_sync_with_conf():
    result = run_python("-m", "pipeline.params", "--check", cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr

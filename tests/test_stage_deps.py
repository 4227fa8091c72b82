"""Each stage's deps file (pipeline/planning/stage_deps.py): one per planned stage, holding the params values and source
hashes that stage reads; a setting or module of one backend changes only that backend's files; dvc.yaml lists
neither params.yaml params nor source files for the stages of the plan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, VARIANT

from pipeline.core.errors import ConfigError
from pipeline.planning.stage_deps import STAGE_DEPS, source_md5, stage_deps, write_stage_deps
from pipeline.run.configure import load_config

TARGETS = "targets=[onnxruntime-fp32,onnxruntime-int8,openvino-fp32,openvino-int8]"
EXTRA = "rtmpose-t_hand21_256x192"


def compose_in(out_dir: Path, *overrides: str):
    return load_config(["model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"out_dir={out_dir}", TARGETS, f"extra_variants=[{EXTRA}]",
                        "evaluate.enabled=true", *overrides])


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return compose_in(tmp_path_factory.mktemp("out"))


def planned_stages(cfg) -> dict[str, str]:
    """`<stage>@<key>` (or `report`) -> its deps file, from the plan that dvc.yaml iterates over."""
    stages = {"report": cfg.plan["stage_deps"]["report"]}
    for stage, spec in STAGE_DEPS.items():
        for key, entry in (cfg.plan[spec.section] if spec.section else {}).items():
            stages[f"{stage}@{key}"] = entry["deps"][stage]
    return stages


def test_every_planned_stage_has_its_own_deps_file(cfg):
    stages = planned_stages(cfg)
    assert {f"calibration@{VARIANT}", f"quantize@{VARIANT}", f"evaluate@{VARIANT}"} <= set(stages)
    assert f"evaluate@{EXTRA}" not in stages  # hand21 is not COCO-17: not evaluated
    assert len(set(stages.values())) == len(stages)  # no two stages share a file
    files = stage_deps(cfg)
    assert set(files) == set(stages.values())
    root = Path(cfg.plan["stage_deps"]["dir"])
    assert all(Path(path).is_relative_to(root) for path in files)


def test_a_deps_file_holds_the_params_and_sources_its_stage_reads(cfg):
    files = stage_deps(cfg)
    job = cfg.plan["jobs"][f"{VARIANT}.openvino-int8"]
    build = files[job["deps"]["build"]]
    assert build["params"]["backends.openvino"] == vars(cfg.backends.openvino)
    assert build["params"]["hardware.openvino"] == cfg.hardware["openvino"]
    assert build["params"]["quantize.keep_float"] == cfg.quantize.keep_float
    assert build["code"]["pipeline/backends/openvino.py"] == source_md5("pipeline/backends/openvino.py")
    assert not [key for key in [*build["params"], *build["code"]] if "onnxruntime" in key]  # another backend's
    verify = files[job["deps"]["verify"]]
    assert verify["params"]["verify.tolerances.int8"] == vars(cfg.verify.tolerances["int8"])
    assert not [key for key in verify["params"] if key.startswith("verify.tolerances.fp")]
    export = files[cfg.plan["variants"][EXTRA]["deps"]["export"]]
    assert export["params"]["export"] == vars(cfg.export)
    assert set(export["code"]) == set(STAGE_DEPS["export"].code)
    report = files[cfg.plan["stage_deps"]["report"]]
    assert report["params"] == {"targets": cfg.targets, "plan.left_out": cfg.plan["left_out"]}
    for content in files.values():  # every listed key and source, and nothing else
        assert content["params"] and content["code"] and set(content) == {"params", "code"}


def test_one_backends_setting_changes_only_that_backends_files(cfg):
    before = stage_deps(cfg)
    after = stage_deps(compose_in(Path(cfg.out_dir), "backends.openvino.num_threads=1"))
    assert set(before) == set(after)
    changed = {path for path in before if before[path] != after[path]}
    openvino_jobs = [j for j in cfg.plan["jobs"].values() if j["backend"] == "openvino"]
    expected = {job["deps"][stage] for job in openvino_jobs for stage in ("tune", "build", "verify")}
    expected.add(cfg.plan["variants"][VARIANT]["deps"]["evaluate"])  # evaluate runs every backend
    assert changed == expected


def test_one_backends_module_changes_only_that_backends_files(cfg, tmp_path):
    """Source hashes come from the checkout the stage runs in; an edit shows in the stages that run the file."""
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    before = stage_deps(cfg, root=tmp_path)
    module = tmp_path / "pipeline" / "backends" / "onnxruntime.py"
    module.write_text(module.read_text() + "\n# edited\n")
    (tmp_path / "pipeline" / "model" / "__pycache__").mkdir()
    (tmp_path / "pipeline" / "model" / "__pycache__" / "rtmpose.cpython-311.pyc").write_bytes(b"bytecode")
    after = stage_deps(cfg, root=tmp_path)
    changed = {path for path in before if before[path] != after[path]}
    onnxruntime_jobs = [j for j in cfg.plan["jobs"].values() if j["backend"] == "onnxruntime"]
    expected = {job["deps"][stage] for job in onnxruntime_jobs for stage in ("tune", "build", "verify")}
    # evaluate, benchmark (every variant's: its peers run onnxruntime) and report run the whole pipeline/backends folder
    expected |= {cfg.plan["variants"][VARIANT]["deps"]["evaluate"], cfg.plan["stage_deps"]["report"],
                 *(entry["deps"]["benchmark"] for entry in cfg.plan["variants"].values())}
    assert changed == expected  # and the bytecode under pipeline/model changed nothing


def test_a_missing_source_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="pipeline/nope.py does not exist"):
        source_md5("pipeline/nope.py", tmp_path)


def test_the_files_are_written_whole_and_byte_stable(tmp_path):
    cfg = compose_in(tmp_path)
    root = write_stage_deps(cfg)
    first = {p: p.read_bytes() for p in root.rglob("*.json")}
    assert len(first) == len(stage_deps(cfg))
    assert json.loads(first[Path(cfg.plan["stage_deps"]["report"])])["params"]["targets"] == cfg.targets
    (root / "stale.json").write_text("{}")  # a file of an earlier plan does not survive a rewrite
    write_stage_deps(cfg)
    assert {p: p.read_bytes() for p in root.rglob("*.json")} == first
    assert not list(tmp_path.glob("*.tmp-*"))


def test_dvc_yaml_stages_of_the_plan_depend_on_their_deps_file_and_data_only():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert set(STAGE_DEPS) <= set(stages)
    for name in STAGE_DEPS:
        body = stages[name].get("do", stages[name])
        assert "params" not in body, name
        deps_file = "${plan.stage_deps.report}" if name == "report" else f"${{item.deps.{name}}}"
        assert body["deps"][0] == deps_file, name
        sources = [d for d in body["deps"][1:] if d.startswith(("pipeline/", "stages/"))]
        assert sources == [], name  # sources belong in STAGE_DEPS
    assert stages["stage-deps"]["deps"] == ["params.yaml", "stages", "pipeline"]
    for spec in STAGE_DEPS.values():  # every listed source is under a folder that stage-deps depends on
        assert all(path.split("/")[0] in ("stages", "pipeline") for path in spec.code)

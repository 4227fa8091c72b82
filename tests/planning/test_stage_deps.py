"""Each stage's deps file (pipeline/planning/stage_deps.py): one per planned stage, holding the params values and source
hashes that stage reads; sources are the stage's import closure (pipeline/planning/closure.py), a job's stages holding
their own backend's module only; a setting or module of one backend changes only the files of the stages that read or
run it; dvc.yaml lists neither params.yaml params nor source files for the stages.

What each stage process really loads is compared with these files under DVC in tests/run/test_dvc.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.config import dump_yaml
from pipeline.core.errors import ConfigError
from pipeline.planning.closure import module_closure
from pipeline.planning.deps_files import SECTIONS
from pipeline.planning.stage_deps import PARAMS, source_md5, stage_deps, stage_sources, write_stage_deps
from pipeline.run.configure import compose, load_config

from conftest import REPO_ROOT, VARIANT, run_python

TARGETS = "targets=[onnxruntime-fp32,onnxruntime-int8,openvino-fp32,openvino-int8]"
EXTRA = "rtmpose-t_hand21_256x192"
BACKEND_MODULES = ("onnxruntime", "openvino", "ncnn", "tensorrt")


def overrides_in(out_dir: Path, *overrides: str) -> list[str]:
    return ["model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"out_dir={out_dir}", TARGETS,
            f"extra_variants=[{EXTRA}]", "evaluate.enabled=true", *overrides]


def compose_in(out_dir: Path, *overrides: str):
    return load_config(overrides_in(out_dir, *overrides))


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return compose_in(tmp_path_factory.mktemp("out"))


def planned_stages(cfg) -> dict[str, str]:
    """`<stage>@<key>` (or `report`, `demo-data`, `train-demo`) -> its deps file, from the plan dvc.yaml reads."""
    stages = {}
    for stage, section in SECTIONS.items():
        if section is None:
            stages[stage] = cfg.plan["stage_deps"][stage]
        for key, entry in (cfg.plan[section] if section else {}).items():
            stages[f"{stage}@{key}"] = entry["deps"][stage]
    return stages


def job_files(cfg, backend: str, stages=("tune", "build", "verify")) -> set[str]:
    """The deps files of the job stages of one backend."""
    return {job["deps"][stage] for job in cfg.plan["jobs"].values() if job["backend"] == backend for stage in stages}


def test_every_planned_stage_has_its_own_deps_file(cfg):
    stages = planned_stages(cfg)
    assert {f"calibration@{VARIANT}", f"quantize@{VARIANT}", f"evaluate@{VARIANT}", "report", "demo-data"} <= set(stages)
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
    assert set(export["code"]) == set(stage_sources("export"))
    report = files[cfg.plan["stage_deps"]["report"]]
    assert report["params"] == {"targets": cfg.targets, "plan.left_out": cfg.plan["left_out"]}
    for path, content in files.items():  # every listed key and source, and nothing else
        assert set(content) == {"params", "code"} and content["code"], path
        assert content["params"] or "/stage-deps/demo-data" in path or "/stage-deps/train-demo" in path, path
        assert all(source.split("/")[0] in ("pipeline", "stages", "hydra_plugins") for source in content["code"]), path


def test_sources_are_what_the_stage_runs_and_no_more(cfg):
    """The import closure of stages/<stage>.py: a step's module and what it imports (a drifted hand-written list
    left out pipeline/graph/quantize.py, which the onnxruntime backend runs), its parent packages, the data it reads
    and the worker processes it starts; a job's stages hold their own backend's module only."""
    build = set(stage_sources("build", ("onnxruntime",)))
    assert {"stages/__init__.py", "stages/build.py", "pipeline/__init__.py", "pipeline/run/steps/__init__.py",
            "pipeline/run/steps/build.py", "pipeline/backends/onnxruntime.py", "pipeline/graph/quantize.py"} <= build
    assert not {"pipeline/backends/openvino.py", "pipeline/check/evaluate.py", "pipeline/check/verify.py",
                "pipeline/run/steps/verify.py", "pipeline/measure/tune.py"} & build
    for stage in ("reference", "export", "simplify", "calibration", "quantize", "release", "demo-data"):
        assert not [f for f in stage_sources(stage) if f.removeprefix("pipeline/backends/")[:-3] in BACKEND_MODULES]
    assert "pipeline/graph/export.py" in stage_sources("export")
    assert {"pipeline/measure/timing.py", "pipeline/backends/openvino.py"} <= set(stage_sources("tune", ("openvino",)))
    assert {"pipeline/report/templates", "pipeline/inputs/data"} <= set(stage_sources("report"))
    assert "pipeline/inputs/data" in stage_sources("reference")
    assert "hydra_plugins/rtmpose_pipeline/__init__.py" in stage_sources("demo-data")  # Hydra imports it
    assert {"pipeline", "pipeline.run", "pipeline.run.steps"} <= module_closure(["pipeline.run.steps.build"])
    with pytest.raises(ValueError, match="pipeline.nope is not a module"):
        module_closure(["pipeline.nope"])


def test_one_backends_setting_changes_only_that_backends_files(cfg):
    before = stage_deps(cfg)
    after = stage_deps(compose_in(Path(cfg.out_dir), "backends.openvino.num_threads=1"))
    assert set(before) == set(after)
    changed = {path for path in before if before[path] != after[path]}
    expected = job_files(cfg, "openvino")
    expected.add(cfg.plan["variants"][VARIANT]["deps"]["evaluate"])  # evaluate runs every backend
    assert changed == expected


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of this checkout's code with a composed params.yaml, outputs under it."""
    root = tmp_path_factory.mktemp("checkout")
    for name in ("pipeline", "stages", "hydra_plugins"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(dump_yaml(compose(overrides_in(root / "out"))), encoding="utf-8")
    return root


def deps_files_of(checkout: Path) -> dict[str, str]:
    """Run the `stage-deps` stage in the checkout (its own code, as under DVC); its files by path."""
    result = run_python("-m", "stages.stage_deps", "--params", "params.yaml", cwd=checkout,
                        env={"PYTHONPATH": str(checkout)})
    assert result.returncode == 0, result.stderr
    root = checkout / "out" / "stage-deps"
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.json"))}


def changed_by_edit(checkout: Path, before: dict[str, str], relative: str) -> set[str]:
    """The deps files (`<stage>/<key>` or `<stage>`) an edit to one source changes from `before`; undone after."""
    path = checkout / relative
    original = path.read_bytes()
    path.write_bytes(original + b"\n# an edit that changes no behaviour\n")
    try:
        after = deps_files_of(checkout)
    finally:
        path.write_bytes(original)
    assert set(before) == set(after)
    return {name.removesuffix(".json") for name in before if before[name] != after[name]}


def test_an_edit_changes_the_deps_files_of_the_stages_that_run_it(checkout):
    """Source hashes come from the checkout the stage runs in: an edit shows in the stages that execute the file,
    and in no other (the DVC run in tests/run/test_dvc.py checks this against what each stage process loads)."""
    int8, fp32 = f"{VARIANT}.onnxruntime-int8", f"{VARIANT}.onnxruntime-fp32"
    before = deps_files_of(checkout)
    quantize = changed_by_edit(checkout, before, "pipeline/graph/quantize.py")
    assert {f"quantize/{VARIANT}", f"build/{int8}", f"build/{fp32}", f"verify/{int8}"} <= quantize  # runs Q/DQ code
    assert not [s for s in quantize if "openvino" in s or s.split("/")[0] in ("reference", "export", "simplify")]
    verify = changed_by_edit(checkout, before, "pipeline/check/verify.py")
    assert {f"verify/{VARIANT}.{t}" for t in ("onnxruntime-fp32", "openvino-int8")} <= verify
    assert not [s for s in verify if s.split("/")[0] in ("build", "tune", "quantize", "calibration", "simplify")]
    openvino = changed_by_edit(checkout, before, "pipeline/backends/openvino.py")
    jobs = {f"{stage}/{v}.{t}" for stage in ("tune", "build", "verify") for v in (VARIANT, EXTRA)
            for t in ("openvino-fp32", "openvino-int8")}
    variants = {f"{stage}/{v}" for stage in ("benchmark", "release") for v in (VARIANT, EXTRA)}
    assert openvino == jobs | variants | {f"evaluate/{VARIANT}", "report"}
    assert deps_files_of(checkout) == before  # every edit undone: the same bytes


def test_a_missing_source_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="pipeline/nope.py does not exist"):
        source_md5("pipeline/nope.py", tmp_path)


def test_a_folders_hash_leaves_bytecode_out(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.png").write_bytes(b"png")
    before = source_md5("data", tmp_path)
    (tmp_path / "data" / "__pycache__").mkdir()
    (tmp_path / "data" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"bytecode")
    assert source_md5("data", tmp_path) == before
    (tmp_path / "data" / "photo.png").write_bytes(b"png, edited")
    assert source_md5("data", tmp_path) != before


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


def test_dvc_yaml_stages_depend_on_their_deps_file_and_data_only():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    # every stage has a deps file but the frozen train-demo, whose deps must exist in a fresh clone
    assert set(SECTIONS) == set(PARAMS) == set(stages) - {"stage-deps", "train-demo"}
    assert stages["train-demo"]["deps"] == ["stages", "pipeline", "hydra_plugins"]
    for name, section in SECTIONS.items():
        body = stages[name].get("do", stages[name])
        assert body["cmd"].startswith(f"python -m stages.{name.replace('-', '_')}"), name  # its sources' root
        assert not [p for p in body.get("params", []) if not isinstance(p, dict)], name  # none from params.yaml
        assert set().union(*body.get("params", [])) <= {"conf/train_demo.yaml"}, name
        deps_file = f"${{plan.stage_deps.{name}}}" if section is None else f"${{item.deps.{name}}}"
        assert body["deps"][0] == deps_file, name
        sources = [d for d in body["deps"][1:] if d.startswith(("pipeline/", "stages/"))]
        assert sources == [], name  # derived from the code by `stage-deps`
    assert stages["stage-deps"]["deps"] == ["params.yaml", "stages", "pipeline", "hydra_plugins"]


def test_the_data_table_names_the_folders_the_modules_read():
    """closure.DATA restates where two modules read package data; it must name the folders they really read."""
    from pipeline.inputs.golden import DATA_DIR
    from pipeline.planning.closure import DATA
    from pipeline.report.render import TEMPLATES

    read = {"pipeline.inputs.golden": DATA_DIR, "pipeline.report.render": TEMPLATES}
    assert set(DATA) == set(read)
    for module, folder in read.items():
        assert DATA[module] == (Path(folder).resolve().relative_to(REPO_ROOT.resolve()).as_posix(),)

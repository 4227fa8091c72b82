"""`python -m pipeline.reproduce` judges each output by its rule (issue 13): the chain is built twice
here, once with oneDNN limited to SSE4.1 (`ONEDNN_MAX_CPU_ISA`, what another CPU's kernels do to
PyTorch and OpenVINO), and the second build is checked against the first as against a committed
dvc.lock, with the first build's outputs in a DVC cache (DVC's layout: files/md5/xx/yyyy, a
directory as a `.dir` listing)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from pipeline.params import params_text
from pipeline.reproduce import compare, host_plan
from pipeline.run.configure import load_config

from conftest import REPO_ROOT, VARIANT, run_python

pytestmark = pytest.mark.slow

TARGETS = ("onnxruntime-fp32", "openvino-int8")
OVERRIDES = ("model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"targets=[{','.join(TARGETS)}]", "out_dir=artifacts",
             "calibration.source=images", f"calibration.images_dir={REPO_ROOT / 'pipeline' / 'inputs' / 'data'}")
STAGES = [("reference", VARIANT), ("export", VARIANT), ("simplify", VARIANT), ("calibration", VARIANT),
          *(("build", f"{VARIANT}.{target}") for target in TARGETS)]


def build_chain(root: Path, env: dict[str, str]) -> dict[str, tuple[str, Path]]:
    """Run the stages in `root` (params.yaml beside them); {output path: (stage, path on disk)}."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(params_text(list(OVERRIDES)), encoding="utf-8")
    outputs = {}
    cfg = load_config(list(OVERRIDES))
    paths = {"reference": cfg.plan["variants"][VARIANT]["reference"], "export": cfg.plan["variants"][VARIANT]["export"],
             "simplify": cfg.plan["variants"][VARIANT]["simplified"],
             "calibration": cfg.plan["calibrations"][VARIANT]["calibration"]}
    for stage, name in STAGES:
        result = run_python("-m", f"stages.{stage}", name, "--params", "params.yaml", cwd=root,
                            env={"PYTHONPATH": str(REPO_ROOT), **env})
        assert result.returncode == 0, f"{stage}@{name}: {result.stderr[-2000:]}"
        path = cfg.plan["jobs"][name]["artifact"] if stage == "build" else paths[stage]
        outputs[path] = (f"{stage}@{name}", root / path)
    return outputs


def cache_object(cache: Path, path: Path) -> str:
    """Store a file or directory in `cache` as DVC does; return its md5 (directories: `<md5>.dir`)."""
    def store(data: bytes, digest: str) -> None:
        target = cache / "files" / "md5" / digest[:2] / digest[2:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    if path.is_file():
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        store(path.read_bytes(), digest)
        return digest
    entries = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        entries.append({"md5": cache_object(cache, file), "relpath": file.relative_to(path).as_posix()})
    listing = json.dumps(entries).encode()
    digest = hashlib.md5(listing).hexdigest() + ".dir"
    store(listing, digest)
    return digest


def write_lock(lock: Path, outputs: dict[str, tuple[str, str]]) -> None:
    stages: dict[str, dict] = {}
    for path, (stage, md5) in outputs.items():
        stages.setdefault(stage, {"outs": []})["outs"].append({"path": path, "md5": md5})
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}), encoding="utf-8")


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """(committed lock, its cache, rebuilt repo with its dvc.lock, committed and rebuilt outputs)."""
    tmp = tmp_path_factory.mktemp("reproduce")
    committed = build_chain(tmp / "committed", {"ONEDNN_MAX_CPU_ISA": "SSE41"})
    rebuilt = build_chain(tmp / "rebuilt", {})
    cache = tmp / "cache"
    committed_md5 = {path: (stage, cache_object(cache, disk)) for path, (stage, disk) in committed.items()}
    write_lock(tmp / "committed.lock", committed_md5)
    write_lock(tmp / "rebuilt" / "dvc.lock",
               {path: (stage, cache_object(tmp / "rebuilt-cache", disk)) for path, (stage, disk) in rebuilt.items()})
    return tmp / "committed.lock", cache, tmp / "rebuilt", committed, rebuilt


def test_each_output_passes_its_rule_after_a_rebuild_with_other_kernels(builds, capsys):
    lock, cache, repo, committed, _ = builds
    assert compare(repo, lock, cache) == 0
    out = capsys.readouterr().out
    rows = {path: next(line for line in out.splitlines() if f" {path}" in line) for path in committed}
    variant_dir = f"artifacts/{VARIANT}"
    for name in ("export/model.onnx", "simplified", "calibration.npz", "onnxruntime-fp32"):
        assert rows[f"{variant_dir}/{name}"].startswith("identical "), rows
    # oneDNN's SSE4.1 kernels change PyTorch's outputs and NNCF's statistics: judged numerically
    assert rows[f"{variant_dir}/reference.npz"].startswith("float-outputs ok "), rows
    assert "inputs identical" in rows[f"{variant_dir}/reference.npz"]
    assert rows[f"{variant_dir}/openvino-int8"].startswith(("identical ", "calibrated ok ")), rows
    assert out.strip().endswith("0 fail their rule")


def test_an_artifact_that_must_be_identical_fails_even_when_numerically_equal(builds, capsys, tmp_path):
    lock, cache, repo, committed, _ = builds
    path = f"artifacts/{VARIANT}/onnxruntime-fp32"
    nudged = tmp_path / "nudged"
    shutil.copytree(committed[path][1], nudged)
    model = onnx.load(str(nudged / "model.onnx"))
    weight = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4)
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[0] = np.nextafter(array.flat[0], np.float32(np.inf))  # one ulp: same outputs within fp32
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save_model(model, str(nudged / "model.onnx"))
    entries = yaml.safe_load(lock.read_text(encoding="utf-8"))["stages"]
    outputs = {o["path"]: (stage, o["md5"]) for stage, e in entries.items() for o in e["outs"]}
    outputs[path] = (outputs[path][0], cache_object(cache, nudged))
    write_lock(tmp_path / "nudged.lock", outputs)
    assert compare(repo, tmp_path / "nudged.lock", cache) == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if f" {path} " in line)
    assert row.startswith("DIFFERS ") and "bytes differ in model.onnx" in row and "artifact.json" not in row


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    for name in ("conf", "pipeline", "hydra_plugins", "checkpoints"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def composed_elsewhere() -> dict:
    """The default params.yaml as a host that runs every target composes it: this host's left-out jobs
    planned like its other jobs (skips where this host leaves nothing out)."""
    params = yaml.safe_load(params_text([]))
    left_out = params["plan"]["left_out"]
    if not left_out:
        pytest.skip("this host runs every default target (bf16 and an NVIDIA GPU); nothing is left out")
    variant = next(iter(params["plan"]["variants"]))
    template = params["plan"]["jobs"][f"{variant}.onnxruntime-fp32"]
    for job in left_out:
        params["plan"]["jobs"][job] = {**template, "target": job.partition(".")[2]}
        params["plan"]["variants"][variant]["jobs"] = sorted([*params["plan"]["variants"][variant]["jobs"], job])
    params["plan"]["left_out"] = {}
    return params


def test_jobs_this_host_leaves_out_are_named_and_the_plan_recomposed(repo_copy, capsys):
    elsewhere = composed_elsewhere()
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(elsewhere), encoding="utf-8")
    left_out = host_plan(repo_copy)
    here = yaml.safe_load((repo_copy / "params.yaml").read_text(encoding="utf-8"))
    assert left_out and set(left_out) == set(here["plan"]["left_out"]) and not set(left_out) & set(here["plan"]["jobs"])
    out = capsys.readouterr().out
    assert all(f"left out          {job}: {here['plan']['left_out'][job]}" in out for job in left_out)


def test_a_plan_that_differs_in_more_than_the_host_is_refused_and_kept(repo_copy):
    elsewhere = composed_elsewhere()
    elsewhere["simplify"]["atol"] = 0.5  # composed with an override this host cannot know of
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(elsewhere), encoding="utf-8")
    with pytest.raises(SystemExit, match="not what `python -m pipeline.params` composes here"):
        host_plan(repo_copy)
    assert yaml.safe_load((repo_copy / "params.yaml").read_text(encoding="utf-8")) == elsewhere


def test_tuned_settings_are_measurements_and_the_release_is_compared_without_them(tmp_path):
    """tune records and the shipped files that carry them differ by machine; every other shipped file may not."""
    from pipeline.reproduce import compare_release, output_rule

    assert output_rule("tune@v.openvino-fp32")[0] == "measured"
    assert output_rule("build@v.openvino-fp32")[0] == "identical"

    def manifest(folder: Path, files: dict[str, str]) -> Path:
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps(
            {"targets": {"openvino-fp32": {"precision": "fp32", "files": files}}}))
        return folder

    committed = manifest(tmp_path / "a", {"model.xml": "1", "artifact.json": "2", "detail.json": "3", "rtmlib.zip": "4"})
    retuned = manifest(tmp_path / "b", {"model.xml": "1", "artifact.json": "x", "detail.json": "y", "rtmlib.zip": "z"})
    assert compare_release(committed, retuned)[0]
    changed = manifest(tmp_path / "c", {"model.xml": "9", "artifact.json": "2", "detail.json": "3", "rtmlib.zip": "4"})
    assert compare_release(committed, changed) == (False, "files differ: openvino-fp32/model.xml")

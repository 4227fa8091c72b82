"""Stage scripts and `python -m pipeline` as subprocesses on tmp_path: outputs, metrics, and the
failure contract (exit code 1, one `error:` line on stderr, nothing left behind)."""

from __future__ import annotations

import json
import shutil
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnx
import pytest

from pipeline.model.presets import preset_spec
from pipeline.model.synthetic import synthetic_state_dict

from conftest import (
    FP32_TARGETS,
    VARIANT,
    error_lines,
    files_under,
    one_line_error,
    run_python,
    run_stage,
    sha256,
    write_checkpoint,
)

SYNTHETIC = ("model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"targets=[{','.join(FP32_TARGETS)}]")
JOBS = [f"{VARIANT}.{target}" for target in FP32_TARGETS]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """reference -> export -> simplify -> build -> verify for both fp32 targets, each stage by hand.

    The two targets' build (and verify) stages are independent, so each pair runs side by side.
    """
    root = tmp_path_factory.mktemp("chain")
    out = root / "out"
    overrides = (*SYNTHETIC, f"out_dir={out}")
    runs = {}
    for stage, names in (("reference", [VARIANT]), ("export", [VARIANT]), ("simplify", [VARIANT]),
                         ("build", JOBS), ("verify", JOBS)):
        with ThreadPoolExecutor(len(names)) as pool:
            results = pool.map(lambda name: run_stage(stage, name, *overrides, cwd=root), names)
        for name, result in zip(names, results):
            runs[f"{stage}@{name}"] = result
            assert result.returncode == 0, f"{stage}@{name}: {result.stderr}"
    return out / VARIANT, runs


def test_every_stage_writes_its_outputs(chain):
    variant_dir, _ = chain
    expected = ["reference.npz", "export/model.onnx", "simplified/model.onnx", "simplified/simplify.json",
                "onnxruntime-fp32/model.onnx", "onnxruntime-fp32/artifact.json",
                "openvino-fp32/model.xml", "openvino-fp32/model.bin", "openvino-fp32/artifact.json",
                "metrics/onnxruntime-fp32.json", "metrics/openvino-fp32.json"]
    for name in expected:
        assert (variant_dir / name).is_file(), name
    assert not [p for p in variant_dir.parent.rglob("*.tmp-*")]  # atomic writes left no temporaries


def test_passing_stages_exit_0_without_an_error_or_a_traceback(chain):
    """The outcome of each stage: exit 0 (the fixture), no `error:` line and no traceback on stderr. Anything else
    there (a deprecation warning of an unpinned tool) is not the stage's outcome and is not judged."""
    _, runs = chain
    assert {name: r.returncode for name, r in runs.items()} == dict.fromkeys(runs, 0)
    assert {name: r.stderr for name, r in runs.items() if "Traceback" in r.stderr or error_lines(r.stderr)} == {}


@pytest.mark.parametrize("target", FP32_TARGETS)
def test_metrics_say_passed(target, chain):
    variant_dir, runs = chain
    metrics = json.loads((variant_dir / "metrics" / f"{target}.json").read_text())
    assert metrics["passed"] is True and metrics["breaches"] == []
    assert (metrics["job"], metrics["target"], metrics["precision"]) == (f"{VARIANT}.{target}", target, "fp32")
    assert set(metrics["outputs"]) == {"simcc_x", "simcc_y"}
    assert metrics["rule"] == "reference-error"  # fp32 against the float32 reference's own error
    assert metrics["keypoints"]["confident"]["count"] == 0  # synthetic weights: no clear SimCC peak, nothing gated
    assert set(metrics["runtime_settings"]["execution_precision"]) == {"fp32"}
    stdout = runs[f"verify@{VARIANT}.{target}"].stdout
    assert f"PASSED {VARIANT}.{target} simcc_x" in stdout and "FAILED" not in stdout


@pytest.mark.parametrize("target", FP32_TARGETS)
def test_artifact_records_its_source(target, chain):
    variant_dir, _ = chain
    meta = json.loads((variant_dir / target / "artifact.json").read_text())
    assert meta["source_onnx_sha256"] == sha256(variant_dir / "simplified" / "model.onnx")
    assert (meta["job"], meta["target"]) == (f"{VARIANT}.{target}", target)
    assert meta["onnx_metadata"]["variant"] == VARIANT


def test_python_m_pipeline_runs_the_whole_chain(tmp_path):
    out = tmp_path / "out"
    result = run_python("-m", "pipeline", "model=rtmpose-t_coco17_256x192", "model.checkpoint=null", "targets=[onnxruntime-fp32]", f"out_dir={out}",
                        "tune.enabled=false", f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{VARIANT}.onnxruntime-fp32" in result.stdout and "passed" in result.stdout
    metrics = json.loads((out / VARIANT / "metrics" / "onnxruntime-fp32.json").read_text())
    assert metrics["passed"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hydra", "out"]  # nothing outside the two dirs


# ------------------------------------------------------------------------------------------- failures


def pickled_model(tmp_path: Path) -> Path:
    variant = preset_spec(VARIANT)
    return write_checkpoint(tmp_path / "model.pth", "pickled-model", synthetic_state_dict(variant, 0), variant)


def corrupt_file(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(bytes(2048))
    return path


BAD_INPUTS = {
    # id: (stage, name, overrides(tmp_path) -> list, fragment of the error line)
    "missing checkpoint": ("reference", VARIANT, lambda d: [f"model.checkpoint={d / 'missing.pth'}"],
                           "does not exist"),
    "corrupt checkpoint": ("reference", VARIANT, lambda d: [f"model.checkpoint={corrupt_file(d)}"], "corrupt"),
    "pickled model": ("reference", VARIANT, lambda d: [f"model.checkpoint={pickled_model(d)}"], "trust_pickle"),
    "onnx with wrong io": ("export", VARIANT, lambda d: [f"model.checkpoint={d / 'one_output.onnx'}"],
                           "expected two SimCC outputs"),
    "unknown model": ("reference", VARIANT, lambda d: ["model=rtmpose-q_coco17_256x192"],
                      "rtmpose-q_coco17_256x192"),
    "unknown target": ("build", f"{VARIANT}.nope-fp32", lambda d: ["targets=[nope-fp32]"], "nope-fp32"),
}


def assert_one_error_line(result, fragment: str) -> None:
    assert fragment in one_line_error(result)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_1_with_one_error_line_and_no_output(case, tmp_path, t_onnx):
    stage, name, overrides, fragment = BAD_INPUTS[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    if case == "onnx with wrong io":  # a valid ONNX that gives simcc_x only: not a SimCC pose model
        model = onnx.load(str(t_onnx))
        del model.graph.output[1]
        onnx.save_model(model, str(inputs / "one_output.onnx"))
    out = tmp_path / "out"
    result = run_stage(stage, name, "model=rtmpose-t_coco17_256x192", "model.checkpoint=null", *overrides(inputs), f"out_dir={out}", cwd=tmp_path)
    assert_one_error_line(result, fragment)
    assert files_under(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) in (["inputs"], ["inputs", "out"])


def test_build_before_simplify_says_what_to_run(tmp_path):
    result = run_stage("build", JOBS[0], *SYNTHETIC, f"out_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_error_line(result, "simplified/model.onnx")


# ------------------------------------------------------------------------------------------- forced failure


def openvino_cpu_has_bf16() -> bool:
    try:
        import openvino
    except ImportError:
        return False
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


needs_bf16 = pytest.mark.skipif(not openvino_cpu_has_bf16(),
                                reason="OpenVINO reports no BF16 in the CPU's OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def bf16_run(chain, tmp_path_factory):
    """verify@openvino-fp32 with the runtime forced to bf16, on a copy of the chain's outputs."""
    variant_dir, _ = chain
    root = tmp_path_factory.mktemp("bf16")
    shutil.copytree(variant_dir.parent, root / "out")
    result = run_stage("verify", f"{VARIANT}.openvino-fp32", *SYNTHETIC, f"out_dir={root / 'out'}",
                       "backends.openvino.inference_precision_hint=bf16", cwd=root)
    metrics = json.loads((root / "out" / VARIANT / "metrics" / "openvino-fp32.json").read_text())
    return result, metrics


@needs_bf16
def test_bf16_in_an_fp32_target_fails_verification(bf16_run):
    result, metrics = bf16_run
    assert "bf16" in one_line_error(result) and "failed verification" in one_line_error(result)
    assert metrics["passed"] is False
    assert metrics["runtime_settings"]["inference_precision_hint"] == "bf16"
    assert metrics["runtime_settings"]["execution_precision"].get("bf16", 0) > 0
    assert any("in bf16, below the target precision fp32" in b for b in metrics["breaches"])


# ------------------------------------------------------------------------------------------- missing runtime

BLOCK_OPENVINO = textwrap.dedent("""
    import sys

    class Block:
        '''Simulates an environment without the openvino package.'''
        def find_spec(self, name, path=None, target=None):
            if name == "openvino" or name.startswith("openvino."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
""")


def test_missing_runtime_names_the_extra(tmp_path):
    code = BLOCK_OPENVINO + textwrap.dedent(f"""
        import pipeline.run.steps.build  # the library imports without the runtime
        from pipeline import backends
        from pipeline.run.steps.build import build
        from pipeline.run.cli import run_stage
        from pipeline.core.errors import RuntimeMissingError
        assert backends.get("onnxruntime").Runner
        try:
            backends.get("openvino")
        except RuntimeMissingError as exc:
            print(exc)
        else:
            raise SystemExit("openvino imported despite the block")
        # What `python stages/build.py <job>` does, in this process where openvino is absent:
        raise SystemExit(run_stage(build, "job", ["{VARIANT}.openvino-fp32", *{list(SYNTHETIC)!r},
                                                        "out_dir={tmp_path / 'out'}"]))
    """)
    result = run_python("-c", code, cwd=tmp_path)
    assert "'openvino'" in result.stdout and '.[openvino]' in result.stdout
    assert_one_error_line(result, 'pip install ".[openvino]"')
    assert files_under(tmp_path / "out") == []

"""The report (pipeline/report.py, pipeline/overlay.py, stages/report.py) built from a small real run.

One module fixture runs `python -m pipeline` for synthetic rtmpose-t with onnxruntime-fp32 and
openvino-fp16 into a tmp directory, the fp16 job forced to fail: `verify.tolerances.fp16.max_mean_drift_px=-1`
breaches on any host (a drift is never negative), unlike a bf16 precision hint, which depends on the CPU.
A short benchmark follows, then the report stage itself.
"""

from __future__ import annotations

import copy
import html
import json
import re
import struct
from pathlib import Path

import cv2
import pytest

from conftest import REPO_ROOT, VARIANT, run_python
from pipeline.config import load_config
from pipeline.overlay import DPI, PANEL_IN
from pipeline.plan import job_paths
from pipeline.report import STATUSES, build_report, collect_rows

TARGETS = ("onnxruntime-fp32", "openvino-fp16")
PASSING, FAILING = TARGETS
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _overrides(out_dir: Path) -> list[str]:
    return ["model.checkpoint=null", f"out_dir={out_dir}", f"targets=[{','.join(TARGETS)}]",
            "verify.tolerances.fp16.max_mean_drift_px=-1", "verify.num_random=1",
            "benchmark.warmup=1", "benchmark.calls=3", "benchmark.blocks=1", "benchmark.throughput_images=2",
            "benchmark.settle_s=0", "benchmark.peers=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run (one job passed, one failed), benchmarked, with its report built by the stage."""
    out_dir = tmp_path_factory.mktemp("report_run")
    overrides = _overrides(out_dir)
    chain = run_python("-m", "pipeline", *overrides, f"hydra.run.dir={out_dir / 'hydra'}", cwd=REPO_ROOT)
    assert chain.returncode == 1, chain.stdout + chain.stderr  # the forced failure
    assert re.search(rf"{VARIANT}\.{PASSING}\s+passed", chain.stdout), chain.stdout
    cfg = load_config(overrides)
    from pipeline import steps

    steps.benchmark(cfg, VARIANT)
    stage = run_python(str(REPO_ROOT / "stages" / "report.py"), *overrides, cwd=out_dir)
    assert stage.returncode == 0, stage.stderr
    return cfg, out_dir, out_dir / "report", stage.stdout


def _metrics(cfg, target: str) -> dict:
    return json.loads(Path(cfg.plan["jobs"][f"{VARIANT}.{target}"]["metrics"]).read_text())


def _row_html(page: str, target: str) -> str:
    match = re.search(rf'<tr class="[^"]*"><td class="target">{re.escape(target)}</td>.*?</tr>'
                      r'(?:<tr class="detail[^"]*">.*?</tr>)?', page, re.S)
    assert match, f"no table row for {target}"
    return match.group(0)


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == PNG_SIGNATURE
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return chunks


def test_stage_prints_one_summary_line(run):
    _, _, report, stdout = run
    assert stdout.strip().splitlines() == [f"report {report / 'index.html'}: 2 jobs, 1 passed, 1 failed, "
                                           "0 left out, 0 not built"]


def test_html_has_every_job_with_its_status_and_the_breach(run):
    cfg, _, report, _ = run
    page = (report / "index.html").read_text(encoding="utf-8")
    assert _metrics(cfg, PASSING)["passed"] and not _metrics(cfg, FAILING)["passed"]
    assert '<span class="badge passed">passed</span>' in _row_html(page, PASSING)
    failed = _row_html(page, FAILING)
    assert '<span class="badge failed">failed</span>' in failed
    breach = _metrics(cfg, FAILING)["breaches"][0]
    assert "max_mean_drift_px -1" in breach
    assert html.escape(breach) in failed
    assert '<td class="num bad">' in failed  # the breached drift is highlighted
    assert 'class="detail' not in _row_html(page, PASSING)


def test_html_is_self_contained(run):
    _, _, report, _ = run
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "<style>" in page and "<link" not in page and "<script" not in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources, "no images in the page"
    for source in (s for s in sources if not s.startswith("#")):
        assert "://" not in source and not source.startswith("/"), source
        assert (report / source).is_file(), source
    assert str(report.parent) not in page  # no absolute paths


def test_html_names_weights_and_tools(run):
    _, _, report, _ = run
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "Synthetic weights." in page
    for tool in ("onnxruntime", "openvino", "torch", "onnx"):
        assert f"<span>{tool} " in page


def test_plots_and_overlay_are_valid_pngs_without_software_metadata(run):
    _, _, report, _ = run
    pngs = [report / "figures" / f"latency_drift_{VARIANT}.png", report / "figures" / f"size_{VARIANT}.png",
            report / "overlays" / f"{VARIANT}.png"]
    for png in pngs:
        data = png.read_bytes()
        assert b"tEXt" not in _png_chunks(data), f"{png.name} carries text metadata"
        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 400
    overlay = cv2.imread(str(pngs[-1]))
    assert overlay.shape[1] == round(PANEL_IN[0] * DPI * (1 + len(TARGETS)))  # columns: PyTorch + each target


def test_dvc_plots_data_are_records_of_the_table_numbers(run):
    cfg, _, report, _ = run
    latency = json.loads((report / "plots" / "latency_drift.json").read_text())
    size = json.loads((report / "plots" / "size.json").read_text())
    assert [r["target"] for r in latency] == list(TARGETS)
    assert [r["target"] for r in size] == list(TARGETS)
    bench = json.loads(Path(cfg.plan["variants"][VARIANT]["benchmark"]).read_text())["candidates"]
    for record in latency:
        assert record["latency_ms"] == round(bench[record["target"]]["latency_ms_median"], 3)
        assert record["drift_px"] == round(_metrics(cfg, record["target"])["keypoints"]["confident"]["mean_drift_px"], 4)
    artifact = Path(cfg.plan["jobs"][f"{VARIANT}.{PASSING}"]["artifact"])
    assert size[0]["size_mb"] == round(sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file()) / 1e6, 4)


def test_markdown_has_a_row_per_job(run):
    cfg, _, report, _ = run
    markdown = (report / "report.md").read_text(encoding="utf-8")
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| target")]
    assert [row.split(" | ")[0][2:] for row in rows] == list(TARGETS)
    assert rows[0].split(" | ")[1] == "passed"
    assert rows[1].split(" | ")[1].startswith("**failed: keypoints mean drift")
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown):
        assert (report / image).is_file()


def test_same_inputs_give_the_same_bytes(run, tmp_path):
    cfg, _, report, _ = run
    again = tmp_path / "again"
    build_report(cfg, again)
    first = sorted(p.relative_to(report) for p in report.rglob("*") if p.is_file())
    assert first == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for relative in first:
        assert (report / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_left_out_and_not_built_jobs_are_rows_with_their_reason(run, tmp_path):
    cfg, out_dir, _, _ = run
    cfg = copy.deepcopy(cfg)
    reason = "TensorRT needs an NVIDIA GPU and this host has none (nvidia-smi lists no GPU)"
    cfg.targets = [*TARGETS, "onnxruntime-int8", "tensorrt-fp16"]
    cfg.plan["left_out"] = {f"{VARIANT}.tensorrt-fp16": reason}
    cfg.plan["jobs"][f"{VARIANT}.onnxruntime-int8"] = {
        **cfg.plan["jobs"][f"{VARIANT}.{PASSING}"], "target": "onnxruntime-int8", "precision": "int8",
        **job_paths(str(out_dir), VARIANT, "onnxruntime-int8")}
    assert [r.status for r in collect_rows(cfg)] == ["passed", "failed", "not built", "left out"]
    summary = build_report(cfg, tmp_path / "report")
    assert summary["counts"] == dict(zip(STATUSES, (1, 1, 1, 1)))
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert '<span class="badge left-out">left out</span>' in _row_html(page, "tensorrt-fp16")
    assert html.escape(reason) in _row_html(page, "tensorrt-fp16")
    assert '<span class="badge not-built">not built</span>' in _row_html(page, "onnxruntime-int8")
    assert "no artifact yet: run the build and verify stages" in _row_html(page, "onnxruntime-int8")


def test_a_bad_config_leaves_no_report(tmp_path):
    stage = run_python(str(REPO_ROOT / "stages" / "report.py"), f"out_dir={tmp_path}", "targets=[onnxruntime-fp64]",
                       cwd=tmp_path)
    assert stage.returncode == 1
    assert stage.stderr.startswith("error: ") and "onnxruntime-fp64" in stage.stderr
    assert not (tmp_path / "report").exists()


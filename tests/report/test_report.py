"""The report (pipeline/report/, pipeline/report/overlay.py, stages/report.py) built from a small real run.

One module fixture runs `python -m pipeline` for synthetic rtmpose-t with onnxruntime-fp32 and
openvino-fp16 into a tmp directory, the fp16 job forced to fail: `verify.tolerances.fp16.max_mean_drift_px=-1`
breaches on any host (a drift is never negative; `verify.min_peak_margin=0` gates every keypoint of the
synthetic, unpeaked model), unlike a bf16 precision hint, which depends on the CPU.
A short benchmark follows, then the report stage itself. A second fixture copies that run and writes
hostile names into its files (keypoint and dataset names in artifact.json, a breach, peer baselines and a
machine record in the benchmark file), as a user's checkpoint or another tool could carry them; they must
stay text in the page, report.md, the figures, the plot records and the drop-in files.

The page is opened in headless Chromium (Debian's `chromium`, which .ci/run installs, driven by Playwright
with that executable, never a browser of Playwright's own): no console errors, no script, every image
loaded. A screenshot goes to $REPORT_SCREENSHOT_DIR when set (CI uploads it), else to the test's tmp dir.
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import struct
import time
from html.parser import HTMLParser
from pathlib import Path

import cv2
import pytest

from pipeline.planning.plan import job_paths
from pipeline.report import STATUSES, build_report, collect_rows
from pipeline.report.overlay import DPI, PANEL_IN, Column, draw_grid, run_on_crops
from pipeline.report.plots import pareto_figure, save_figure
from pipeline.report.rows import Row
from pipeline.run.configure import load_config
from pipeline.run.steps.benchmark import benchmark

from conftest import REPO_ROOT, VARIANT, run_python

TARGETS = ("onnxruntime-fp32", "openvino-fp16")
PASSING, FAILING = TARGETS
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _overrides(out_dir: Path) -> list[str]:
    return ["model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"out_dir={out_dir}", f"targets=[{','.join(TARGETS)}]",
            "verify.tolerances.fp16.max_mean_drift_px=-1", "verify.min_peak_margin=0", "verify.num_random=1",
            "benchmark.warmup=1", "benchmark.calls=3", "benchmark.blocks=1", "benchmark.throughput_images=2",
            "benchmark.settle_s=0", "benchmark.peers=false", "tune.enabled=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run (one job passed, one failed), benchmarked, with its report built by the stage."""
    out_dir = tmp_path_factory.mktemp("report_run")
    overrides = _overrides(out_dir)
    chain = run_python("-m", "pipeline", *overrides, f"hydra.run.dir={out_dir / 'hydra'}", cwd=REPO_ROOT)
    assert chain.returncode == 1, chain.stdout + chain.stderr  # the forced failure
    assert re.search(rf"{VARIANT}\.{PASSING}\s+passed", chain.stdout), chain.stdout
    cfg = load_config(overrides)
    benchmark(cfg, VARIANT)
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
    bench = json.loads(Path(cfg.plan["variants"][VARIANT]["benchmark"]).read_text())["targets"]
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



# --------------------------------------------------------------------------------------------- names from files

SCRIPT = "<script>alert(1)</script>"
MATH = "$x^2$"
BAD_MATH = "$x^$"  # mathtext cannot parse it: a figure that typeset it would fail to save
KEYPOINT_NAMES = [SCRIPT, MATH, BAD_MATH, "nose & <b>eye</b>"]
KEYPOINT_SET = '<img src=x onerror="alert(2)">'
BREACH = f"{SCRIPT} {BAD_MATH}"
LINK = "[click](javascript:alert(3)) *x* | y"
MACHINE = "<marquee>cpu</marquee>"
HOSTILE_TEXTS = [*KEYPOINT_NAMES, KEYPOINT_SET, BREACH, LINK, MACHINE]


class _Page(HTMLParser):
    """Tags, attribute names and text (entities decoded) of an HTML document."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: set[str] = set()
        self.hrefs: list[str] = []
        self.chunks: list[str] = []
        self.feed(page)
        self.text = "".join(self.chunks)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.update(name for name, _ in attrs)
        self.hrefs += [value for name, value in attrs if name == "href"]

    def handle_data(self, data):
        self.chunks.append(data)


@pytest.fixture(scope="module")
def hostile(run, tmp_path_factory):
    """A copy of the run whose files carry markup and mathtext in every name a user's file can set."""
    _, out_dir, _, _ = run
    root = tmp_path_factory.mktemp("hostile_run")
    shutil.copytree(out_dir, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("report", "hydra"))
    cfg = load_config(_overrides(root))
    for target in TARGETS:
        path = Path(cfg.plan["jobs"][f"{VARIANT}.{target}"]["artifact"]) / "artifact.json"
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta["onnx_metadata"].update(keypoint_names=json.dumps(KEYPOINT_NAMES), keypoint_set=KEYPOINT_SET)
        path.write_text(json.dumps(meta), encoding="utf-8")
    metrics_path = Path(cfg.plan["jobs"][f"{VARIANT}.{FAILING}"]["metrics"])
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    metrics["breaches"].append(BREACH)
    metrics_path.write_text(json.dumps(metrics), encoding="utf-8")
    bench_path = Path(cfg.plan["variants"][VARIANT]["benchmark"])
    bench = json.loads(bench_path.read_text(encoding="utf-8"))
    fastest = min(t["latency_ms_median"] for t in bench["targets"].values())
    bench["peers"] = {  # a peer with a drift is a point of the Pareto plot, one without it a labelled line
        SCRIPT: {"description": LINK, "latency_ms_median": 2 * fastest, "latency_ms_p90": 3 * fastest,
                 "throughput_img_s": 1.0, "throughput_batch": 2, "mean_drift_px": 0.25},
        BAD_MATH: {"description": MATH, "latency_ms_median": 1.5 * fastest, "latency_ms_p90": 2 * fastest},
    }
    bench["machine"] = {"cpu": MACHINE}
    bench_path.write_text(json.dumps(bench), encoding="utf-8")
    build_report(cfg, root / "report")
    return cfg, root / "report"


def test_names_from_files_are_text_in_the_page(hostile):
    _, report = hostile
    page = _Page((report / "index.html").read_text(encoding="utf-8"))
    for text in HOSTILE_TEXTS:
        assert text in page.text, text  # shown as written, so none of it was read as markup
    assert {"script", "marquee"}.isdisjoint(page.tags)
    assert page.tags.count("img") == 4  # latency-drift, size and Pareto plots, the overlay; no injected image
    assert not [a for a in page.attributes if a.startswith("on")]
    assert not [h for h in page.hrefs if not h.startswith("#")]


def test_names_from_files_are_text_in_the_markdown(hostile):
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py renders report.md (dev extra)")
    _, report = hostile
    markdown = (report / "report.md").read_text(encoding="utf-8")
    rendered = _Page(markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown))
    for text in HOSTILE_TEXTS:
        assert " ".join(text.split()) in rendered.text, text
    assert {"script", "marquee", "a", "em"}.isdisjoint(rendered.tags)
    assert rendered.tags.count("img") == 4
    assert rendered.tags.count("strong") == 2  # the recommended target and the failed row, nothing from a name
    assert not [a for a in rendered.attributes if a.startswith("on")]


def test_names_from_files_are_data_in_json_and_dropin_files(hostile, tmp_path):
    from pipeline.package.dropin import write_dropin

    cfg, report = hostile
    records = json.loads((report / "plots" / "latency_drift.json").read_text(encoding="utf-8"))
    assert {r["target"] for r in records if r["kind"] == "peer"} == {SCRIPT}
    artifact = tmp_path / "artifact"
    shutil.copytree(cfg.plan["jobs"][f"{VARIANT}.{PASSING}"]["artifact"], artifact)
    metadata = {"variant": VARIANT, "keypoint_names": json.dumps(KEYPOINT_NAMES), "keypoint_set": KEYPOINT_SET}
    write_dropin(artifact, PASSING, VARIANT, metadata)
    detail = json.loads((artifact / "detail.json").read_text(encoding="utf-8"))
    assert json.loads(detail["rtmpose_pipeline"]["keypoint_names"]) == KEYPOINT_NAMES
    assert detail["rtmpose_pipeline"]["keypoint_set"] == KEYPOINT_SET


def test_figure_text_is_never_mathtext(hostile, tmp_path):
    from matplotlib.text import Text

    _, report = hostile
    assert (report / "figures" / f"pareto_{VARIANT}.png").is_file()  # drawn with BAD_MATH as a peer's label
    rows = [Row(VARIANT, BAD_MATH, "fp32", "passed", latency_ms_median=2.0, drift_px=0.5, pareto=True),
            Row(VARIANT, MATH, "", "peer", latency_ms_median=3.0, kind="peer")]
    fig = pareto_figure(rows[:1], rows[1:], f"{MATH} {BAD_MATH}")
    texts = [t for t in fig.findobj(Text) if "$" in t.get_text()]
    assert len(texts) >= 3 and not any(t.get_parse_math() for t in texts)
    save_figure(fig, tmp_path / "pareto.png")  # typesetting BAD_MATH would raise ValueError here
    import dataclasses

    from pipeline.model.presets import preset_spec
    from pipeline.model.spec import KeypointSpec

    spec = preset_spec(VARIANT)
    names = tuple(KEYPOINT_NAMES) + tuple(f"k{i}" for i in range(len(KEYPOINT_NAMES), 17))
    spec = dataclasses.replace(spec, keypoints=KeypointSpec(BAD_MATH, names, ((0, 1), (2, 3))))
    columns = [Column(BAD_MATH, "reference", error=MATH), Column(SCRIPT, "failed", error=f"could not run: {BAD_MATH}")]
    draw_grid(columns, spec, tmp_path / "overlay.png", f"{BAD_MATH}: keypoints")
    assert cv2.imread(str(tmp_path / "overlay.png")) is not None


# --------------------------------------------------------------------------------------------- in a browser

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]  # root needs no-sandbox; no network here


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (a fresh empty profile per launch); skipped where either is missing."""
    executable = shutil.which("chromium") or shutil.which("google-chrome")
    if executable is None:
        pytest.skip("no chromium executable: apt-get install chromium (.ci/run installs it where apt-get runs as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def _open(browser, index: Path, screenshot: Path) -> dict:
    """Load the page from disk; return its console errors, page errors, dialogs, images and script count."""
    events: dict[str, list] = {"console_errors": [], "page_errors": [], "dialogs": [], "failed_requests": []}
    page = browser.new_page(viewport={"width": 1320, "height": 900})
    page.on("console", lambda m: events["console_errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: events["page_errors"].append(str(e)))
    page.on("requestfailed", lambda r: events["failed_requests"].append(r.url))
    page.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
    page.goto(index.as_uri(), wait_until="load")
    events["images"] = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}))")
    events["scripts"] = page.evaluate("document.scripts.length")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return events


def _screenshot_dir(tmp_path: Path) -> Path:
    return Path(os.environ.get("REPORT_SCREENSHOT_DIR") or tmp_path)


def _assert_clean(events: dict) -> None:
    for kind in ("console_errors", "page_errors", "dialogs", "failed_requests"):
        assert events[kind] == [], f"{kind}: {events[kind]}"
    assert events["scripts"] == 0
    assert events["images"], "no images on the page"
    broken = [i["src"] for i in events["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == [], f"images that did not load: {broken}"


def test_page_opens_in_chromium_with_every_image(run, browser, tmp_path):
    _, _, report, _ = run
    start = time.perf_counter()
    shot = _screenshot_dir(tmp_path) / "report.png"
    events = _open(browser, report / "index.html", shot)
    _assert_clean(events)
    assert len(events["images"]) == 4
    assert cv2.imread(str(shot)).shape[1] == 1320
    print(f"chromium: page opened, checked and captured in {time.perf_counter() - start:.1f} s")


def test_hostile_names_run_nothing_in_chromium(hostile, browser, tmp_path):
    _, report = hostile
    events = _open(browser, report / "index.html", _screenshot_dir(tmp_path) / "report-hostile-names.png")
    _assert_clean(events)  # no alert() dialog: no name became a script or an event handler


def test_an_artifact_with_other_output_names_is_a_column_error_not_a_crash():
    """An artifact that ran but names its outputs otherwise (an fp16 source's converter names, before such sources
    were brought to float32) fails its overlay column with one line; the report goes on."""
    import numpy as np

    from pipeline.core.errors import InputError

    def runner(feeds):
        return {"/head/cls_x/MatMul_cast_to_simcc_x": np.zeros((1, 17, 384), np.float32)}

    with pytest.raises(InputError, match=r"its outputs are \['/head/cls_x/MatMul_cast_to_simcc_x'\], not simcc_x"):
        run_on_crops(runner, np.zeros((2, 3, 256, 192), np.float32))

"""The conversion report: one static page over every variant x target, from the files other stages wrote.

Three parts, one job each:
    rows.py     collection: Rows (targets and peer baselines) and facts read from metrics, artifact.json,
                benchmark and plan; the Pareto front and the recommended artifact (pure functions)
    plots.py    the figures (matplotlib, PNG)
    render.py   index.html and report.md from the Jinja2 templates in templates/ (autoescaped)
This module puts them together (`build_report`).

A job's status is `passed` or `failed` (its metrics file says which, and what was breached),
`left out` (with the plan's reason) or `not built` (no metrics file yet). Peer baselines (what a user gets
without this pipeline) are rows of kind "peer" from the benchmark file, shown beside the targets.

Outputs, in the report directory (`<out_dir>/report`, written atomically as one folder):
    index.html                  one page, opens from disk: inline CSS, images by relative path, no script
    report.md                   the same tables, for a terminal or a pull request
    figures/latency_drift_<variant>.png, figures/size_<variant>.png, figures/pareto_<variant>.png
    overlays/<variant>.png      predicted skeletons on the bundled photos (pipeline/report/overlay.py)
    plots/latency_drift.json, plots/size.json   the plotted numbers as records, for `dvc plots show`
Same inputs, same bytes: no timestamps, hostnames or absolute paths; PNGs carry no Software metadata.
Names read from files are data: escaped in HTML and Markdown, never mathtext in figures, and made into
file names only through `file_stem`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.core.io import atomic_path, write_json
from pipeline.report.overlay import write_overlay
from pipeline.report.plots import latency_drift_figure, pareto_figure, plot_records, save_figure, size_figure
from pipeline.report.render import render_html, render_markdown
from pipeline.report.rows import STATUSES, Row, VariantReport, collect_rows, counts, variant_report

__all__ = ["REPORT_DIRNAME", "STATUSES", "Row", "build_report", "collect_rows", "file_stem", "report_dir",
           "summary_line"]

REPORT_DIRNAME = "report"
_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def report_dir(cfg: RunConfig) -> Path:
    """Where the report goes: `<out_dir>/report` (dvc.yaml names the same `${out_dir}/report`)."""
    return Path(cfg.out_dir) / REPORT_DIRNAME


def file_stem(name: str) -> str:
    """`name` as a file name inside the report: itself when it is plain ([A-Za-z0-9._-], no leading dot),
    else its plain characters plus the first 10 hex digits of its sha256 (no separators, no `..`, and two
    names never share a stem)."""
    if _SAFE_STEM.fullmatch(name) and ".." not in name:
        return name
    plain = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:60]
    return f"{plain or 'variant'}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:10]}"


def _draw_variant(cfg: RunConfig, report: VariantReport, tmp: Path) -> None:
    """The variant's figures and overlay into `tmp`; their relative paths (or why not) into report.images."""

    variant, stem, images = report.info.name, file_stem(report.info.name), report.images
    images.update({kind: f"figures/{kind}_{stem}.png" for kind in ("latency_drift", "size", "pareto")})
    save_figure(latency_drift_figure(report.rows, f"{variant}: latency vs keypoint drift"),
                tmp / images["latency_drift"])
    save_figure(size_figure(report.rows, f"{variant}: artifact size"), tmp / images["size"])
    save_figure(pareto_figure(report.rows, report.peers, f"{variant}: Pareto front, peers included"),
                tmp / images["pareto"])
    built = [(r.target, r.status, Path(r.artifact_dir)) for r in report.rows
             if r.status in ("passed", "failed") and Path(r.artifact_dir).is_dir()]
    if not Path(cfg.plan["variants"][variant]["reference"]).is_file():
        images["overlay_error"] = f"no overlay yet: the reference stage has not run for {variant}"
        return
    try:
        write_overlay(cfg, variant, built, tmp / "overlays" / f"{stem}.png")
        images["overlay"] = f"overlays/{stem}.png"
        images["overlay_columns"] = str(1 + len(built))
    except ValueError as exc:  # a reference made from other photos than pipeline/inputs/golden.py lists
        images["overlay_error"] = f"no overlay: {exc}"


def build_report(cfg: RunConfig, out_dir: Path) -> dict:
    """Write the report into `out_dir` (normally `report_dir(cfg)`), replacing it whole; return a summary.

    Summary: {"dir", "index", "markdown", "counts": {status: n}, "jobs": {job: status}}.
    """
    out_dir = Path(out_dir)
    rows = collect_rows(cfg)
    variants = [variant_report(cfg, variant, [r for r in rows if r.variant == variant])
                for variant in cfg.plan["variants"]]
    job_counts = counts(rows)
    with atomic_path(out_dir, is_dir=True) as tmp:
        for report in variants:
            _draw_variant(cfg, report, tmp)
        peers = [p for report in variants for p in report.peers]
        for name, records in plot_records(rows + peers).items():
            write_json(tmp / "plots" / f"{name}.json", records)
        (tmp / "index.html").write_text(render_html(variants, job_counts), encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(variants, job_counts), encoding="utf-8")
    return {"dir": str(out_dir), "index": str(out_dir / "index.html"), "markdown": str(out_dir / "report.md"),
            "counts": job_counts, "jobs": {r.job: r.status for r in rows}}


def summary_line(summary: dict) -> str:
    """One line for the terminal: where the page is and the jobs per status."""
    job_counts = summary["counts"]
    return (f"report {summary['index']}: {sum(job_counts.values())} jobs, "
            + ", ".join(f"{job_counts[s]} {s}" for s in STATUSES))

"""The conversion report: one static page over every variant x target, from the files other stages wrote.

Inputs (paths from `cfg.plan`): per job `metrics/<target>.json` (verify) and `<target>/artifact.json`
(build, with the ONNX metadata naming the weights); per variant `benchmarks/<variant>.json` and
`reference.npz` (the photo crops for the overlays); `plan.left_out` for jobs this host cannot run.
A job's status is `passed` or `failed` (its metrics file says which, and what was breached),
`left out` (with the plan's reason) or `not built` (no metrics file yet).

Outputs, in the report directory (`<out_dir>/report`, written atomically as one folder):
    index.html                  one page, opens from disk: inline CSS, images by relative path
    report.md                   the same tables, for a terminal or a pull request
    figures/latency_drift_<variant>.png, figures/size_<variant>.png
    overlays/<variant>.png      predicted skeletons on the bundled photos (pipeline/overlay.py)
    plots/latency_drift.json, plots/size.json   the plotted numbers as records, for `dvc plots show`
Same inputs, same bytes: no timestamps, hostnames or absolute paths; PNGs carry no Software metadata.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.io import atomic_path, write_json

REPORT_DIRNAME = "report"
STATUSES = ("passed", "failed", "left out", "not built")
STATUS_COLORS = {"passed": "#1a7f37", "failed": "#cf222e", "left out": "#9a6700", "not built": "#57606a"}
BASELINE = "onnxruntime-fp32"
PLOT_DPI = 150
MB = 1e6  # sizes are decimal megabytes


def report_dir(cfg: RunConfig) -> Path:
    """Where the report goes: `<out_dir>/report` (dvc.yaml names the same `${out_dir}/report`)."""
    return Path(cfg.out_dir) / REPORT_DIRNAME


# --------------------------------------------------------------------------------------------- collecting


@dataclass
class Row:
    """One variant x target, with every figure the report shows (None: not measured)."""

    variant: str
    target: str
    precision: str
    status: str  # one of STATUSES
    detail: str = ""  # the breaches, the left-out reason, or what is missing
    size_mb: float | None = None
    latency_ms_median: float | None = None
    latency_ms_p90: float | None = None
    speedup: float | None = None
    throughput_img_s: float | None = None
    throughput_batch: int | None = None
    drift_px: float | None = None
    cosine: float | None = None
    tolerance: dict = field(default_factory=dict)
    executes: dict = field(default_factory=dict)
    artifact_dir: str = ""

    @property
    def job(self) -> str:
        return f"{self.variant}.{self.target}"


@dataclass
class VariantInfo:
    name: str
    weights: str  # one sentence: which weights, with the checkpoint's sha256
    synthetic: bool
    warnings: list[str]
    tools: dict[str, dict[str, list[str]]]  # tool -> version -> targets that used it
    benchmark: str  # how latency was measured, or why there is none
    num_inputs: int | None


def _read_json(path: str | Path) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def artifact_size_bytes(artifact_dir: str | Path) -> int | None:
    root = Path(artifact_dir)
    if not root.is_dir():
        return None
    return sum(p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file())


def _min_cosine(metrics: dict) -> float | None:
    values = [float(o["cosine"]) for o in metrics.get("outputs", {}).values()]
    if not values:
        return None
    return float("nan") if any(v != v for v in values) else min(values)


def collect_rows(cfg: RunConfig) -> list[Row]:
    """One Row per variant x configured target, in `targets` order."""
    from pipeline.backends import get_target

    rows = []
    for variant, entry in cfg.plan["variants"].items():
        bench = (_read_json(entry["benchmark"]) or {}).get("candidates", {})
        for target in cfg.targets:
            job = f"{variant}.{target}"
            precision = get_target(target).precision
            row = Row(variant, target, precision, "not built")
            if job in cfg.plan["left_out"]:
                row.status, row.detail = "left out", cfg.plan["left_out"][job]
                rows.append(row)
                continue
            if job not in cfg.plan["jobs"]:
                row.detail = f"{job} is not in the plan; recompose params.yaml"
                rows.append(row)
                continue
            paths = cfg.plan["jobs"][job]
            row.artifact_dir = paths["artifact"]
            size = artifact_size_bytes(paths["artifact"])
            row.size_mb = None if size is None else size / MB
            metrics = _read_json(paths["metrics"])
            if metrics is None:
                row.detail = (f"built, not verified yet: run the verify stage for {job}" if size is not None
                              else f"no artifact yet: run the build and verify stages for {job}")
                row.tolerance = dict(vars(cfg.verify.tolerances[precision]))  # check_config: every precision has one
                rows.append(row)
                continue
            row.status = "passed" if metrics["passed"] else "failed"
            row.detail = "; ".join(metrics["breaches"]) if not metrics["passed"] else ""
            if row.status == "failed" and not row.detail:
                row.detail = "failed without a recorded breach"
            row.drift_px = metrics.get("keypoints", {}).get("confident", {}).get("mean_drift_px")
            row.cosine = _min_cosine(metrics)
            row.tolerance = metrics.get("tolerance", {})
            row.executes = metrics.get("runtime_settings", {}).get("execution_precision", {})
            timing = bench.get(target)
            if timing:
                row.latency_ms_median = timing["latency_ms_median"]
                row.latency_ms_p90 = timing["latency_ms_p90"]
                row.speedup = timing.get("speedup_vs_best_peer")
                row.throughput_img_s = timing.get("throughput_img_s")
                row.throughput_batch = timing.get("throughput_images")
            rows.append(row)
    return rows


def _weights_sentence(metadata: dict, configured: str) -> tuple[str, bool]:
    source = metadata.get("weights_source", "")
    sha = metadata.get("checkpoint_sha256", "")
    if source == "synthetic" or metadata.get("synthetic_weights") == "true":
        return "synthetic: seeded random weights (model.checkpoint is unset)", True
    names = {"demo": "demo checkpoint", "checkpoint": "user checkpoint", "onnx": "supplied ONNX"}
    return f"{names.get(source, source or 'unknown')} {configured}, sha256 {sha or 'not recorded'}", False


def variant_info(cfg: RunConfig, variant: str, rows: list[Row]) -> VariantInfo:
    """Which weights and tool versions made the variant's artifacts, read from their artifact.json."""
    from pipeline.plan import SYNTHETIC_WEIGHTS_SOURCE

    entry = cfg.plan["variants"][variant]
    tools: dict[str, dict[str, list[str]]] = {}
    weights_seen: dict[tuple[str, str], list[str]] = {}
    metadata: dict = {}
    for row in rows:
        meta = _read_json(Path(row.artifact_dir) / "artifact.json") if row.artifact_dir else None
        if meta is None:
            continue
        onnx_meta = meta.get("onnx_metadata", {})
        metadata = metadata or onnx_meta
        key = (onnx_meta.get("weights_source", ""), onnx_meta.get("checkpoint_sha256", ""))
        weights_seen.setdefault(key, []).append(row.target)
        versions = dict(json.loads(onnx_meta.get("tool_versions", "{}")))
        tool, _, version = onnx_meta.get("simplified_by", "").partition(" ")
        if tool:
            versions[tool] = version
        versions.update(meta.get("tool_versions", {}))
        for tool, version in versions.items():
            tools.setdefault(tool, {}).setdefault(version, []).append(row.target)
    if metadata:
        weights, synthetic = _weights_sentence(metadata, entry["weights"])
    elif entry["weights"] == SYNTHETIC_WEIGHTS_SOURCE:
        weights, synthetic = _weights_sentence({"weights_source": "synthetic"}, "")
    else:
        weights, synthetic = f"{entry['weights']} (no artifact built yet, so no sha256 recorded)", False
    warnings = []
    if len(weights_seen) > 1:
        groups = "; ".join(f"{src or '?'} {sha[:12] or '-'}: {', '.join(t)}" for (src, sha), t in weights_seen.items())
        warnings.append(f"artifacts were built from different weights ({groups}); rebuild the stale ones")
    bench = _read_json(entry["benchmark"])
    if bench:
        method = bench.get("method", {})
        benchmark = (f"batch-1 latency: {method.get('blocks', '?')} blocks of {method.get('calls', '?')} timed calls "
                     "per candidate, each candidate in its own process, blocks alternating across candidates; "
                     f"throughput over {method.get('throughput_images', '?')} images in flight; speed-up against "
                     "the best peer (what a user gets without the pipeline)")
    else:
        benchmark = (f"no benchmark yet: run `python -m stages.benchmark {variant}` (under DVC it runs once every "
                     "job of the variant passed)")
    num_inputs = next((r for r in _metrics_of(cfg, rows) if r is not None), {}).get("num_inputs")
    return VariantInfo(variant, weights, synthetic, warnings, tools, benchmark, num_inputs)


def _metrics_of(cfg: RunConfig, rows: list[Row]) -> Iterator[dict | None]:
    for row in rows:
        if row.job in cfg.plan["jobs"]:
            yield _read_json(cfg.plan["jobs"][row.job]["metrics"])


# --------------------------------------------------------------------------------------------- plots


@contextmanager
def _plot_style() -> Iterator[None]:
    """matplotlib's defaults plus ours, whatever the user's matplotlibrc says: equal inputs, equal bytes."""
    from matplotlib import rc_context, style

    with style.context("default"), rc_context({
        "font.family": "DejaVu Sans", "font.size": 8.5, "axes.titlesize": 10, "axes.titleweight": "bold",
        "axes.titlelocation": "left", "axes.spines.top": False, "axes.spines.right": False,
        "axes.edgecolor": "#8c959f", "xtick.color": "#57606a", "ytick.color": "#57606a",
        "axes.labelcolor": "#24292f", "grid.color": "#d0d7de", "grid.linewidth": 0.6,
    }):
        yield


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PLOT_DPI, metadata={"Software": None})
    return path


def _label_points(ax, points: list[Row], xmax: float, ymax: float) -> None:
    """Target names beside their points, moved up a line until they overlap no other label or point.

    Positions are in axes fractions with a text width estimated from the name's length: deterministic,
    and good enough for a handful of targets.
    """
    char_w, line_h = 0.0118, 0.05
    points_frac = [(r.latency_ms_median / xmax, r.drift_px / ymax) for r in points]
    boxes: list[tuple[float, float, float, float]] = [(0.8, 0.84, 1.0, 1.0)]  # the legend, upper right

    def free(box: tuple[float, float, float, float]) -> bool:
        x0, y0, x1, y1 = box
        if x0 < 0 or x1 > 1 or y1 > 1:
            return False
        clear_of_points = all(not (x0 - 0.012 < px < x1 + 0.012 and y0 - 0.02 < py < y1 + 0.02)
                              for px, py in points_frac)
        return clear_of_points and all(x1 <= b[0] or x0 >= b[2] or y1 <= b[1] or y0 >= b[3] for b in boxes)

    for row in sorted(points, key=lambda r: (-r.latency_ms_median, r.drift_px, r.target)):
        fx, fy = row.latency_ms_median / xmax, row.drift_px / ymax
        width = char_w * len(row.target)
        # Right of the point first, a line higher each try; placing the slowest first makes a cluster's labels
        # a staircase whose leader lines cross no other label.
        candidates = [(x0, fy + 0.025 + level * line_h, x0 + width, fy + 0.025 + level * line_h + line_h * 0.8)
                      for x0 in (fx + 0.02, fx - 0.02 - width) for level in range(10)]
        box = next((b for b in candidates if free(b)), candidates[0])
        boxes.append(box)
        ax.annotate(row.target, (row.latency_ms_median, row.drift_px), xytext=(box[0], box[1]),
                    textcoords="axes fraction", ha="left", va="bottom", fontsize=7.5, color="#24292f",
                    arrowprops={"arrowstyle": "-", "color": "#8c959f", "linewidth": 0.6, "shrinkA": 1, "shrinkB": 4}
                    if box[1] > fy + 0.03 or box[0] < fx else None)


def plot_latency_drift(rows: list[Row], path: Path, title: str) -> Path:
    """The trade-off a user picks from: batch-1 latency against mean keypoint drift, one point per target."""
    from matplotlib.figure import Figure

    points = [r for r in rows if r.latency_ms_median is not None and r.drift_px is not None]
    unplotted = [r.target for r in rows if r.status in ("passed", "failed") and r not in points]
    with _plot_style():
        fig = Figure(figsize=(5.8, 4.0), dpi=PLOT_DPI)
        ax = fig.subplots()
        fig.subplots_adjust(left=0.1, right=0.97, top=0.9, bottom=0.17 if unplotted else 0.13)
        ax.set_title(title)
        ax.grid(True)
        ax.set_axisbelow(True)
        ax.set_xlabel("latency, batch 1, median (ms)   ·   lower left is faster and closer to the reference")
        ax.set_ylabel("mean keypoint drift vs reference (px)")
        if points:
            xmax = max(r.latency_ms_median for r in points) * 1.2
            ymax = max(max(r.drift_px for r in points) * 1.3, 0.5)
            ax.set_xlim(0, xmax)
            ax.set_ylim(0, ymax)
            for status in ("passed", "failed"):
                chosen = [r for r in points if r.status == status]
                if chosen:
                    ax.scatter([r.latency_ms_median for r in chosen], [r.drift_px for r in chosen], s=48,
                               c=STATUS_COLORS[status], edgecolors="white", linewidths=0.8, zorder=3, label=status)
            _label_points(ax, points, xmax, ymax)
            ax.legend(loc="upper right", frameon=False)
        else:
            ax.text(0.5, 0.5, "nothing to plot: no job has both a benchmark and a keypoint drift",
                    transform=ax.transAxes, ha="center", va="center", color="#57606a")
        if unplotted:
            fig.text(0.01, 0.015, "not plotted (no latency or no drift): " + ", ".join(unplotted),
                     fontsize=7, color="#57606a")
        return _save(fig, path)


def plot_size(rows: list[Row], path: Path, title: str) -> Path:
    """Artifact size per built target (every file in its folder), coloured by status."""
    from matplotlib.figure import Figure

    bars = [r for r in rows if r.size_mb is not None]
    with _plot_style():
        fig = Figure(figsize=(5.8, max(2.4, 1.1 + 0.36 * len(bars))), dpi=PLOT_DPI)
        ax = fig.subplots()
        fig.subplots_adjust(left=0.25, right=0.97, top=0.86, bottom=0.2)
        ax.set_title(title)
        ax.set_xlabel("artifact size (MB, all files)")
        ax.grid(True, axis="x")
        ax.set_axisbelow(True)
        if bars:
            labels = [r.target for r in bars]
            sizes = [r.size_mb for r in bars]
            ax.barh(labels, sizes, color=[STATUS_COLORS.get(r.status, "#57606a") for r in bars], alpha=0.85,
                    height=0.62)
            ax.invert_yaxis()
            ax.set_xlim(0, max(sizes) * 1.22)
            for i, size in enumerate(sizes):
                ax.text(size, i, f" {size:.2f} MB", va="center", fontsize=7.5, color="#24292f")
        else:
            ax.text(0.5, 0.5, "no artifact built yet", transform=ax.transAxes, ha="center", color="#57606a")
        return _save(fig, path)


def plot_records(rows: list[Row]) -> dict[str, list[dict]]:
    """The plotted numbers as DVC plots data (lists of records, rounded for readable diffs)."""
    latency = [{"variant": r.variant, "target": r.target, "status": r.status,
                "latency_ms": round(r.latency_ms_median, 3), "drift_px": round(r.drift_px, 4)}
               for r in rows if r.latency_ms_median is not None and r.drift_px is not None]
    size = [{"variant": r.variant, "target": r.target, "status": r.status, "size_mb": round(r.size_mb, 4)}
            for r in rows if r.size_mb is not None]
    return {"latency_drift": latency, "size": size}


# --------------------------------------------------------------------------------------------- formatting


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    if value is None:
        return "—"
    if value != value:
        return "NaN"
    return f"{value:{spec}}{suffix}"


def _tolerance_text(tol: dict) -> str:
    if not tol:
        return "—"
    return (f"atol {tol['atol']:g}, rtol {tol['rtol']:g}, cosine ≥ {tol['min_cosine']:g}, mean drift ≤ "
            f"{tol['max_mean_drift_px']:g} px, ≥ {tol['min_agreement']:.0%} within {tol['agreement_px']:g} px")


def _executes(executes: dict) -> str:
    return ", ".join(f"{p} {n}" for p, n in sorted(executes.items())) if executes else "—"


def _tools_text(tools: dict[str, dict[str, list[str]]]) -> list[str]:
    parts = []
    for tool in sorted(tools):
        versions = tools[tool]
        if len(versions) == 1:
            parts.append(f"{tool} {next(iter(versions))}")
        else:
            parts.append(f"{tool} " + ", ".join(f"{v} ({', '.join(t)})" for v, t in sorted(versions.items())))
    return parts


def _best(rows: list[Row], attr: str, highest: bool) -> set[str]:
    """Targets with the best value of `attr` among passed rows (ties all win)."""
    values = [(getattr(r, attr), r.target) for r in rows if r.status == "passed" and getattr(r, attr) is not None]
    if len(values) < 2:
        return set()
    best = max(v for v, _ in values) if highest else min(v for v, _ in values)
    return {t for v, t in values if v == best}


def _counts(rows: list[Row]) -> dict[str, int]:
    return {status: sum(r.status == status for r in rows) for status in STATUSES}


# --------------------------------------------------------------------------------------------- HTML

CSS = """
:root { --fg:#1f2328; --muted:#656d76; --border:#d0d7de; --subtle:#f6f8fa;
  --green:#1a7f37; --green-bg:#dafbe1; --red:#cf222e; --red-bg:#ffebe9;
  --amber:#9a6700; --amber-bg:#fff8c5; --grey:#57606a; --grey-bg:#eaeef2; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:#fff;
  font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI","Noto Sans",Helvetica,Arial,sans-serif; }
main { max-width:1320px; margin:0 auto; padding:28px 28px 56px; }
h1 { font-size:26px; margin:0 0 6px; letter-spacing:-0.01em; }
h2 { font-size:20px; margin:36px 0 10px; padding-bottom:6px; border-bottom:1px solid var(--border); }
h3 { font-size:15px; margin:26px 0 8px; }
code, .mono { font:12px/1.45 ui-monospace,SFMono-Regular,"SF Mono",Menlo,Consolas,"Liberation Mono",monospace; }
.lead { color:var(--muted); margin:0 0 14px; }
.summary { display:flex; gap:8px; flex-wrap:wrap; align-items:center; }
.summary .total { font-weight:600; margin-right:4px; }
.badge { display:inline-block; padding:1px 10px; border-radius:999px; font-size:12px; font-weight:600;
  border:1px solid transparent; white-space:nowrap; }
.badge.passed { color:var(--green); background:var(--green-bg); border-color:#aceebb; }
.badge.failed { color:var(--red); background:var(--red-bg); border-color:#ffcecb; }
.badge.left-out { color:var(--amber); background:var(--amber-bg); border-color:#f5e0a0; }
.badge.not-built { color:var(--grey); background:var(--grey-bg); border-color:#d0d7de; }
.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 16px; margin:0 0 14px; }
.facts dt { color:var(--muted); } .facts dd { margin:0; }
.tools span { display:inline-block; margin:0 10px 0 0; white-space:nowrap; }
.callout { border:1px solid #f5e0a0; background:var(--amber-bg); border-radius:6px; padding:8px 12px; margin:0 0 14px; }
.callout.warn { border-color:#ffcecb; background:var(--red-bg); }
.table-wrap { overflow-x:auto; border:1px solid var(--border); border-radius:8px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { padding:8px 12px; border-bottom:1px solid var(--border); vertical-align:top; }
thead th { background:var(--subtle); text-align:left; font-weight:600; font-size:12px; color:var(--grey);
  white-space:nowrap; vertical-align:bottom; }
th .unit { display:block; font-weight:400; }
tbody tr:last-child td { border-bottom:none; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.target { font-weight:600; white-space:nowrap; }
td .limit { display:block; color:var(--muted); font-size:11px; font-weight:400; }
td.bad { color:var(--red); font-weight:600; }
td.best { color:var(--green); font-weight:700; }
tr.has-detail td { border-bottom:none; }
tr.detail td { padding-top:0; font-size:12px; }
tr.detail.failed td { color:var(--red); }
tr.detail.left-out td, tr.detail.not-built td { color:var(--muted); }
.notes { color:var(--muted); font-size:12px; margin:8px 2px 0; }
.notes b { color:var(--fg); font-weight:600; }
.plots { display:grid; grid-template-columns:1fr 1fr; gap:18px; align-items:start; margin-top:18px; }
figure { margin:0; border:1px solid var(--border); border-radius:8px; padding:8px; background:#fff; }
figure img { display:block; width:100%; height:auto; }
figcaption { color:var(--muted); font-size:12px; margin-top:4px; }
.overlay { overflow-x:auto; }
table.tol { width:auto; }
table.overview td .limit { display:block; margin-top:2px; }
a { color:#0969da; text-decoration:none; } a:hover { text-decoration:underline; }
footer { margin-top:40px; color:var(--muted); font-size:12px; }
"""


def _badge(status: str, text: str = "") -> str:
    return f'<span class="badge {status.replace(" ", "-")}">{html.escape(text or status)}</span>'


def _cell(text: str, classes: str = "num", limit: str = "") -> str:
    extra = f'<span class="limit">{html.escape(limit)}</span>' if limit else ""
    return f'<td class="{classes}">{html.escape(text)}{extra}</td>'


HEADERS = [("Target", "", ""), ("Status", "", ""), ("Size", "MB", "num"), ("Latency", "median ms", "num"),
           ("p90", "ms", "num"), ("Speed-up", f"× {BASELINE}", "num"), ("Throughput", "img/s", "num"),
           ("Keypoint drift", "mean px", "num"), ("Cosine", "min of simcc_x/y", "num"),
           ("Executes", "ops per precision", "")]


def _html_row(row: Row, best: dict[str, set[str]]) -> str:
    tol = row.tolerance
    drift_bad = row.drift_px is not None and tol and row.drift_px > tol["max_mean_drift_px"]
    cos_bad = row.cosine is not None and tol and not row.cosine >= tol["min_cosine"]
    measured = row.status in ("passed", "failed")

    def cls(attr: str, bad: bool = False) -> str:
        return "num bad" if bad else "num best" if row.target in best.get(attr, ()) else "num"

    cells = [
        f'<td class="target">{html.escape(row.target)}</td>',
        f"<td>{_badge(row.status)}</td>",
        _cell(_fmt(row.size_mb, ".2f"), cls("size_mb")),
        _cell(_fmt(row.latency_ms_median, ".2f"), cls("latency_ms_median")),
        _cell(_fmt(row.latency_ms_p90, ".2f")),
        _cell(_fmt(row.speedup, ".2f", "×"), cls("speedup")),
        _cell(_fmt(row.throughput_img_s, ".1f"), cls("throughput_img_s"),
              f"batch {row.throughput_batch}" if row.throughput_batch else ""),
        _cell(_fmt(row.drift_px, ".2f") if measured else "—", cls("drift", drift_bad),
              f"≤ {tol['max_mean_drift_px']:g}" if tol else ""),
        _cell(_fmt(row.cosine, ".7f") if measured else "—", cls("cosine", cos_bad),
              f"≥ {tol['min_cosine']:g}" if tol else ""),
        f'<td class="mono">{html.escape(_executes(row.executes))}</td>',
    ]
    status_class = row.status.replace(" ", "-")
    if not row.detail:
        return f'<tr class="{status_class}">' + "".join(cells) + "</tr>"
    detail_text = row.detail
    if row.status == "failed" and row.drift_px is None:
        detail_text += " (keypoint drift is measured only when the outputs pass)"
    detail = (f'<tr class="detail {status_class}"><td></td><td colspan="{len(HEADERS) - 1}">'
              f'<span class="mono">{html.escape(detail_text)}</span></td></tr>')
    return f'<tr class="{status_class} has-detail">' + "".join(cells) + "</tr>" + detail


def _tolerance_table(rows: list[Row]) -> str:
    by_precision: dict[str, dict] = {}
    for row in rows:
        if row.tolerance and row.precision not in by_precision:
            by_precision[row.precision] = row.tolerance
    if not by_precision:
        return ""
    head = ("<tr><th>Precision</th><th class=num>atol</th><th class=num>rtol</th><th class=num>min cosine</th>"
            "<th class=num>max mean drift<span class=unit>px</span></th>"
            "<th class=num>agreement<span class=unit>share within px</span></th><th>Targets</th></tr>")
    body = []
    for precision, tol in by_precision.items():
        targets = ", ".join(r.target for r in rows if r.precision == precision and r.tolerance)
        body.append(f"<tr><td class=target>{precision}</td>" + _cell(f"{tol['atol']:g}") + _cell(f"{tol['rtol']:g}")
                    + _cell(f"{tol['min_cosine']:g}") + _cell(f"{tol['max_mean_drift_px']:g}")
                    + _cell(f"≥ {tol['min_agreement']:.0%} within {tol['agreement_px']:g}")
                    + f"<td>{html.escape(targets)}</td></tr>")
    return ('<h3>Tolerances applied</h3><p class="notes">An element passes when |Δ| ≤ atol or |Δ|/|ref| ≤ rtol; '
            'as recorded in each metrics file when it was verified (conf/verify/ for jobs not verified yet).</p>'
            '<div class="table-wrap"><table class="tol"><thead>' + head + "</thead><tbody>"
            + "".join(body) + "</tbody></table></div>")


def _overview(variants: list[tuple[VariantInfo, list[Row], dict[str, str]]]) -> str:
    """Variant x target matrix of status badges (and median latency), linking to each variant's section."""
    targets = list(dict.fromkeys(r.target for _, rows, _ in variants for r in rows))
    head = "<tr><th>Variant</th>" + "".join(f"<th>{html.escape(t)}</th>" for t in targets) + "</tr>"
    body = []
    for info, rows, _ in variants:
        by_target = {r.target: r for r in rows}
        cells = []
        for target in targets:
            row = by_target.get(target)
            ms = row.latency_ms_median if row else None
            latency = f'<span class="limit">{ms:.2f} ms</span>' if ms is not None else ""
            cells.append(f"<td>{_badge(row.status)}{latency}</td>" if row else "<td>—</td>")
        body.append(f'<tr><td class="target"><a href="#{html.escape(info.name)}">{html.escape(info.name)}</a></td>'
                    + "".join(cells) + "</tr>")
    return ('<h2>Overview</h2><div class="table-wrap"><table class="overview"><thead>' + head + "</thead><tbody>"
            + "".join(body) + "</tbody></table></div>")


def render_html(variants: list[tuple[VariantInfo, list[Row], dict[str, str]]], counts: dict[str, int]) -> str:
    """The whole page; `variants` holds (info, rows, relative image paths by kind) per variant."""
    total = sum(counts.values())
    summary = "".join(_badge(s, f"{counts[s]} {s}") for s in STATUSES if counts[s])
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>RTMPose conversion report</title>", f"<style>{CSS}</style></head><body><main>",
             "<h1>RTMPose conversion report</h1>",
             '<p class="lead">Every variant × target: whether it matches the reference within its precision\'s '
             "tolerances, what it costs in size and latency, and how far its keypoints move.</p>",
             f'<div class="summary"><span class="total">{total} job{"s" if total != 1 else ""}</span>{summary}</div>']
    if len(variants) > 1:
        parts.append(_overview(variants))
    for info, rows, images in variants:
        best = {"size_mb": _best(rows, "size_mb", False), "latency_ms_median": _best(rows, "latency_ms_median", False),
                "speedup": _best(rows, "speedup", True), "throughput_img_s": _best(rows, "throughput_img_s", True)}
        parts.append(f'<section id="{html.escape(info.name)}"><h2>{html.escape(info.name)}</h2>')
        if info.synthetic:
            parts.append('<div class="callout"><b>Synthetic weights.</b> Keypoints come from seeded random weights: '
                         "the poses are meaningless, but every difference between a target and the reference is "
                         "real. Set <code>model.checkpoint</code> to convert a trained model.</div>")
        for warning in info.warnings:
            parts.append(f'<div class="callout warn">{html.escape(warning)}</div>')
        tools = "".join(f"<span>{html.escape(t)}</span>" for t in _tools_text(info.tools)) or "—"
        inputs = (f"{info.num_inputs} golden inputs (the bundled photo crops and seeded random tensors)"
                  if info.num_inputs else "—")
        parts.append('<dl class="facts">'
                     f"<dt>Weights</dt><dd>{html.escape(info.weights)}</dd>"
                     f'<dt>Tools</dt><dd class="tools">{tools}</dd>'
                     f"<dt>Verified on</dt><dd>{html.escape(inputs)}</dd>"
                     f"<dt>Benchmark</dt><dd>{html.escape(info.benchmark)}</dd></dl>")
        head = "".join(f'<th class="{c}">{html.escape(name)}'
                       + (f'<span class="unit">{html.escape(unit)}</span>' if unit else "") + "</th>"
                       for name, unit, c in HEADERS)
        parts.append('<div class="table-wrap"><table class="jobs"><thead><tr>' + head + "</tr></thead><tbody>"
                     + "".join(_html_row(r, best) for r in rows) + "</tbody></table></div>")
        parts.append('<p class="notes"><b>Drift</b>: mean displacement of the decoded keypoints from the '
                     "reference's over all golden inputs, in model-input pixels. <b>Cosine</b>: the lower of "
                     "simcc_x and simcc_y. Small grey figures are the limits applied; <span style=\"color:"
                     "var(--green);font-weight:700\">green</span> marks the best passing value. "
                     "<b>Executes</b>: operations the runtime reports per precision.</p>")
        figures = []
        for kind, caption in (("latency_drift", "Latency against keypoint drift: pick from the lower left."),
                              ("size", "Artifact size: every file of the artifact folder.")):
            if kind in images:
                figures.append(f'<figure><img src="{html.escape(images[kind])}" alt="{kind} plot">'
                               f"<figcaption>{caption}</figcaption></figure>")
        parts.append('<div class="plots">' + "".join(figures) + "</div>")
        parts.append("<h3>Keypoints on the bundled photos</h3>")
        if "overlay" in images:
            parts.append('<p class="notes">Each target runs on the photo crops verify used; its keypoints are mapped '
                         "back into the photo. Faint white: the reference's skeleton under each target. "
                         "Δ: mean keypoint shift from the reference, in photo pixels.</p>"
                         f'<figure class="overlay"><img src="{html.escape(images["overlay"])}" '
                         f'style="min-width:{140 * int(images["overlay_columns"])}px" '
                         'alt="keypoint overlays"></figure>')
        else:
            parts.append(f'<p class="notes">{html.escape(images.get("overlay_error", "no overlay"))}</p>')
        parts.append(_tolerance_table(rows))
        parts.append("</section>")
    parts.append('<footer>Written by <code>python -m stages.report</code> from the verify metrics, artifacts and '
                 "benchmarks under <code>out_dir</code>; sizes in decimal MB.</footer></main></body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------- Markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(variants: list[tuple[VariantInfo, list[Row], dict[str, str]]], counts: dict[str, int]) -> str:
    total = sum(counts.values())
    lines = ["# RTMPose conversion report", "",
             f"{total} jobs: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES) + ".", ""]
    for info, rows, images in variants:
        lines += [f"## {info.name}", "", f"- Weights: {_md(info.weights)}",
                  f"- Tools: {_md(', '.join(_tools_text(info.tools)) or '—')}",
                  f"- Benchmark: {_md(info.benchmark)}"]
        lines += [f"- Warning: {_md(w)}" for w in info.warnings]
        lines += ["", "| target | status | size (MB) | latency median (ms) | p90 (ms) | speed-up | throughput (img/s) "
                  "| drift (px) | min cosine | tolerance |",
                  "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
        for r in rows:
            status = r.status if not r.detail else f"{r.status}: {r.detail}"
            if r.status == "failed":
                status = f"**{status}**"
            lines.append("| " + " | ".join(_md(c) for c in (
                r.target, status, _fmt(r.size_mb, ".2f"), _fmt(r.latency_ms_median, ".2f"),
                _fmt(r.latency_ms_p90, ".2f"), _fmt(r.speedup, ".2f", "×"), _fmt(r.throughput_img_s, ".1f"),
                _fmt(r.drift_px, ".2f"), _fmt(r.cosine, ".7f"), _tolerance_text(r.tolerance))) + " |")
        lines.append("")
        for kind, alt in (("latency_drift", "latency vs keypoint drift"), ("size", "artifact size"),
                          ("overlay", "keypoints on the bundled photos")):
            if kind in images:
                lines += [f"![{alt}]({images[kind]})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- the report


def build_report(cfg: RunConfig, out_dir: Path) -> dict:
    """Write the report into `out_dir` (normally `report_dir(cfg)`), replacing it whole; return a summary.

    Summary: {"dir", "index", "markdown", "counts": {status: n}, "jobs": {job: status}}.
    """
    from pipeline.overlay import write_overlay

    out_dir = Path(out_dir)
    rows = collect_rows(cfg)
    variants = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        for variant in cfg.plan["variants"]:
            vrows = [r for r in rows if r.variant == variant]
            info = variant_info(cfg, variant, vrows)
            images = {"latency_drift": f"figures/latency_drift_{variant}.png", "size": f"figures/size_{variant}.png"}
            plot_latency_drift(vrows, tmp / images["latency_drift"], f"{variant}: latency vs keypoint drift")
            plot_size(vrows, tmp / images["size"], f"{variant}: artifact size")
            built = [(r.target, r.status, Path(r.artifact_dir)) for r in vrows
                     if r.status in ("passed", "failed") and Path(r.artifact_dir).is_dir()]
            if not Path(cfg.plan["variants"][variant]["reference"]).is_file():
                images["overlay_error"] = f"no overlay yet: the reference stage has not run for {variant}"
            else:
                try:
                    write_overlay(cfg, variant, built, tmp / "overlays" / f"{variant}.png")
                    images["overlay"] = f"overlays/{variant}.png"
                    images["overlay_columns"] = str(1 + len(built))
                except ValueError as exc:  # a reference made from other photos than pipeline/golden.py lists
                    images["overlay_error"] = f"no overlay: {exc}"
            variants.append((info, vrows, images))
        counts = _counts(rows)
        for name, records in plot_records(rows).items():
            write_json(tmp / "plots" / f"{name}.json", records)
        (tmp / "index.html").write_text(render_html(variants, counts), encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(variants, counts), encoding="utf-8")
    return {"dir": str(out_dir), "index": str(out_dir / "index.html"), "markdown": str(out_dir / "report.md"),
            "counts": counts, "jobs": {r.job: r.status for r in rows}}


def summary_line(summary: dict) -> str:
    counts = summary["counts"]
    return (f"report {summary['index']}: {sum(counts.values())} jobs, "
            + ", ".join(f"{counts[s]} {s}" for s in STATUSES))


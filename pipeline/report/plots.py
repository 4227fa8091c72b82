"""Plots: the report's figures as PNG, drawn with matplotlib from collected rows (pipeline/report/rows.py).

Same inputs, same bytes: matplotlib's default style plus ours whatever the user's matplotlibrc says, fixed
size and dpi, no Software metadata. Text is never mathtext (`text.parse_math` is off): target, peer and
variant names are data read from files, and a `$` in one must show as a `$`, not typeset (or fail to).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.report.rows import Row

STATUS_COLORS = {"passed": "#1a7f37", "failed": "#cf222e", "left out": "#9a6700", "not built": "#57606a",
                 "peer": "#8250df"}
PLOT_DPI = 150


@contextmanager
def plot_style() -> Iterator[None]:
    """matplotlib's defaults plus ours, whatever the user's matplotlibrc says: equal inputs, equal bytes."""
    from matplotlib import rc_context, style

    with style.context("default"), rc_context({
        "font.family": "DejaVu Sans", "font.size": 8.5, "axes.titlesize": 10, "axes.titleweight": "bold",
        "axes.titlelocation": "left", "axes.spines.top": False, "axes.spines.right": False,
        "axes.edgecolor": "#8c959f", "xtick.color": "#57606a", "ytick.color": "#57606a",
        "axes.labelcolor": "#24292f", "grid.color": "#d0d7de", "grid.linewidth": 0.6,
        "text.parse_math": False,  # names from files are plain text: "$x^2$" stays "$x^2$"
    }):
        yield


def save_figure(fig, path: Path) -> Path:
    """Write `fig` as PNG at PLOT_DPI without Software metadata (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with plot_style():
        fig.savefig(path, dpi=PLOT_DPI, metadata={"Software": None})
    return path


def _label_points(ax, points: list[Row], xmax: float, ymax: float,
                  legend_box: tuple[float, float, float, float] = (0.8, 0.84, 1.0, 1.0)) -> None:
    """Target names beside their points, moved up a line until they overlap no other label or point.

    Positions are in axes fractions with a text width estimated from the name's length: deterministic,
    and good enough for a handful of targets.
    """
    char_w, line_h = 0.0118, 0.05
    points_frac = [(r.latency_ms_median / xmax, r.drift_px / ymax) for r in points]
    boxes: list[tuple[float, float, float, float]] = [legend_box]  # the legend, upper right

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




def _axes_box(fig, ax, artist) -> tuple[float, float, float, float]:
    """Where `artist` sits, as (x0, y0, x1, y1) in axes fractions, measured by the Agg renderer savefig uses."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    box = artist.get_window_extent(FigureCanvasAgg(fig).get_renderer()).transformed(ax.transAxes.inverted())
    return (box.x0, box.y0, box.x1, box.y1)


def _unplotted_note(fig, unplotted: list[str]) -> None:
    if unplotted:
        fig.text(0.01, 0.015, "not plotted (no latency or no drift): " + ", ".join(unplotted),
                 fontsize=7, color="#57606a")


def _latency_drift_axes(title: str, xlabel: str, unplotted: list[str]):
    """A figure and axes for latency (x, ms) against mean keypoint drift (y, px); call inside plot_style()."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.8, 4.0), dpi=PLOT_DPI)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.1, right=0.97, top=0.9, bottom=0.17 if unplotted else 0.13)
    ax.set_title(title)
    ax.grid(True)
    ax.set_axisbelow(True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean keypoint drift vs reference (px)")
    return fig, ax


def latency_drift_figure(rows: list[Row], title: str):
    """The trade-off a user picks from: batch-1 latency against mean keypoint drift, one point per target."""
    points = [r for r in rows if r.latency_ms_median is not None and r.drift_px is not None]
    unplotted = [r.target for r in rows if r.status in ("passed", "failed") and r not in points]
    with plot_style():
        fig, ax = _latency_drift_axes(
            title, "latency, batch 1, median (ms)   ·   lower left is faster and closer to the reference", unplotted)
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
        _unplotted_note(fig, unplotted)
    return fig


def size_figure(rows: list[Row], title: str):
    """Artifact size per built target (every file in its folder), coloured by status."""
    from matplotlib.figure import Figure

    bars = [r for r in rows if r.size_mb is not None]
    with plot_style():
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
    return fig


def pareto_figure(rows: list[Row], peers: list[Row], title: str):
    """Latency against drift over every timed target and peer baseline, with the Pareto front of the
    verified targets (`Row.pareto`) as a staircase and the recommended artifact ringed. A peer without a
    measured drift is a dashed vertical line at its latency."""
    points = [r for r in rows if r.status in ("passed", "failed")
              and r.latency_ms_median is not None and r.drift_px is not None]
    unplotted = [r.target for r in rows if r.status in ("passed", "failed") and r not in points]
    peer_points = [p for p in peers if p.latency_ms_median is not None and p.drift_px is not None]
    peer_lines = [p for p in peers if p.latency_ms_median is not None and p.drift_px is None]
    with plot_style():
        fig, ax = _latency_drift_axes(title, "latency, batch 1, median (ms)", unplotted)
        if not points and not peer_points and not peer_lines:
            ax.text(0.5, 0.5, "nothing to plot: no target or peer has a benchmark and a keypoint drift",
                    transform=ax.transAxes, ha="center", va="center", color="#57606a")
            _unplotted_note(fig, unplotted)
            return fig
        timed = points + peer_points + peer_lines
        xmax = max(r.latency_ms_median for r in timed) * 1.2
        ymax = max(max((r.drift_px for r in points + peer_points), default=0.0) * 1.3, 0.5)
        ax.set_xlim(0, xmax)
        ax.set_ylim(0, ymax)
        front = sorted((r for r in points if r.pareto), key=lambda r: (r.latency_ms_median, r.drift_px))
        if front:
            ax.step([r.latency_ms_median for r in front] + [xmax], [r.drift_px for r in front] + [front[-1].drift_px],
                    where="post", color=STATUS_COLORS["passed"], alpha=0.5, linewidth=1.2, zorder=2,
                    label="Pareto front")
        for status in ("passed", "failed"):
            chosen = [r for r in points if r.status == status]
            if chosen:
                ax.scatter([r.latency_ms_median for r in chosen], [r.drift_px for r in chosen], s=48,
                           c=STATUS_COLORS[status], edgecolors="white", linewidths=0.8, zorder=3, label=status)
        recommended = [r for r in points if r.recommended]
        if recommended:
            ax.scatter([r.latency_ms_median for r in recommended], [r.drift_px for r in recommended], s=190,
                       facecolors="none", edgecolors=STATUS_COLORS["passed"], linewidths=1.4, zorder=4,
                       label="recommended")
        if peer_points:
            ax.scatter([r.latency_ms_median for r in peer_points], [r.drift_px for r in peer_points], s=52,
                       marker="D", c=STATUS_COLORS["peer"], edgecolors="white", linewidths=0.8, zorder=3,
                       label="without this pipeline")
        for i, peer in enumerate(peer_lines):
            ax.axvline(peer.latency_ms_median, color=STATUS_COLORS["peer"], linestyle="--", linewidth=0.9, zorder=2,
                       label="without this pipeline, drift not measured" if i == 0 else None)
            ax.text(peer.latency_ms_median, ymax * 0.98, f"{peer.target} ", rotation=90, ha="right", va="top",
                    fontsize=7, color=STATUS_COLORS["peer"])
        legend = ax.legend(loc="upper right", frameon=False, fontsize=7.5)
        for handle in legend.legend_handles:
            if hasattr(handle, "set_sizes"):
                handle.set_sizes([40])  # the ring's legend entry at a point's size
        _label_points(ax, points + peer_points, xmax, ymax, legend_box=_axes_box(fig, ax, legend))
        _unplotted_note(fig, unplotted)
    return fig


def plot_records(rows: list[Row]) -> dict[str, list[dict]]:
    """The plotted numbers as DVC plots data (lists of records, rounded for readable diffs); peers included."""
    latency = [{"variant": r.variant, "target": r.target, "kind": r.kind, "status": r.status,
                "latency_ms": round(r.latency_ms_median, 3), "drift_px": round(r.drift_px, 4)}
               for r in rows if r.latency_ms_median is not None and r.drift_px is not None]
    size = [{"variant": r.variant, "target": r.target, "kind": r.kind, "status": r.status,
             "size_mb": round(r.size_mb, 4)} for r in rows if r.size_mb is not None]
    return {"latency_drift": latency, "size": size}

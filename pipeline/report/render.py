"""Rendering: the report page (HTML) and report.md from Jinja2 templates in `pipeline/report/templates/`.

Strings read from files (keypoint, dataset, variant and peer names, breaches, error messages) are data:
the HTML environment autoescapes every `{{ value }}` (Jinja2's autoescape, as Flask does), and the Markdown
environment passes every value through `md_text`, which escapes what Markdown would read as markup or
inline HTML. Markup lives in the templates only. Same inputs, same text: no dates, hosts or absolute paths.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from pipeline.measure.benchmark import BASELINE_TARGET
from pipeline.report.rows import STATUSES, Row, VariantReport

TEMPLATES = Path(__file__).parent / "templates"
HTML_TEMPLATE, MARKDOWN_TEMPLATE = "report.html.j2", "report.md.j2"

HEADERS = [("Target", "", ""), ("Status", "", ""), ("Size", "MB", "num"), ("Latency", "median ms", "num"),
           ("p90", "ms", "num"), ("Speed-up", f"× {BASELINE_TARGET}", "num"), ("Throughput", "img/s", "num"),
           ("Keypoint drift", "mean px", "num"), ("Cosine", "min of simcc_x/y", "num"),
           ("Executes", "ops per precision", "")]
# (image kind, caption) in page order; a kind shows when the variant has that image.
FIGURES = [("latency_drift", "Latency against keypoint drift: pick from the lower left."),
           ("size", "Artifact size: every file of the artifact folder."),
           ("pareto", "Every timed target and peer baseline; the line is the Pareto front of the verified targets, "
                      "the ring the recommended artifact.")]
MARKDOWN_FIGURES = [("latency_drift", "latency vs keypoint drift"), ("size", "artifact size"),
                    ("pareto", "Pareto front: latency vs keypoint drift, peers included"),
                    ("overlay", "keypoints on the bundled photos")]


# --------------------------------------------------------------------------------------------- formatting


def fmt_number(value: float | None, spec: str, suffix: str = "") -> str:
    """`value` formatted with `spec` plus `suffix`; "—" for None (not measured), "NaN" for NaN."""
    if value is None:
        return "—"
    if value != value:
        return "NaN"
    return f"{value:{spec}}{suffix}"


def elementwise_text(tol: dict) -> str:
    """The elementwise limit of a precision (pipeline/check/verify.py: output_limit), scale = max |reference|."""
    if tol.get("error_factor") is not None:
        typical = (f", rms|Δ| ≤ {tol['rms_factor']:g} × float32's own rms + {tol['error_floor']:g} × rms"
                   if tol.get("rms_factor") is not None else "")
        return (f"|Δ| ≤ {tol['error_factor']:g} × float32's own error + {tol['error_floor']:g} × scale{typical} "
                f"(no float64 run: {tol['max_error']:g} × scale)")
    return f"|Δ| ≤ {tol['max_error']:g} × scale"


def cosine_text(tol: dict) -> str:
    """The cosine limit of a precision (pipeline/check/verify.py: cosine_limit): `min_cosine`, lowered to follow
    the float32 reference's own 1 - cosine against float64 where the precision has a `cosine_factor`."""
    if tol.get("cosine_factor") is not None:
        return (f"≥ {tol['min_cosine']:g} or 1 − {tol['cosine_factor']:g} × float32's own 1 − cosine, whichever is "
                f"lower (no float64 run: ≥ {tol['min_cosine']:g})")
    return f"≥ {tol['min_cosine']:g}"


def tolerance_text(tol: dict) -> str:
    if not tol:
        return "—"
    return (f"{elementwise_text(tol)}, cosine {cosine_text(tol)}, mean drift ≤ "
            f"{tol['max_mean_drift_px']:g} px, ≥ {tol['min_agreement']:.0%} within {tol['agreement_px']:g} px")


def executes_text(executes: dict) -> str:
    return ", ".join(f"{p} {n}" for p, n in sorted(executes.items())) if executes else "—"


def tools_text(tools: dict[str, dict[str, list[str]]]) -> list[str]:
    """"tool version" per tool; a tool seen at several versions names the targets of each."""
    parts = []
    for tool in sorted(tools):
        versions = tools[tool]
        if len(versions) == 1:
            parts.append(f"{tool} {next(iter(versions))}")
        else:
            parts.append(f"{tool} " + ", ".join(f"{v} ({', '.join(t)})" for v, t in sorted(versions.items())))
    return parts


def tolerances_by_precision(rows: list[Row]) -> list[tuple[str, dict, list[str]]]:
    """(precision, tolerance, targets) for each precision with a recorded tolerance, first seen first."""
    by_precision: dict[str, dict] = {}
    for row in rows:
        if row.tolerance and row.precision not in by_precision:
            by_precision[row.precision] = row.tolerance
    return [(precision, tol, [r.target for r in rows if r.precision == precision and r.tolerance])
            for precision, tol in by_precision.items()]


_MD_PUNCTUATION = re.compile(r"([\\`*\[\]<|])")
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # GFM: intraword underscores are plain


def md_text(value: object) -> str:
    """One line of Markdown that shows `value` as plain text.

    Backslash-escapes what CommonMark/GFM read as markup in a table cell or list item: `\\`, backticks,
    `*`, brackets (links, images), `<` (inline HTML, autolinks), `|` (cell borders) and underscores at
    word edges (emphasis); line breaks become spaces. None renders as "".
    """
    if value is None:
        return ""
    text = re.sub(r"[\r\n]+", " ", str(value))
    return _MD_UNDERSCORE.sub(r"\\_", _MD_PUNCTUATION.sub(r"\\\1", text))


def _filters(env: Environment) -> Environment:
    env.filters.update({
        "num": fmt_number, "g": lambda v: f"{v:g}", "pct": lambda v: f"{v:.0%}",
        "css_class": lambda status: str(status).replace(" ", "-"), "tolerance_text": tolerance_text,
        "elementwise": elementwise_text, "cosine_text": cosine_text,
        "executes_text": executes_text, "tools_text": tools_text, "tolerances_by_precision": tolerances_by_precision,
        "url": lambda path: quote(str(path)),
    })
    return env


def html_environment() -> Environment:
    """Jinja2 with autoescaping on for every template: values can never add markup to the page."""
    return _filters(Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                                trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True))


def markdown_environment() -> Environment:
    """Jinja2 for Markdown: every value goes through `md_text` (Jinja2's `finalize`), markup is template text."""
    return _filters(Environment(loader=FileSystemLoader(TEMPLATES), autoescape=False, finalize=md_text,
                                undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                keep_trailing_newline=True))


def _context(variants: list[VariantReport], counts: dict[str, int]) -> dict:
    return {"variants": variants, "counts": counts, "total": sum(counts.values()), "statuses": STATUSES,
            "headers": HEADERS, "figures": FIGURES, "markdown_figures": MARKDOWN_FIGURES,
            "overview_targets": list(dict.fromkeys(r.target for v in variants for r in v.rows))}


def render_html(variants: list[VariantReport], counts: dict[str, int]) -> str:
    """The whole page: inline CSS, images by the relative paths in each VariantReport.images."""
    return html_environment().get_template(HTML_TEMPLATE).render(_context(variants, counts))


def render_markdown(variants: list[VariantReport], counts: dict[str, int]) -> str:
    """The same tables as the page, as GitHub-flavoured Markdown."""
    return markdown_environment().get_template(MARKDOWN_TEMPLATE).render(_context(variants, counts))

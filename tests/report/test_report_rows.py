"""The report's pure parts: the Pareto front, the recommended artifact, Markdown escaping and file names.

The report built from a real run (figures, overlays, the page in a browser) is tests/report/test_report.py.
"""

from __future__ import annotations

import math

import pytest

from pipeline.report import file_stem
from pipeline.report.render import md_text, render_html, render_markdown
from pipeline.report.rows import (
    Row,
    VariantInfo,
    VariantReport,
    _cosine_limit,
    candidates,
    headline,
    mark_pareto_and_recommended,
    pareto_front,
    recommend,
)


def _row(target: str, status: str, latency: float | None, drift: float | None, kind: str = "target") -> Row:
    return Row("v", target, "fp32", status, latency_ms_median=latency, drift_px=drift, kind=kind)


@pytest.mark.parametrize("points, front", [
    ([], set()),
    ([("a", 1.0, 1.0)], {"a"}),
    # a is faster, b drifts less: neither dominates
    ([("a", 1.0, 2.0), ("b", 2.0, 1.0)], {"a", "b"}),
    # c is slower and drifts more than a: dominated
    ([("a", 1.0, 1.0), ("c", 2.0, 1.5)], {"a"}),
    # equal latency: only the lower drift survives; equal drift: only the faster one
    ([("a", 1.0, 1.0), ("b", 1.0, 2.0), ("c", 3.0, 1.0)], {"a"}),
    # identical points do not dominate each other
    ([("a", 1.0, 1.0), ("b", 1.0, 1.0), ("c", 0.5, 3.0)], {"a", "b", "c"}),
    # a staircase with one point behind it
    ([("fast", 1.0, 3.0), ("mid", 2.0, 2.0), ("behind", 2.5, 2.5), ("exact", 4.0, 0.0)], {"fast", "mid", "exact"}),
    # NaN never makes the front and hides nothing
    ([("nan", math.nan, 0.0), ("a", 2.0, 1.0)], {"a"}),
])
def test_pareto_front(points, front):
    assert pareto_front(points) == front
    assert pareto_front(reversed(points)) == front  # order of the input does not matter


def test_candidates_and_recommendation_are_verified_timed_targets_only():
    rows = [_row("failed-fast", "failed", 0.5, 9.0), _row("untimed", "passed", None, 0.1),
            _row("slow", "passed", 3.0, 0.1), _row("fast", "passed", 2.0, 0.4), _row("tie", "passed", 2.0, 0.2),
            _row("left", "left out", None, None)]
    assert [r.target for r in candidates(rows)] == ["slow", "fast", "tie"]
    assert recommend(rows).target == "tie"  # equal latency: the lower drift
    assert recommend([r for r in rows if r.status != "passed"]) is None


def test_headline_divides_by_the_fastest_peer():
    rows = [_row("openvino-int8", "passed", 2.0, 0.3), _row("onnxruntime-fp32", "passed", 5.0, 0.0)]
    peers = [_row("ov-default", "peer", 4.0, None, "peer"), _row("ort-default", "peer", 5.0, None, "peer"),
             _row("untimed", "peer", None, None, "peer")]
    top = headline(rows, peers)
    assert (top.recommended.target, top.peer.target) == ("openvino-int8", "ov-default")
    assert top.ratio == pytest.approx(0.5)
    assert headline(rows, []).peer is None and headline(rows, []).ratio is None
    assert headline([], peers) is None


@pytest.mark.parametrize("targets, peers, pick, peer", [
    ([("undrifted", 2.0, None), ("drifted", 3.0, 0.1)], [], "undrifted", None),  # verified is enough
    ([("x", 2.0, 0.5), ("y", 2.0, 0.2)], [("q", 4.0, None), ("p", 4.0, None)], "y", "p"),  # ties: drift, name
    ([("b", 2.0, 0.2), ("a", 2.0, 0.2), ("c", 2.0, None)], [("p", 3.0, 0.1)], "a", "p"),  # unmeasured drift last
    # two axes: the faster int8 drifts more than the fastest peer, so the pick is the accurate one (slower)
    ([("int8", 2.0, 1.8), ("fp32", 5.0, 0.0)], [("p", 3.0, 0.5), ("slow", 9.0, 0.0)], "fp32", "p"),
    ([("int8", 3.6, 1.85), ("fp32", 5.0, 0.0)], [("nncf", 3.8, 2.2)], "int8", "nncf"),  # as accurate: fastest
])
def test_the_report_and_the_benchmark_pick_by_one_rule(targets, peers, pick, peer):
    from pipeline.run.steps.benchmark import headline as benchmark_headline

    rows = [_row(name, "passed", ms, drift) for name, ms, drift in targets]
    peer_rows = [_row(name, "peer", ms, drift, "peer") for name, ms, drift in peers]
    top = headline(rows, peer_rows)
    assert (top.recommended.target, top.peer.target if top.peer else None) == (pick, peer)
    timed = {name: {"name": name, "kind": kind, "latency_ms_median": ms,
                    "verification": {"passed": True, "mean_drift_px": drift}}
             for kind, entries in (("target", targets), ("peer", peers)) for name, ms, drift in entries}
    written = benchmark_headline(timed)
    assert (written["recommended"], written["best_peer"]) == (pick, peer)
    assert written["latency_ratio_vs_best_peer"] == top.ratio
    assert written["peer_is_faster"] == bool(top.ratio and top.ratio > 1)


def test_the_headline_says_plainly_when_the_peer_is_faster():
    from pipeline.run.steps.benchmark import headline as benchmark_headline, headline_sentence

    timed = {name: {"name": name, "kind": kind, "latency_ms_median": ms,
                    "verification": {"passed": True, "mean_drift_px": drift}}
             for name, kind, ms, drift in (("int8", "target", 2.0, 1.8), ("fp32", "target", 5.0, 0.0),
                                           ("peer-bf16", "peer", 3.0, 0.07))}
    top = benchmark_headline(timed)
    assert (top["recommended"], top["recommended_drift_px"], top["best_peer_drift_px"]) == ("fp32", 0.0, 0.07)
    assert headline_sentence(top) == ("recommended fp32 5.00 ms, drift 0.00 px = 1.67x the best peer peer-bf16 "
                                      "3.00 ms, drift 0.07 px: the peer is faster")
    variant = _variant("rtmpose-t_coco17_256x192", [_row("int8", "passed", 2.0, 1.8), _row("fp32", "passed", 5.0, 0.0)],
                       [_row("peer-bf16", "peer", 3.0, 0.07, "peer")])
    counts = {"passed": 2, "failed": 0, "left out": 0, "not built": 0}
    markdown = render_markdown([variant], counts)
    assert "- Recommended: **fp32**" in markdown and "**The peer is faster.**" in markdown
    assert "drift 0.07 px" in markdown
    assert "<b>The peer is faster.</b>" in render_html([variant], counts)


@pytest.mark.parametrize("text, shown", [
    ("max_mean_drift_px > 3", "max_mean_drift_px > 3"),  # intraword underscores and > stay readable
    ("a | b", "a \\| b"),
    ("<script>alert(1)</script>", "\\<script>alert(1)\\</script>"),
    ("[x](javascript:alert(1))", "\\[x\\](javascript:alert(1))"),
    ("*bold* _em_ `code` \\", "\\*bold\\* \\_em\\_ \\`code\\` \\\\"),
    ("two\nlines\r\n", "two lines "),
    (None, ""),
])
def test_md_text_escapes_markup(text, shown):
    assert md_text(text) == shown


def test_file_stem_keeps_plain_names_and_defuses_the_rest():
    assert file_stem("rtmpose-t_coco17_256x192") == "rtmpose-t_coco17_256x192"
    for name in ("../../etc/passwd", "a/b", ".hidden", "x\x00y", "<script>", "$x^2$", "a..b"):
        stem = file_stem(name)
        assert "/" not in stem and "\x00" not in stem and ".." not in stem and not stem.startswith(".")
        assert stem == file_stem(name)
    assert file_stem("a/b") != file_stem("a_b") != file_stem("a?b")


def _variant(name: str, rows: list[Row], peers: list[Row]) -> VariantReport:
    for row in rows + peers:
        row.variant = name
    info = VariantInfo(name, "demo checkpoint x.pth, sha256 ab", False, [], {"onnxruntime": {"1.2": ["a"]}},
                       "benchmarked in blocks", 11, "coco17", ["nose", "left_eye"], {"cpu": "test CPU", "cores": "2"})
    top = mark_pareto_and_recommended(rows, peers)
    return VariantReport(info, rows, peers, {"latency_ms_median": {"fast"}}, top,
                         {"latency_drift": f"figures/latency_drift_{name}.png"})


def test_templates_render_every_row_peer_and_variant():
    """Two variants (so the overview matrix shows), peers on one, nothing verified on the other."""
    first = _variant("rtmpose-t_coco17_256x192",
                     [_row("fast", "passed", 2.0, 0.4), _row("slow", "passed", 4.0, 0.1), _row("bad", "failed", 1.0, 9.0)],
                     [_row("ort-default", "peer", 5.0, None, "peer")])
    second = _variant("rtmpose-s_coco17_256x192", [_row("fast", "left out", None, None)], [])
    variants, job_counts = [first, second], {"passed": 2, "failed": 1, "left out": 1, "not built": 0}
    page = render_html(variants, job_counts)
    assert '<a href="#rtmpose-s_coco17_256x192">rtmpose-s_coco17_256x192</a>' in page  # the overview
    assert page.count('<section id="') == 2 and page.count('<tr class="peer">') == 1
    assert "<b>Recommended: fast</b>" in page and "<b>0.40×</b>" in page  # 2.0 ms over the peer's 5.0 ms
    assert "No recommended artifact yet" in page
    assert page.count("on the Pareto front") == 2  # fast and slow; bad failed
    assert "cores: 2; cpu: test CPU" in page and "coco17, 2: nose, left_eye" in page
    markdown = render_markdown(variants, job_counts)
    assert "4 jobs: 2 passed, 1 failed, 1 left out, 0 not built." in markdown
    assert "- Recommended: **fast**" in markdown and "| ort-default | — | 5.00 |" in markdown
    assert markdown.count("## rtmpose-") == 2


FP32_TOLERANCE = {"error_factor": 16.0, "error_floor": 1e-6, "rms_factor": 16.0, "max_error": 1e-3,
                  "min_cosine": 0.999999, "cosine_factor": 256.0, "max_mean_drift_px": 0.05, "agreement_px": 0.5,
                  "min_agreement": 0.99, "max_score_change": 5e-4}
COUNTS = {"passed": 1, "failed": 0, "left out": 0, "not built": 0}


def test_a_rows_cosine_is_shown_against_the_limit_it_was_held_to():
    """rtmw-x 384x288's fp32 (issue 21): cosine 0.9999982 under a limit its float32 reference's own 1 - cosine
    lowered to 0.99992; not marked bad, and the tolerance says how the limit is derived."""
    metrics = {"tolerance": FP32_TOLERANCE, "outputs": {
        "simcc_x": {"cosine": 0.9999982, "cosine_limit": 0.99992, "passed_cosine": True},
        "simcc_y": {"cosine": 0.9999990, "cosine_limit": 0.99993, "passed_cosine": True}}}
    assert _cosine_limit(metrics) == (0.99992, True)
    old = {"tolerance": FP32_TOLERANCE, "outputs": {"simcc_x": {"cosine": 0.9999982, "passed_cosine": False}}}
    assert _cosine_limit(old) == (0.999999, False)  # written before the derived limit: the fixed one
    row = Row("v", "onnxruntime-fp32", "fp32", "passed", latency_ms_median=2.0, drift_px=0.01, cosine=0.9999982,
              cosine_limit=0.99992, cosine_passed=True, tolerance=FP32_TOLERANCE)
    page = render_html([_variant("rtmw-x_wholebody133_384x288", [row], [])], COUNTS)
    assert '<td class="num">0.9999982<span class="limit">≥ 0.99992</span></td>' in page
    assert "≥ 0.999999 or 1 − 256 × float32&#39;s own 1 − cosine, whichever is lower" in page
    markdown = render_markdown([_variant("rtmw-x_wholebody133_384x288", [row], [])], COUNTS)
    assert "| 0.9999982 (≥ 0.99992) |" in markdown
    assert "cosine ≥ 0.999999 or 1 − 256 × float32's own 1 − cosine, whichever is lower" in markdown

"""Collection: the report's rows and facts, read from the files other stages wrote. No drawing, no markup.

Per job: `metrics/<target>.json` (verify) and `<target>/artifact.json` (build, with the ONNX metadata naming
the weights, keypoint set and keypoint names). Per variant: `benchmarks/<variant>.json` (stages.benchmark)
and the plan's `left_out` reasons. Every string here is data read from a file: the renderers escape it.

A Row is one thing that was (or could have been) timed: `kind="target"` for a job of the plan (a configured
target of a variant), `kind="peer"` for a peer baseline, what a user gets without the product (e.g. the
plain export in onnxruntime with default options). Peers come from the benchmark file's optional `peers`
section, in the same shape as its `targets` entries plus a `description`; renderers show whatever rows
exist. The Pareto front, the recommended artifact and the headline ratio are computed here as pure
functions of the rows (the recommendation by the benchmark's own rule, pipeline/measure/headline.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from pipeline.backends import get_target
from pipeline.backends.runtime import ARTIFACT_META
from pipeline.config import RunConfig
from pipeline.measure.headline import fastest, latency_ratio
from pipeline.measure.headline import recommend as pick_against_peers
from pipeline.planning.plan import SYNTHETIC_WEIGHTS_SOURCE

STATUSES = ("passed", "failed", "left out", "not built")
PEER_STATUS = "peer"  # a peer baseline is measured, never verified: it is no job of the plan
KINDS = ("target", "peer")
MB = 1e6  # sizes are decimal megabytes


@dataclass
class Row:
    """One variant x target (or peer baseline), with every figure the report shows (None: not measured)."""

    variant: str
    target: str  # the target name, or the peer's name in the benchmark file
    precision: str
    status: str  # one of STATUSES, or PEER_STATUS for a peer
    detail: str = ""  # the breaches, the left-out reason, what is missing, or a peer's description
    size_mb: float | None = None
    latency_ms_median: float | None = None
    latency_ms_p10: float | None = None
    latency_ms_p90: float | None = None
    speedup: float | None = None
    throughput_img_s: float | None = None
    throughput_batch: int | None = None
    drift_px: float | None = None
    cosine: float | None = None  # the lowest of its outputs' cosines
    # The cosine limit of that output (it follows the float32 reference's own 1 - cosine where the precision
    # has a cosine_factor) and whether every output met its own; None before verification.
    cosine_limit: float | None = None
    cosine_passed: bool | None = None
    tolerance: dict = field(default_factory=dict)
    executes: dict = field(default_factory=dict)
    artifact_dir: str = ""
    kind: str = "target"  # one of KINDS
    pareto: bool = False  # on the latency-vs-drift Pareto front of the variant's verified targets
    recommended: bool = False

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
    keypoint_set: str = ""  # the dataset's keypoint set as the ONNX metadata names it (e.g. coco17)
    keypoint_names: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)  # the benchmark's machine record, if it has one


@dataclass
class Headline:
    """The recommended artifact against the best peer baseline: ratio = recommended / peer latency (< 1: faster)."""

    recommended: Row
    peer: Row | None
    ratio: float | None


@dataclass
class VariantReport:
    """Everything the renderers show for one variant; `images` maps a figure kind to its relative path."""

    info: VariantInfo
    rows: list[Row]  # kind "target", in `targets` order
    peers: list[Row]  # kind "peer", in the benchmark file's order
    best: dict[str, set[str]]  # column -> targets with the best value among passed rows
    headline: Headline | None
    images: dict[str, str] = field(default_factory=dict)


def _read_json(path: str | Path) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def artifact_size_bytes(artifact_dir: str | Path) -> int | None:
    """Bytes of every file under `artifact_dir` (None if it is no directory)."""
    root = Path(artifact_dir)
    if not root.is_dir():
        return None
    return sum(p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file())


def _min_cosine(metrics: dict) -> float | None:
    values = [float(o["cosine"]) for o in metrics.get("outputs", {}).values()]
    if not values:
        return None
    return float("nan") if any(v != v for v in values) else min(values)


def _cosine_limit(metrics: dict) -> tuple[float | None, bool | None]:
    """The cosine limit of the output with the lowest cosine (a metrics file older than the derived limit: its
    tolerance's min_cosine), and whether every output met its own limit."""
    outputs = list(metrics.get("outputs", {}).values())
    if not outputs:
        return None, None
    lowest = min(outputs, key=lambda o: (o["cosine"] == o["cosine"], o["cosine"]))  # NaN first
    limit = lowest.get("cosine_limit", metrics.get("tolerance", {}).get("min_cosine"))
    return limit, all(bool(o["passed_cosine"]) for o in outputs)


def _apply_timing(row: Row, timing: dict) -> None:
    row.latency_ms_median = timing["latency_ms_median"]
    row.latency_ms_p10 = timing.get("latency_ms_p10")
    row.latency_ms_p90 = timing["latency_ms_p90"]
    row.speedup = timing.get("speedup_vs_onnxruntime_fp32")
    row.throughput_img_s = timing.get("throughput_img_s")
    row.throughput_batch = timing.get("throughput_batch")


def collect_rows(cfg: RunConfig) -> list[Row]:
    """One Row per variant x configured target, in `targets` order (kind "target")."""

    rows = []
    for variant, entry in cfg.plan["variants"].items():
        bench = (_read_json(entry["benchmark"]) or {}).get("targets", {})
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
            row.cosine_limit, row.cosine_passed = _cosine_limit(metrics)
            row.tolerance = metrics.get("tolerance", {})
            row.executes = metrics.get("runtime_settings", {}).get("execution_precision", {})
            timing = bench.get(target)
            if timing:
                _apply_timing(row, timing)
            rows.append(row)
    return rows


def collect_peers(cfg: RunConfig, variant: str) -> list[Row]:
    """Peer baselines of a variant from its benchmark file's `peers` section (kind "peer"; [] if none).

    An entry holds what a `targets` entry holds (latency_ms_median, latency_ms_p90, optionally
    latency_ms_p10, throughput_img_s, throughput_batch, mean_drift_px) plus `description` (what a user
    would have run) and optionally `precision`.
    """
    bench = _read_json(cfg.plan["variants"][variant]["benchmark"]) or {}
    peers = []
    for name, timing in (bench.get("peers") or {}).items():
        row = Row(variant, name, str(timing.get("precision", "")), PEER_STATUS, kind="peer",
                  detail=str(timing.get("description", "")), drift_px=timing.get("mean_drift_px"))
        _apply_timing(row, timing)
        peers.append(row)
    return peers


def _weights_sentence(metadata: dict, configured: str) -> tuple[str, bool]:
    source = metadata.get("weights_source", "")
    sha = metadata.get("checkpoint_sha256", "")
    if source == "synthetic" or metadata.get("synthetic_weights") == "true":
        return "synthetic: seeded random weights (model.checkpoint is unset)", True
    names = {"demo": "demo checkpoint", "checkpoint": "user checkpoint", "onnx": "supplied ONNX"}
    return f"{names.get(source, source or 'unknown')} {configured}, sha256 {sha or 'not recorded'}", False


def _json_list(text: str) -> list[str]:
    """A JSON list of strings as the ONNX metadata stores it; [] for anything else."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _benchmark_sentence(bench: dict | None, variant: str) -> str:
    if not bench:
        return (f"no benchmark yet: run `python -m stages.benchmark {variant}` (under DVC it runs once every "
                "job of the variant passed)")
    return str(bench["method"])  # pipeline/measure/benchmark.py: method_sentence


def variant_info(cfg: RunConfig, variant: str, rows: list[Row]) -> VariantInfo:
    """Which weights, keypoints and tool versions made the variant's artifacts, read from their artifact.json."""

    entry = cfg.plan["variants"][variant]
    tools: dict[str, dict[str, list[str]]] = {}
    weights_seen: dict[tuple[str, str], list[str]] = {}
    metadata: dict = {}
    for row in rows:
        meta = _read_json(Path(row.artifact_dir) / ARTIFACT_META) if row.artifact_dir else None
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
    machine = bench.get("machine") if bench else None
    num_inputs = next((r for r in _metrics_of(cfg, rows) if r is not None), {}).get("num_inputs")
    return VariantInfo(variant, weights, synthetic, warnings, tools, _benchmark_sentence(bench, variant), num_inputs,
                       keypoint_set=str(metadata.get("keypoint_set", "")),
                       keypoint_names=_json_list(metadata.get("keypoint_names", "")),
                       machine={str(k): str(v) for k, v in machine.items()} if isinstance(machine, dict) else {})


def _metrics_of(cfg: RunConfig, rows: list[Row]) -> Iterator[dict | None]:
    for row in rows:
        if row.job in cfg.plan["jobs"]:
            yield _read_json(cfg.plan["jobs"][row.job]["metrics"])


# --------------------------------------------------------------------------------------------- derived facts


def pareto_front(points: Iterable[tuple[str, float, float]]) -> set[str]:
    """Names of the points no other point dominates, from (name, latency_ms, drift_px) triples.

    A point dominates another when it is no slower and drifts no more, and is strictly better in one of
    the two; equal points do not dominate each other, so both stay on the front. NaN values never make
    the front. Sorted by latency, a point is on the front when its drift beats every strictly faster point's.
    """
    valid = sorted((lat, drift, name) for name, lat, drift in points if lat == lat and drift == drift)
    front: set[str] = set()
    best_drift = float("inf")  # the lowest drift among strictly faster points
    for _, group in groupby(valid, key=lambda p: p[0]):  # equal latency: only the lowest drift survives
        group = list(group)
        lowest = group[0][1]
        if lowest < best_drift:
            front.update(name for _, drift, name in group if drift == lowest)
            best_drift = lowest
    return front


def candidates(rows: Iterable[Row]) -> list[Row]:
    """The rows a user may pick: verified targets (passed) with both a latency and a keypoint drift."""
    return [r for r in rows if r.kind == "target" and r.status == "passed"
            and r.latency_ms_median is not None and r.drift_px is not None]


def _timing(row: Row) -> tuple[str, float | None, float | None]:
    return row.target, row.latency_ms_median, row.drift_px


def recommend(rows: Iterable[Row]) -> Row | None:
    """The fastest verified target (pipeline/measure/headline.py: fastest), or None.

    Every passed target is within its precision's tolerances, so the fastest of them is the pick; where it
    has a keypoint drift it is on the Pareto front by construction.
    """
    return fastest((r for r in rows if r.kind == "target" and r.status == "passed"), _timing)


def headline(rows: list[Row], peers: list[Row]) -> Headline | None:
    """The recommended artifact (pipeline/measure/headline.py: the fastest verified target whose drift is no worse
    than the fastest peer's) and its latency over that peer's (None: nothing verified and timed)."""
    pick, peer = pick_against_peers((r for r in rows if r.kind == "target" and r.status == "passed"), peers, _timing)
    if pick is None:
        return None
    return Headline(pick, peer, latency_ratio(pick.latency_ms_median, peer.latency_ms_median if peer else None))


def best_values(rows: list[Row], attr: str, highest: bool) -> set[str]:
    """Targets with the best value of `attr` among passed rows (ties all win; none if fewer than two)."""
    values = [(getattr(r, attr), r.target) for r in rows if r.status == "passed" and getattr(r, attr) is not None]
    if len(values) < 2:
        return set()
    best = max(v for v, _ in values) if highest else min(v for v, _ in values)
    return {t for v, t in values if v == best}


def counts(rows: list[Row]) -> dict[str, int]:
    """Jobs per status (targets only: peers are no jobs)."""
    return {status: sum(r.status == status for r in rows if r.kind == "target") for status in STATUSES}


def mark_pareto_and_recommended(rows: list[Row], peers: list[Row]):
    """Set `Row.pareto` on the targets of the Pareto front and `recommended` on the headline's artifact;
    return the headline (None without a verified, timed target)."""
    front = pareto_front((r.target, r.latency_ms_median, r.drift_px) for r in candidates(rows))
    for row in rows:
        row.pareto = row.target in front
    top = headline(rows, peers)
    if top:
        top.recommended.recommended = True
    return top


def variant_report(cfg: RunConfig, variant: str, rows: list[Row]) -> VariantReport:
    """The variant's rows with its peers, best values, Pareto flags and recommended artifact set."""
    peers = collect_peers(cfg, variant)
    top = mark_pareto_and_recommended(rows, peers)
    best = {"size_mb": best_values(rows, "size_mb", False),
            "latency_ms_median": best_values(rows, "latency_ms_median", False),
            "speedup": best_values(rows, "speedup", True),
            "throughput_img_s": best_values(rows, "throughput_img_s", True)}
    return VariantReport(variant_info(cfg, variant, rows), rows, peers, best, top)

"""The benchmark harness (pipeline/measure/benchmark.py, pipeline/measure/timing.py), the peers (pipeline/measure/peers.py)
and the headline: real workers on the seeded rtmpose-t, with few calls. No timing is asserted,
only what the figures are and how they are made (that is benchmarks/harness_vs_alone.py's job)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.backends import get_target
from pipeline.config import BenchmarkConfig
from pipeline.core.errors import PipelineError
from pipeline.core.hardware import ISA_FLAGS, cpu_fingerprint
from pipeline.measure.benchmark import Candidate, latency_stats, machine, measure, spread
from pipeline.run.steps.benchmark import headline

from conftest import max_abs_diff

QUICK = BenchmarkConfig(warmup=1, calls=3, blocks=2, settle_s=0.0, throughput_images=2, throughput_rounds=1)


@pytest.fixture(scope="module")
def measured(ort_dir, t_cfg):
    candidates = [Candidate("ours", "target", "onnxruntime-fp32", str(ort_dir),
                            {"intra_op_num_threads": 1, "static_batch": 1}, {"sessions": 2, "static_batch": 1}),
                  Candidate("plain", "peer", "onnxruntime-fp32", str(ort_dir), {}, {}, "defaults",
                            extra={"verification": {"passed": False}})]
    blocks_seen = []
    return measure(candidates, t_cfg.backends, (256, 192), QUICK, blocks_seen.append), blocks_seen


def test_every_candidate_gets_a_row_with_its_figures(measured):
    rows, blocks_seen = measured
    assert list(rows) == ["ours", "plain"] and blocks_seen == [0, 1]
    for row in rows.values():
        assert row["latency_calls"] == QUICK.blocks * QUICK.calls
        assert len(row["latency_ms_block_medians"]) == QUICK.blocks
        assert 0 < row["latency_ms_p10"] <= row["latency_ms_median"] <= row["latency_ms_p90"]
        assert row["latency_block_spread"] >= 0 and row["cpu_ms_per_call"] > 0
        assert row["throughput_img_s"] > 0 and row["throughput_images"] == QUICK.throughput_images
    assert rows["ours"]["kind"] == "target" and rows["plain"]["kind"] == "peer"
    assert rows["plain"]["verification"] == {"passed": False}  # extra is carried as is


def test_rows_carry_the_settings_the_worker_ran(measured):
    rows, _ = measured
    assert rows["ours"]["runtime_settings"]["runtime"] == {"intra_op_num_threads": 1, "static_batch": 1}
    assert rows["ours"]["runtime_settings"]["static_batch"] == 1
    assert rows["ours"]["throughput_settings"]["runtime"] == {"sessions": 2, "static_batch": 1}
    assert rows["plain"]["runtime_settings"]["runtime"] == {}


def test_a_failing_worker_is_named(t_cfg, tmp_path):
    broken = Candidate("broken", "target", "onnxruntime-fp32", str(tmp_path))  # no model.onnx in it
    with pytest.raises(PipelineError, match="broken"):
        measure([broken], t_cfg.backends, (256, 192), QUICK)


def test_candidate_names_must_be_unique(ort_dir, t_cfg):
    same = Candidate("x", "target", "onnxruntime-fp32", str(ort_dir))
    with pytest.raises(PipelineError, match="uniquely"):
        measure([same, same], t_cfg.backends, (256, 192), QUICK)


def test_latency_stats_of_known_blocks():
    stats = latency_stats([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], [1.5, 2.5, 9.0])
    assert stats["latency_ms_block_medians"] == [2.0, 4.0] and stats["cpu_ms_per_call"] == 2.5
    assert stats["latency_ms_median"] == 3.0 and stats["latency_calls"] == 6
    assert stats["latency_block_spread"] == pytest.approx((4.0 - 2.0) / 3.0)
    assert spread([5.0, 5.0, 5.0]) == 0.0


def _row(name, kind, ms, passed=True):
    return {"name": name, "kind": kind, "latency_ms_median": ms, "verification": {"passed": passed}}


def test_headline_is_the_fastest_verified_target_against_the_best_peer():
    rows = {r["name"]: r for r in (_row("a", "target", 2.0, passed=False), _row("b", "target", 3.0),
                                   _row("c", "target", 4.0), _row("p", "peer", 6.0, passed=False),
                                   _row("q", "peer", 5.0))}
    top = headline(rows)
    assert top["recommended"] == "b" and top["best_peer"] == "q"  # a is faster but failed verification
    assert top["latency_ratio_vs_best_peer"] == pytest.approx(3.0 / 5.0)


def test_headline_without_peers_has_no_ratio():
    top = headline({"b": _row("b", "target", 3.0)})
    assert top["recommended"] == "b" and top["latency_ratio_vs_best_peer"] is None


def test_machine_records_cpu_isa_cores_and_load():
    info = machine()
    assert info["cpu"] and info["logical_cores"] >= 1 and len(info["load_average"]) == 3
    assert set(info["isa"]) <= set(ISA_FLAGS)
    assert info == {**cpu_fingerprint(), "load_average": info["load_average"]}


def test_peers_are_the_plain_export_with_runtime_defaults(t_onnx, t_cfg, golden, torch_outputs, tmp_path):
    from pipeline import backends
    from pipeline.measure.peers import build_peers

    calibration = golden[:4]
    peers = build_peers(t_onnx, calibration, tmp_path, ("onnxruntime", "openvino"))
    assert [p.name for p in peers] == ["peer-onnxruntime", "peer-openvino", "peer-openvino-nncf-int8"]
    assert {p.kind for p in peers} == {"peer"}
    by_name = {p.name: p for p in peers}
    assert by_name["peer-onnxruntime"].latency_runtime == {}  # default SessionOptions
    assert by_name["peer-openvino"].latency_runtime == {"inference_precision_hint": None, "static_batch": 1}
    scale = max(float(np.max(np.abs(r))) for r in torch_outputs.values())
    for peer in peers[:2]:  # the float peers compute the export's outputs
        target = get_target(peer.target)
        runner = backends.open_runner(peer.artifact_dir, target, t_cfg.backends, peer.latency_runtime)
        # OpenVINO's default precision is bf16 on CPUs with it (tests/backends/test_runtime.py): ~1% of the logits' scale.
        bf16 = "bf16" in runner.settings["execution_precision"]
        assert max_abs_diff(runner({"input": golden}), torch_outputs) < (0.02 * scale if bf16 else 1e-3)
    int8 = by_name["peer-openvino-nncf-int8"]
    runner = backends.open_runner(int8.artifact_dir, get_target(int8.target), t_cfg.backends, int8.latency_runtime)
    assert runner.settings["execution_precision"].get("int8", 0) > 0
    assert np.isfinite(runner({"input": golden})["simcc_x"]).all()


def test_without_calibration_or_openvino_those_peers_are_left_out(t_onnx, tmp_path):
    from pipeline.measure.peers import build_peers

    both = ("openvino", "onnxruntime")  # in the registry's order, whatever the order given
    assert [p.name for p in build_peers(t_onnx, None, tmp_path / "a", both)] == ["peer-onnxruntime", "peer-openvino"]
    assert [p.name for p in build_peers(t_onnx, None, tmp_path / "b", ("onnxruntime",))] == ["peer-onnxruntime"]

"""A verdict ships only the bytes it judged: an artifact, reference or tune record changed after verify is withheld.

Tried as a skeptical user would: after the chain, one metadata entry added to the built onnxruntime-fp32
`model.onnx`, then the release stage. It used to report "1 verified artifact(s)" and ship the changed file.
"""

from __future__ import annotations

import json

import onnx

from pipeline.core.digest import sha256_file
from pipeline.core.onnx_io import get_metadata, set_metadata

from conftest import VARIANT, run_stage


def release(chain):
    result = run_stage("release", VARIANT, *chain.overrides, cwd=chain.out_dir.parent)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((chain.out_dir / "release" / VARIANT / "manifest.json").read_text())
    return result, manifest


def test_a_verified_artifact_ships_with_the_digests_verify_recorded(demo_chain, tmp_path):
    chain = demo_chain.copy(tmp_path)
    _, manifest = release(chain)
    shipped = manifest["targets"]["onnxruntime-fp32"]
    verified = chain.metrics("onnxruntime-fp32")["verified_bytes"]
    assert shipped["verified_sha256"] == verified
    assert verified["reference"] == sha256_file(chain.variant_dir / "reference.npz")
    assert verified["artifact"]["model.onnx"] == shipped["files"]["model.onnx"]
    # Release rewrites only what carries the tuned runtime settings; the model's bytes are the verified ones.
    assert set(shipped["rewritten_at_release"]) <= {"artifact.json", "detail.json", "pipeline.json", "deploy.json",
                                                    "rtmlib.zip"}, shipped["rewritten_at_release"]


def test_an_artifact_changed_after_verify_is_withheld_naming_the_file(demo_chain, tmp_path):
    chain = demo_chain.copy(tmp_path)
    path = chain.variant_dir / "onnxruntime-fp32" / "model.onnx"
    model = onnx.load(str(path))
    set_metadata(model, {**get_metadata(model), "edited": "after verify"})
    onnx.save(model, str(path))
    # Runtime settings recorded after verify ran without them (the demo chain does not tune): other settings
    # than those the verdict was given with would ship.
    tune = chain.variant_dir / "tune" / "openvino-fp32.json"
    tune.parent.mkdir(exist_ok=True)
    tune.write_text(json.dumps({"chosen": {"latency": {"inference_num_threads": 1}}}))

    result, manifest = release(chain)
    withheld = manifest["withheld"]
    assert "onnxruntime-fp32" not in manifest["targets"] and "openvino-fp32" not in manifest["targets"]
    assert withheld["onnxruntime-fp32"].startswith("changed since verify judged it: artifact file model.onnx differ")
    assert withheld["openvino-fp32"].startswith("changed since verify judged it: the tune record differ")
    assert f"rerun verify@{VARIANT}.onnxruntime-fp32" in withheld["onnxruntime-fp32"]
    assert "ncnn-fp32" in manifest["targets"]  # the others still ship
    assert not (chain.out_dir / "release" / VARIANT / "onnxruntime-fp32").exists()
    assert "withheld onnxruntime-fp32: changed since verify" in result.stdout


def test_a_changed_reference_withholds_every_target_of_the_variant(demo_chain, tmp_path):
    chain = demo_chain.copy(tmp_path)
    with open(chain.variant_dir / "reference.npz", "ab") as handle:
        handle.write(b"\0")  # a stale cache: other bytes than those every verdict was given against
    _, manifest = release(chain)
    assert manifest["targets"] == {}
    assert all("the reference differ" in reason for reason in manifest["withheld"].values()
               if not reason.startswith("left out")), manifest["withheld"]


def test_metrics_without_a_record_of_the_bytes_are_not_trusted(demo_chain, tmp_path):
    chain = demo_chain.copy(tmp_path)
    metrics_path = chain.variant_dir / "metrics" / "ncnn-fp32.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["verified_bytes"]  # what an older version wrote, or a hand-made "passed": true
    metrics_path.write_text(json.dumps(metrics))
    _, manifest = release(chain)
    assert manifest["withheld"]["ncnn-fp32"].startswith("its metrics record no digest of the bytes verify judged")

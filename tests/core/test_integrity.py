"""The small facts every verdict rests on: digests of artifact folders, non-finite values named, any error in one line."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from pipeline.core.digest import changed_files, sha256_file, tree_digests
from pipeline.core.errors import InputError, one_line
from pipeline.core.finite import non_finite


def test_tree_digests_name_every_file_and_what_changed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "sub" / "detail.json").write_text("{}")
    before = tree_digests(tmp_path)
    assert list(before) == ["model.onnx", "sub/detail.json"]
    assert before["model.onnx"] == sha256_file(tmp_path / "model.onnx")
    (tmp_path / "model.onnx").write_bytes(b"graph!")  # one byte more
    (tmp_path / "extra.bin").write_bytes(b"")
    (tmp_path / "sub" / "detail.json").unlink()
    assert changed_files(before, tree_digests(tmp_path)) == ["extra.bin", "model.onnx", "sub/detail.json"]
    assert changed_files(before, before) == [] and tree_digests(tmp_path / "absent") == {}


def test_non_finite_names_each_array_with_its_counts():
    bad = np.ones((2, 3), np.float32)
    bad[0, 0], bad[1, 2] = np.nan, -np.inf
    found = non_finite([("ok", np.zeros(4)), ("ints", np.arange(3)), ("w", bad), ("b", np.full(2, np.inf, np.float16))])
    assert found == "w (1 NaN, 1 Inf of 6), b (2 Inf of 2)"
    many = non_finite((f"t{i}", np.array([np.nan])) for i in range(5))
    assert many.endswith("(+2 more)") and many.startswith("t0 (1 NaN of 1)")
    assert non_finite([("ok", np.ones(3))]) == ""


def test_one_line_names_a_foreign_exception_by_its_package():
    assert one_line(InputError("model.checkpoint=x does not exist")) == "model.checkpoint=x does not exist"
    with pytest.raises(Exception) as caught:  # onnxruntime's own exception type, from its own parser
        onnxruntime.InferenceSession(b"not an onnx model")
    line = one_line(caught.value)
    assert line.startswith("onnxruntime ") and "\n" not in line, line
    assert one_line(ValueError("where:\n  the cause\n")) == "ValueError: where: the cause"
    long = one_line(RuntimeError("head " + "x" * 2000 + " the cause"))
    assert long.startswith("RuntimeError: head ") and long.endswith(" the cause") and len(long) < 500

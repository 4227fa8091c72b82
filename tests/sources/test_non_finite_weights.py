"""Weights holding NaN or Inf are refused at load, with one line naming the tensors, before anything is built.

Found as a user would meet it: one tensor of an mmpose-format checkpoint set to NaN used to export, and the job
then failed at simplify with "onnxslim changed the outputs: max|Δ| nan" (the wrong cause and the wrong advice),
leaving `export/model.onnx` on disk. Every form a model arrives in is checked: each checkpoint layout, a whole
pickled model, a supplied ONNX (initializers); and a network whose finite weights overflow is named at the
reference stage.
"""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import numpy_helper

from pipeline.config import ModelConfig
from pipeline.core.errors import InputError
from pipeline.sources.checkpoint import load_weights
from pipeline.sources.describe import describe

from conftest import CHECKPOINT_FORMS, REPO_ROOT, VARIANT, run_python, write_checkpoint

# A small tensor (1,152 values of a depthwise conv), not the largest: the check looks at every tensor.
POISONED = "backbone.stage1.1.short_conv.conv.weight"


def poisoned_state_dict(state_dict, value: float, key: str = POISONED):
    poisoned = {k: v.clone() for k, v in state_dict.items()}
    poisoned[key].view(-1)[:2] = value
    return poisoned


@pytest.mark.parametrize("value, word", [(float("nan"), "2 NaN"), (float("inf"), "2 Inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("form", [*CHECKPOINT_FORMS, "pickled-model", "fp16"])
def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_tensor(form, value, word, tmp_path, t_state_dict,
                                                                           t_variant):
    state = poisoned_state_dict(t_state_dict, value)
    if form == "fp16":  # stored in half precision, as fp16 training checkpoints are: widened, then checked
        path = tmp_path / "half.pth"
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    else:
        path = write_checkpoint(tmp_path / f"{form}.pth", form, state, t_variant)
    with pytest.raises(InputError) as caught:
        load_weights(path, trust_pickle=form == "pickled-model")
    message = str(caught.value)
    assert f"{POISONED} ({word} of " in message and "non-finite weights" in message and "\n" not in message


def test_a_supplied_onnx_with_non_finite_weights_is_refused_at_description(tmp_path, t_onnx):
    model = onnx.load(str(t_onnx))
    init = max(model.graph.initializer, key=lambda i: -len(i.dims))  # any initializer: the smallest rank
    array = numpy_helper.to_array(init).copy()
    array.reshape(-1)[0] = float("nan")
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    path = tmp_path / "poisoned.onnx"
    onnx.save(model, str(path))
    with pytest.raises(InputError, match=rf"holds non-finite weights: {init.name} \(1 NaN of "):
        describe(ModelConfig(checkpoint=str(path)))


@pytest.mark.slow
def test_python_m_pipeline_names_the_poisoned_tensor_and_builds_nothing(tmp_path, t_state_dict, t_variant):
    path = write_checkpoint(tmp_path / "nan.pth", "mmpose-legacy", poisoned_state_dict(t_state_dict, float("nan")),
                            t_variant)
    out = tmp_path / "out"
    result = run_python("-m", "pipeline", f"model={VARIANT}", f"model.checkpoint={path}", "targets=[onnxruntime-fp32]",
                        f"out_dir={out}", "hydra.run.dir=hydra", cwd=tmp_path, env={"PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: model.checkpoint={path} holds non-finite weights: {POISONED} (2 NaN")
    assert result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()  # nothing exported, nothing for DVC to cache


@pytest.mark.slow
def test_finite_weights_whose_outputs_overflow_are_named_at_the_reference(tmp_path, t_state_dict, t_variant):
    head = next(k for k in t_state_dict if k.startswith("head.cls_x") and k.endswith("weight"))
    state = {k: v.clone() for k, v in t_state_dict.items()}
    state[head] *= 3e38  # finite (float32's max is 3.4e38), but the logits overflow to Inf
    path = write_checkpoint(tmp_path / "overflow.pth", "state_dict", state, t_variant)
    result = run_python("stages/reference.py", VARIANT, f"model={VARIANT}", f"model.checkpoint={path}",
                        f"out_dir={tmp_path / 'out'}", cwd=REPO_ROOT)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the reference model of {VARIANT} outputs non-finite "
                                                   "values in float32 on the golden inputs: simcc_x ("), lines
    assert not (tmp_path / "out" / VARIANT / "reference.npz").exists()

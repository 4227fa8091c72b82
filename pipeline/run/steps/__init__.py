"""The pipeline's steps, one module per DVC stage (`stages/<stage>.py` runs `pipeline/run/steps/<stage>.py`),
shared with the chain without DVC (pipeline/run/chain.py).

Each step reads its inputs from the paths in `cfg.plan`, writes its outputs atomically, and raises a
PipelineError subclass (one line, with the fix) on failure. A module per step, and nothing imported here,
so that a stage process loads only what its step runs: its source dependencies are that import closure
(pipeline/planning/closure.py).
"""

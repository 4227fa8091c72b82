"""DVC stage `benchmark@<variant>`: latency and throughput of every verified artifact, side by side."""

from pipeline.run import steps
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(steps.benchmark, "variant"))

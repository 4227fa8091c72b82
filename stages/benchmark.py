"""DVC stage `benchmark@<variant>`: latency and throughput of every verified artifact, side by side."""

from pipeline.run.cli import run_stage
from pipeline.run.steps.benchmark import benchmark

if __name__ == "__main__":
    raise SystemExit(run_stage(benchmark, "variant"))

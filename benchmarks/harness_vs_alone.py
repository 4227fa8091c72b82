"""Does the benchmark harness report what an artifact does on its own? (issue 12, done-when 1)

    python benchmarks/harness_vs_alone.py [--variant NAME] [--rounds 3] [--calls 60] [--peers] [--out FILE.json]

For every built target of the variant (its recorded runtime settings), and the peers with --peers,
in the same run and alternating so that drift on the machine hits both sides alike:
- harness: `pipeline.measure.benchmark.measure` with the configured `benchmark` settings, every candidate in
  its own worker, blocks alternating across candidates;
- alone: a fresh Python process that loads only that artifact with the same Runner and settings,
  runs `warmup` calls and times `calls` consecutive batch-1 calls, and exits, with nothing else
  of ours running.
Each round runs the harness once and then every candidate alone once; the figure of each side is the
median over rounds of its median latency. A candidate passes when the harness figure is within
`--limit` (default 10%) of the alone figure. Prints a table and the machine; exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.core.io import read_npz, write_json  # noqa: E402
from pipeline.measure.benchmark import Candidate, machine, measure  # noqa: E402
from pipeline.planning.plan import spec_of  # noqa: E402
from pipeline.run.configure import load_config

ALONE = """
import json, sys, time
import numpy as np
import yaml
from pathlib import Path
from pipeline import backends
from pipeline.config import BackendsConfig, to_schema
spec = json.loads(sys.argv[1])
backends_cfg = to_schema(BackendsConfig, yaml.safe_load(Path(spec["config"]).read_text()))
target = backends.get_target(spec["target"])
runner = backends.open_runner(spec["artifact_dir"], target, backends_cfg, spec["runtime"])
feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, *spec["input_hw"])).astype(np.float32)}
for _ in range(spec["warmup"]):
    runner(feeds)
times = []
for _ in range(spec["calls"]):
    start = time.perf_counter()
    runner(feeds)
    times.append((time.perf_counter() - start) * 1000.0)
print(json.dumps(times))
"""


def time_alone(candidate: Candidate, config_path: Path, input_hw, warmup: int, calls: int) -> float:
    spec = {"target": candidate.target, "artifact_dir": candidate.artifact_dir, "config": str(config_path),
            "runtime": candidate.latency_runtime, "input_hw": list(input_hw), "warmup": warmup, "calls": calls}
    done = subprocess.run([sys.executable, "-c", ALONE, json.dumps(spec)], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: timing {candidate.name} alone failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(np.median(json.loads(done.stdout.strip().splitlines()[-1])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--variant", help="default: the plan's first variant (the model of params.yaml)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=60, help="timed calls per alone run")
    parser.add_argument("--limit", type=float, default=0.10)
    parser.add_argument("--peers", action="store_true", help="include the peers (pipeline/measure/peers.py)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    import yaml
    from omegaconf import OmegaConf

    cfg = load_config(params_file=args.params)
    variant = args.variant or next(iter(cfg.plan["variants"]))  # the plan's first: the model of params.yaml
    entry = cfg.plan["variants"][variant]
    input_hw = spec_of(cfg, variant).input_hw
    candidates = [Candidate(cfg.plan["jobs"][j]["target"], "target", cfg.plan["jobs"][j]["target"],
                            cfg.plan["jobs"][j]["artifact"]) for j in entry["jobs"]
                  if Path(cfg.plan["jobs"][j]["artifact"]).is_dir()]
    before = machine()
    with tempfile.TemporaryDirectory(prefix="harness-vs-alone-") as scratch:
        if args.peers:
            from pipeline.measure.peers import build_peers

            calibration = Path(entry["calibration"])
            used = {cfg.plan["jobs"][j]["backend"] for j in entry["jobs"]}
            candidates += build_peers(Path(entry["export"]), read_npz(calibration)["input"] if calibration.is_file()
                                      else None, Path(scratch) / "peers", used, cfg.benchmark.peer_static_shape)
        config_path = Path(scratch) / "backends.yaml"
        config_path.write_text(yaml.safe_dump(OmegaConf.to_container(OmegaConf.structured(cfg.backends))))
        harness: dict[str, list[float]] = {c.name: [] for c in candidates}
        alone: dict[str, list[float]] = {c.name: [] for c in candidates}
        for round_ in range(args.rounds):
            rows = measure(candidates, cfg.backends, input_hw, cfg.benchmark, modes=("latency",))
            for name, row in rows.items():
                harness[name].append(row["latency_ms_median"])
            order = candidates[round_ % len(candidates):] + candidates[:round_ % len(candidates)]
            for candidate in order:
                alone[candidate.name].append(time_alone(candidate, config_path, input_hw, cfg.benchmark.warmup,
                                                        args.calls))
            print(f"round {round_ + 1}/{args.rounds} done, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    results = {}
    failed = []
    print(f"{'candidate':28} {'harness ms':>10} {'alone ms':>9} {'ratio':>6}")
    for c in candidates:
        h, a = float(np.median(harness[c.name])), float(np.median(alone[c.name]))
        ratio = h / a
        results[c.name] = {"harness_ms": h, "alone_ms": a, "ratio": ratio, "harness_rounds": harness[c.name],
                           "alone_rounds": alone[c.name], "passed": abs(ratio - 1) <= args.limit}
        if not results[c.name]["passed"]:
            failed.append(c.name)
        print(f"{c.name:28} {h:10.2f} {a:9.2f} {ratio:6.3f}{'' if results[c.name]['passed'] else '  FAILED'}")
    summary = {"variant": variant, "machine": {**before, "load_average_after": machine()["load_average"]},
               "method": {"rounds": args.rounds, "alone_calls": args.calls, "limit": args.limit,
                          "benchmark": vars(cfg.benchmark)}, "candidates": results, "failed": failed}
    print(f"machine: {before['cpu']} ({', '.join(before['isa'])}), {before['logical_cores']} cores, load average "
          f"{before['load_average']} -> {summary['machine']['load_average_after']}")
    if args.out:
        write_json(args.out, summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage `train-demo`: train the demo RTMPose checkpoint on procedural figures (issue #3).

Usage: python -m stages.train_demo [key=value ...]   (keys: conf/train_demo.yaml)
Writes `demo_checkpoint` (mmpose format, byte-stable) and `demo_metrics` (JSON, sorted keys).
"""

import sys

from pipeline.core.errors import fail
from pipeline.core.io import remove_outputs
from pipeline.demo.config import load_train_demo_config
from pipeline.demo.train import save_demo_checkpoint, train, write_metrics


def main(argv: list[str]) -> int:
    try:
        cfg = load_train_demo_config(argv)
        remove_outputs(cfg.demo_checkpoint, cfg.demo_metrics)
        result = train(cfg)
        save_demo_checkpoint(cfg.demo_checkpoint, result, cfg)
        write_metrics(cfg.demo_metrics, result, cfg)
    except Exception as exc:  # one line, whoever raised it (pipeline.core.errors.fail)
        return fail(exc)
    print(f"train-demo: {cfg.demo_checkpoint} mean error {result.metrics['mean_error_px']:.2f} px, "
          f"peak prob {result.metrics['peak_prob']:.3f}, {result.images_per_s:.1f} img/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

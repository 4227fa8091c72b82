"""Stage `demo-data`: write the procedural COCO-format keypoint set (calibration and AP evaluation).

Usage: python -m stages.demo_data [key=value ...]   (keys: conf/train_demo.yaml)
Writes `demo_coco_dir`/images/*.png and `demo_coco_dir`/annotations.json.
"""

import sys

from pipeline.core.errors import fail
from pipeline.demo.config import load_train_demo_config
from pipeline.inputs.figures import write_coco


def main(argv: list[str]) -> int:
    try:
        cfg = load_train_demo_config(argv)
        out = write_coco(cfg.demo_coco_dir, cfg.coco_images, cfg.coco_seed, tuple(cfg.coco_image_size))
    except Exception as exc:  # one line, whoever raised it (pipeline.core.errors.fail)
        return fail(exc)
    print(f"demo-data: {cfg.coco_images} images in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

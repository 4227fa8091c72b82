"""Schema of `conf/train_demo.yaml` and the one way to load it: Hydra's compose API plus the schema.

The YAML is the single source of truth for the `train-demo` and `demo-data` DVC stages; run by
hand, the same loader takes Hydra-style overrides (`num_train_images=64 lr=1e-3`). Merging into
`OmegaConf.structured(TrainDemoConfig)` makes a misspelled key fail with its name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from pipeline.config import CONF_DIR, DEMO_COCO_DIR, choice, compose, to_schema
from pipeline.core.errors import ConfigError
from pipeline.model.presets import preset_spec

PROGRESS_MODES = ("auto", "bar", "log", "off")
# Fields that only say where files go or how progress is shown; they never change the weights.
_PRESENTATION = ("demo_checkpoint", "demo_metrics", "demo_coco_dir", "coco_images", "coco_seed",
                 "coco_image_size", "progress", "log_every")


@dataclass
class TrainDemoConfig:
    variant: str = "rtmpose-t_coco17_256x192"
    seed: int = 0  # training images and weight init
    eval_seed: int = 1  # held-out images; must differ from seed
    num_train_images: int = 24000  # steps = num_train_images // batch_size
    batch_size: int = 8
    lr: float = 2e-3  # AdamW peak learning rate
    weight_decay: float = 0.05  # not applied to norms, biases and other 1-D parameters (as mmpose)
    warmup_steps: int = 100  # linear warm-up, then cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.02
    sigma: list[float] = field(default_factory=lambda: [4.9, 5.66])  # SimCC label sigma (x, y) in bins
    beta: float = 10.0  # KLDiscretLoss temperature; labels are softmax(beta * gaussian)
    eval_images: int = 256
    threads: int = 2  # torch intra-op threads; results are reproducible for a fixed value
    progress: str = choice("auto", PROGRESS_MODES)  # auto: tqdm bar on a TTY, log lines otherwise
    log_every: int = 50  # steps between log lines in `log` mode
    demo_checkpoint: str = "checkpoints/rtmpose-t_coco17_256x192_demo.pth"
    demo_metrics: str = "checkpoints/rtmpose-t_coco17_256x192_demo.json"
    demo_coco_dir: str = DEMO_COCO_DIR
    coco_images: int = 200
    coco_seed: int = 2
    coco_image_size: list[int] = field(default_factory=lambda: [384, 288])  # scene (H, W)

    def __post_init__(self) -> None:
        try:
            preset_spec(self.variant)
        except ConfigError as exc:
            raise ConfigError(f"variant={self.variant!r}: {exc}") from None
        if self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size} must be at least 2 (BatchNorm needs a batch)")
        if self.num_train_images < self.batch_size:
            raise ConfigError(f"num_train_images={self.num_train_images} is less than one batch; "
                              f"set it to at least batch_size={self.batch_size}")
        if self.eval_images < 1 or self.threads < 1:
            raise ConfigError(f"eval_images={self.eval_images} and threads={self.threads} must be at least 1")
        if self.seed == self.eval_seed:
            raise ConfigError(f"eval_seed={self.eval_seed} equals seed; held-out images need another seed")
        if len(self.sigma) != 2 or min(self.sigma) <= 0:
            raise ConfigError(f"sigma={list(self.sigma)} must be two positive numbers (x, y) in SimCC bins")
        if len(self.coco_image_size) != 2:
            raise ConfigError(f"coco_image_size={list(self.coco_image_size)} must be [H, W]")

    @property
    def steps(self) -> int:
        return self.num_train_images // self.batch_size

    def training_params(self) -> dict[str, Any]:
        """The fields that determine the trained weights (recorded in the checkpoint's meta)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _PRESENTATION}


def default_train_demo_config() -> TrainDemoConfig:
    """`conf/train_demo.yaml` as written, without overrides; read without Hydra, so a running Hydra app
    (`python -m pipeline`) can call it."""
    import yaml

    raw = yaml.safe_load((CONF_DIR / "train_demo.yaml").read_text(encoding="utf-8")) or {}
    return to_schema(TrainDemoConfig, raw, "conf/train_demo.yaml")


def load_train_demo_config(overrides: Sequence[str] = ()) -> TrainDemoConfig:
    """Compose `train_demo.yaml` with Hydra overrides and validate it against `TrainDemoConfig`."""
    fields = ", ".join(f.name for f in dataclasses.fields(TrainDemoConfig))
    return to_schema(TrainDemoConfig, compose(overrides, config_name="train_demo"), "conf/train_demo.yaml",
                     hint=f"valid keys: {fields}")

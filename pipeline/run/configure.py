"""The one way to obtain a validated `RunConfig`: two doors, one code path (STYLE.md).

Run by hand, an entry point composes `conf/` with Hydra's compose API and the user's overrides; under
`dvc repro` it reads the composed `params.yaml`. Either way the result is merged into `RunConfig`, so a
misspelled key or a wrong type fails before any work starts, with the key named, and the plan is derived
(or checked) from the model and targets.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig

from pipeline import config
from pipeline.config import RunConfig, to_schema
from pipeline.core.errors import ConfigError
from pipeline.planning.plan import check_config, register_resolvers


def validate(raw: DictConfig | dict) -> RunConfig:
    """Merge into `RunConfig`, check across fields and derive the plan; raises ConfigError (one line)."""
    cfg: RunConfig = to_schema(RunConfig, raw)
    check_config(cfg)
    return cfg


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """Compose `conf/` with Hydra and resolve interpolations, the plan included."""
    register_resolvers()
    return config.compose(overrides, config_name)


def load_config(overrides: list[str] | tuple[str, ...] = (), params_file: str | Path | None = None) -> RunConfig:
    """The composed config (overrides) or the DVC params file, validated against `RunConfig`."""
    if params_file is not None:
        if overrides:
            raise ConfigError("use either --params or overrides, not both: params.yaml is already composed")
        path = Path(params_file)
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; run `python -m pipeline.params` to compose it")
        return validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return validate(compose(overrides))

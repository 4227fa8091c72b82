"""Registers the pipeline's OmegaConf resolver wherever Hydra scans plugins.

DVC composes conf/ itself on `dvc exp run` (hydra.enabled in .dvc/config) and, before composing,
imports every module of the `hydra_plugins` namespace found on the repository path. This is the
only hook DVC offers; without it `${rtmpose_plan:...}` in conf/config.yaml would not resolve there.
"""

from pipeline.planning.plan import register_resolvers

register_resolvers()

"""Import mmpose 1.3.2's model, codec and dataset-meta code without its compiled or dataset extras.

mmpose's package `__init__` files pull in dataset, evaluation and mmdet code (xtcocotools, mmdet's
RTMO modules) that RTMPose-family models never use. This helper enters those packages as bare
namespace modules, replaces the COCO evaluation API (xtcocotools) with empty modules, imports the
submodules that register what RTMPose, RTMW and the DWPose distiller are built from (CSPNeXt,
CSPNeXtPAFPN, RTMCCHead, RTMWHead, KLDiscretLoss, SimCCLabel, PoseDataPreprocessor,
TopdownPoseEstimator, DWPoseDistiller, ExpMomentumEMA, the 2D datasets whose METAINFO names the
keypoint set) and makes `mmpose` the default registry
scope, as `mmpose.apis.init_model` does. Configs that name the backbone with `_scope_='mmdet'`
then fall back to mmpose's own CSPNeXt (the same module and key names as mmdet's).

Only for scripts that run in their own process (tests/upstream/*.py): none of this may leak into
the test session.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
import warnings

# Order matters: losses before heads (the heads build their loss), the estimator module last.
_MODULES = (
    "mmpose.models.losses",
    "mmpose.models.backbones.cspnext",
    "mmpose.models.necks.cspnext_pafpn",
    "mmpose.models.heads.coord_cls_heads.rtmcc_head",
    "mmpose.models.heads.coord_cls_heads.rtmw_head",
    "mmpose.models.data_preprocessors",
    "mmpose.codecs",
    "mmpose.models.pose_estimators.topdown",
    "mmpose.models.distillers.dwpose_distiller",
    "mmpose.engine.hooks.ema_hook",
    "mmpose.datasets.datasets.utils",
    "mmpose.datasets.datasets.base",
    "mmpose.datasets.datasets.body",
    "mmpose.datasets.datasets.face",
    "mmpose.datasets.datasets.hand",
    "mmpose.datasets.datasets.wholebody",
    "mmpose.datasets.dataset_wrappers",
)
_NAMESPACES = ("mmpose.models", "mmpose.models.heads", "mmpose.datasets", "mmpose.datasets.datasets")


def mmpose_root() -> str:
    """mmpose's package directory; its configs ship under `.mim/configs`."""
    import mmpose

    return os.path.dirname(mmpose.__file__)


def import_mmpose() -> types.SimpleNamespace:
    """Import the model code and return the classes and helpers the upstream scripts use.

    Returns a namespace with `MODELS` and `DATASETS` (mmpose's registries), `Config`, `CSPNeXt`, `RTMCCHead`,
    `RTMWHead`, `parse_pose_metainfo`, `revert_sync_batchnorm` and `configs_dir`.
    Raises ImportError when mmpose, mmengine or mmcv-lite is not installed.
    """
    for name in ("xtcocotools", "xtcocotools.coco", "xtcocotools.cocoeval", "xtcocotools.mask"):
        module = types.ModuleType(name)
        module.COCO = module.COCOeval = object
        sys.modules.setdefault(name, module)
    root = mmpose_root()
    for package in _NAMESPACES:
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [os.path.join(root, *package.split(".")[1:])]
            sys.modules[package] = module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mmcv-lite warns that its compiled ops are missing
        from mmpose.models.builder import build_pose_estimator

        # the distiller imports this name from the package we replaced by a bare namespace
        sys.modules["mmpose.models"].build_pose_estimator = build_pose_estimator
        for name in _MODULES:
            module = importlib.import_module(name)
            if name == "mmpose.datasets.datasets.base":  # the hand datasets import it from the package
                sys.modules["mmpose.datasets.datasets"].BaseCocoStyleDataset = module.BaseCocoStyleDataset
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    from mmpose.models.backbones.cspnext import CSPNeXt
    from mmpose.models.heads.coord_cls_heads.rtmcc_head import RTMCCHead
    from mmpose.models.heads.coord_cls_heads.rtmw_head import RTMWHead
    from mmpose.registry import DATASETS, MODELS

    # mmengine warns on every build that mmdet (the backbone's `_scope_`) is missing; the fallback
    # to mmpose's registry is intended here.
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    init_default_scope("mmpose")
    return types.SimpleNamespace(
        MODELS=MODELS, DATASETS=DATASETS, Config=Config, CSPNeXt=CSPNeXt, RTMCCHead=RTMCCHead, RTMWHead=RTMWHead,
        parse_pose_metainfo=parse_pose_metainfo, revert_sync_batchnorm=revert_sync_batchnorm,
        configs_dir=os.path.join(root, ".mim", "configs"))

"""Versions of the tools that made an artifact, recorded in its metadata."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTIONS = {"torch": "torch", "onnx": "onnx", "onnxruntime": "onnxruntime", "openvino": "openvino",
                 "onnxslim": "onnxslim", "onnxsim": "onnxsim", "numpy": "numpy"}


def tool_versions(*tools: str) -> dict[str, str]:
    versions = {}
    for tool in tools:
        try:
            versions[tool] = metadata.version(DISTRIBUTIONS.get(tool, tool))
        except metadata.PackageNotFoundError:
            versions[tool] = "not installed"
    return versions

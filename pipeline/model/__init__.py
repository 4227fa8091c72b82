"""The model: its description (`spec`), the plain-PyTorch network built from it, the released presets, the
keypoint sets, preprocessing and the SimCC codec. Imports only `core` and `config`."""

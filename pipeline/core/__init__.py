"""Leaves: errors, atomic file writing, ONNX file I/O, tool versions, progress bars, the machine. Imports nothing of the project."""

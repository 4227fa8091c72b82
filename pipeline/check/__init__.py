"""Checking artifacts: the reference run, verification against it (the gate) and keypoint AP."""

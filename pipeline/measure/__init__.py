"""Measuring speed: the benchmark harness and its timing worker, the peers (what users get without us), tuning."""

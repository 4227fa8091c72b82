"""Inputs every stage agrees on: the golden crops (photos, procedural figures, seeded tensors) and the INT8
calibration crops."""

"""Workflow splitters: one module per workflow type, found by name in a registry.

Built-in splitters (matrix addition and multiplication, ML training, OpenMalaria sweeps,
parameter sweeps, image batches) arrive with the workflow milestone.
"""

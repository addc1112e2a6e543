"""Experiment orchestration above train.py: sweeps, grouping, launching, timing."""

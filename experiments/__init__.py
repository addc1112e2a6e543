"""The experiment layer: what runs above train.py (benchmarks here; sweeps, tables, launching)."""

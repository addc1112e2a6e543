"""Calibration: metrics (numpy), train-time objectives for ``--calib`` (torch) and post-hoc calibrators (numpy).

Submodules are imported explicitly (``from calibration.metrics import compute_metrics``) so that the numpy-only
parts (``metrics``, ``posthoc``, ``runs``) never pull in torch.
"""

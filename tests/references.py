"""Independent float64 numpy references for the calibration terms (docs/method_notes.md#tcpt-objective), written from
the formulas and sharing no code with calibration.regularizers, so a test comparing against them can fail."""
from __future__ import annotations

import numpy as np


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)


def margin_mean_var(logits, labels, alpha: float = 0.1, beta: float = 0.01) -> float:
    """``-alpha * mean(m) + beta * var(m)`` (population variance), ``m_i = z_{i,y_i} - max_{j != y_i} z_ij``."""
    z, y = _np(logits), _np(labels).astype(int)
    m = np.array([row[k] - max(v for j, v in enumerate(row) if j != k) for row, k in zip(z, y)])
    return float(-alpha * m.mean() + beta * ((m - m.mean()) ** 2).mean())


def moment_matching(tuned, frozen) -> float:
    """``||mu_T - mu_F||^2 + ||Sigma_T - Sigma_F||_F^2`` over the rows (class prototypes), covariance divisor C."""
    t, f = _np(tuned), _np(frozen)
    cov_t = np.cov(t, rowvar=False, bias=True)
    cov_f = np.cov(f, rowvar=False, bias=True)
    return float(((t.mean(0) - f.mean(0)) ** 2).sum() + ((cov_t - cov_f) ** 2).sum())

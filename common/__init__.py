"""The lowest layer: what every other package needs and nothing project-specific.

``errors`` (UserError and its kinds), ``suggest`` (the one did-you-mean message), ``atomic`` (atomic file writes),
``logtail`` (the last lines of a log, for failure reports). Standard library only (torch and numpy are imported
inside the writers that need them), so ``clip/``, ``calibration/`` and ``dassl/`` can all depend on it.
"""

"""Our own compact engine with the Dassl API (docs/engine_api.md#api-surface).

Importing ``dassl`` loads nothing heavy; import the sub-packages you need
(``dassl.config``, ``dassl.utils``, ``dassl.engine``, ...).
"""

__version__ = "0.6.3+calib"

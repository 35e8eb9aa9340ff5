"""Makes the repository root importable when a tuning script runs as a file (`python
tuning/sweep.py`, `ray job submit ... python tuning/sweep.py`), where Python puts tuning/, not the
root, first on sys.path. Imported as the top-level module `_repo_path` by sweep.py and final.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TUNING = Path(__file__).resolve().parent
_REPO_ROOT = str(_TUNING.parent)
if sys.path and Path(sys.path[0]).resolve() == _TUNING:
    sys.path[0] = _REPO_ROOT
elif _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

"""``python -m router``: read the settings, configure logging, run until SIGTERM.

Exit codes: ``runtime/startup.py``.
"""

import sys

from router import app
from router.settings import Settings
from runtime.startup import run_service

if __name__ == "__main__":
    sys.exit(run_service("router", Settings.from_env, app.main))

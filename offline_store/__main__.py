"""``python -m offline_store``: read the settings, configure logging, serve until SIGTERM."""

import asyncio
import os
import sys

from offline_store import app
from offline_store.settings import Settings
from proto.errors import DependencyUnavailable, SettingsError
from proto.logs import configure_logging


def main() -> int:
    """Run the offline store; return the process's exit code."""
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"offline_store: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(app.main(settings))
    except DependencyUnavailable as exc:
        print(f"offline_store: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

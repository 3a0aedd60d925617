"""The offline store's settings, read once from the environment by ``Settings.from_env``.

The fields every service shares, and their readers, are in ``runtime/settings.py``.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from proto import env
from proto.errors import SettingsError
from runtime import settings as shared
from runtime.settings import ServiceSettings

MAX_BATCH = 10_000
"""The largest ``SWITCHBOARD_BATCH_MAX`` and ``SWITCHBOARD_REPLAY_PAGE`` accepted."""
DEFAULT_MAX_ROWS_PER_UID = 10_000
"""Offline rows one uid may hold: weeks of a busy chat, far below what fills a disk."""
MAX_ROWS_PER_UID = 10_000_000
"""The largest ``SWITCHBOARD_OFFLINE_MAX_ROWS_PER_UID`` accepted."""
DEFAULT_RETENTION_S = 30 * 24 * 3600.0
"""Thirty days: a row older than that is deleted unread."""
DEFAULT_SWEEP_INTERVAL_S = 60.0
"""Pause between two passes of the retention sweep."""
DEFAULT_HISTORY_DAYS = 30.0
MAX_HISTORY_DAYS = 36_500.0
"""A century: the largest ``SWITCHBOARD_HISTORY_DAYS`` accepted (0 keeps everything)."""
DEFAULT_SYNC_PAGE = 1000
DEFAULT_SYNC_GRACE_S = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings(ServiceSettings):
    postgres_dsn: str
    batch_max: int
    """Most messages handled (and rows inserted from them) in one statement."""
    replay_page: int
    """Rows per replay query, and per delivery published for it."""
    query_timeout_s: float
    """PostgreSQL statement deadline (asyncpg ``command_timeout``)."""
    max_rows_per_uid: int = DEFAULT_MAX_ROWS_PER_UID
    """Most rows one uid may hold; rows past it are refused (``recipient_full``)."""
    retention_s: float = DEFAULT_RETENTION_S
    """Age after which a row is never replayed, and deleted by the sweep."""
    sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S
    """Pause between two passes of the retention sweep."""
    retry_backoff_max_s: float = 5.0
    """Longest pause between two attempts at a batch that failed as a whole."""
    history_days: float = DEFAULT_HISTORY_DAYS
    """History on: days of history kept (fractions allowed); 0 keeps everything."""
    sync_page: int = DEFAULT_SYNC_PAGE
    """History on: inbox entries per sync window, at most."""
    sync_grace_s: float = DEFAULT_SYNC_GRACE_S
    """History on: how long a syncing connection is added to messages routed before it
    registered (longer than any routed message waits for the store)."""
    max_command_bytes: int = 1_048_576
    """Largest group command body served (``SWITCHBOARD_MAX_COMMAND_BYTES``, as the router's)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Read every setting; raises ``SettingsError`` naming the variable to fix."""
        return cls(
            **shared.service_fields(environ),
            retry_backoff_max_s=shared.retry_backoff_max_s(environ),
            postgres_dsn=env.url(environ, env.POSTGRES_DSN, env.DEFAULT_POSTGRES_DSN),
            batch_max=env.integer(
                environ, env.BATCH_MAX, 500, minimum=1, maximum=MAX_BATCH
            ),
            replay_page=env.integer(
                environ, env.REPLAY_PAGE, 500, minimum=1, maximum=MAX_BATCH
            ),
            query_timeout_s=env.seconds(environ, env.QUERY_TIMEOUT_S, 10.0),
            max_rows_per_uid=env.integer(
                environ,
                env.OFFLINE_MAX_ROWS_PER_UID,
                DEFAULT_MAX_ROWS_PER_UID,
                minimum=1,
                maximum=MAX_ROWS_PER_UID,
            ),
            retention_s=env.seconds(
                environ, env.OFFLINE_RETENTION_S, DEFAULT_RETENTION_S
            ),
            sweep_interval_s=env.seconds(
                environ, env.OFFLINE_SWEEP_INTERVAL_S, DEFAULT_SWEEP_INTERVAL_S
            ),
            history_days=history_days(environ),
            sync_page=env.integer(
                environ, env.SYNC_PAGE, DEFAULT_SYNC_PAGE, minimum=1, maximum=MAX_BATCH
            ),
            sync_grace_s=env.seconds(environ, env.SYNC_GRACE_S, DEFAULT_SYNC_GRACE_S),
            max_command_bytes=env.integer(
                environ, env.MAX_COMMAND_BYTES, default=1_048_576, minimum=1024
            ),
        )


def history_days(environ: Mapping[str, str]) -> float:
    """``SWITCHBOARD_HISTORY_DAYS``: days, fractions allowed, 0 (keep everything) to a century."""
    days = env.non_negative(
        environ,
        env.HISTORY_DAYS,
        DEFAULT_HISTORY_DAYS,
        "a number of days (0: keep everything)",
    )
    if days > MAX_HISTORY_DAYS:
        raise SettingsError(
            f"{env.HISTORY_DAYS} must be at most {MAX_HISTORY_DAYS:.0f} days, got {days:g}"
        )
    return days

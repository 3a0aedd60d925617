"""The offline store's settings, read once from the environment by ``Settings.from_env``."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from proto import env
from proto.errors import SettingsError
from proto.names import DEFAULT_NAMESPACE, Names
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES, MIN_MAX_AMQP_MESSAGE_BYTES
from proto.topology import QUEUE_TYPES

LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_PREFETCH = 65535
"""AMQP's prefetch count is a 16-bit number."""
MAX_BATCH = 10_000
DEFAULT_MAX_ROWS_PER_UID = 10_000
"""Offline rows one uid may hold: weeks of a busy chat, far below what fills a disk."""
DEFAULT_RETENTION_S = 30 * 24 * 3600.0
"""Thirty days: a row older than that is deleted unread."""
DEFAULT_SWEEP_INTERVAL_S = 60.0
MAX_ROWS_PER_UID = 10_000_000
"""PostgreSQL statement deadline (asyncpg ``command_timeout``); proto/env.py has no variable yet."""


@dataclass(frozen=True, slots=True)
class Settings:
    names: Names
    amqp_url: str
    postgres_dsn: str
    queue_type: str
    log_level: str
    prefetch: int
    batch_max: int
    """Most messages handled (and rows inserted from them) in one statement."""
    replay_page: int
    """Rows per replay query, and per delivery published for it."""
    publish_timeout_s: float
    connect_timeout_s: float
    shutdown_timeout_s: float
    query_timeout_s: float
    metrics_port: int | None = None
    """Port of /livez, /readyz and /metrics; None: not served."""
    max_rows_per_uid: int = DEFAULT_MAX_ROWS_PER_UID
    """Most rows one uid may hold; rows past it are refused (``recipient_full``)."""
    retention_s: float = DEFAULT_RETENTION_S
    """Age after which a row is never replayed, and deleted by the sweep."""
    sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S
    """Pause between two passes of the retention sweep."""
    max_amqp_message_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES
    """Largest message published (a replay page, a ``Saved``); more go in more messages."""
    retry_backoff_max_s: float = 5.0
    """Longest pause between two attempts at a batch that failed as a whole."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        namespace = env.text(environ, env.NAMESPACE, DEFAULT_NAMESPACE)
        try:
            names = Names(namespace)
        except ValueError as exc:
            raise SettingsError(f"{env.NAMESPACE}: {exc}") from None
        return cls(
            names=names,
            amqp_url=env.text(environ, env.AMQP_URL, env.DEFAULT_AMQP_URL),
            postgres_dsn=env.text(environ, env.POSTGRES_DSN, env.DEFAULT_POSTGRES_DSN),
            queue_type=env.choice(environ, env.QUEUE_TYPE, QUEUE_TYPES, "quorum"),
            log_level=env.choice(environ, env.LOG_LEVEL, LOG_LEVELS, "info"),
            prefetch=env.integer(
                environ, env.PREFETCH, 1000, minimum=1, maximum=MAX_PREFETCH
            ),
            batch_max=env.integer(
                environ, env.BATCH_MAX, 500, minimum=1, maximum=MAX_BATCH
            ),
            replay_page=env.integer(
                environ, env.REPLAY_PAGE, 500, minimum=1, maximum=MAX_BATCH
            ),
            publish_timeout_s=env.seconds(environ, env.PUBLISH_TIMEOUT_S, 5.0),
            connect_timeout_s=env.seconds(environ, env.CONNECT_TIMEOUT_S, 5.0),
            shutdown_timeout_s=env.seconds(environ, env.SHUTDOWN_TIMEOUT_S, 10.0),
            query_timeout_s=env.seconds(environ, env.QUERY_TIMEOUT_S, 10.0),
            metrics_port=(
                env.integer(environ, env.METRICS_PORT, 0, maximum=65535)
                if environ.get(env.METRICS_PORT, "")
                else None
            ),
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
            max_amqp_message_bytes=env.integer(
                environ,
                env.MAX_AMQP_MESSAGE_BYTES,
                default=DEFAULT_MAX_AMQP_MESSAGE_BYTES,
                minimum=MIN_MAX_AMQP_MESSAGE_BYTES,
            ),
            retry_backoff_max_s=env.seconds(
                environ, env.RETRY_BACKOFF_MAX_S, default=5.0
            ),
        )


def mask_password(text: str, url: str) -> str:
    """``text`` with the password of ``url`` replaced by ``***``, should it appear in it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    for secret in {password, unquote(password)} if password else ():
        text = text.replace(secret, "***")
    return text

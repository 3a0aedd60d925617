"""Logging: one structlog setup for every service, and the fixed keys of its lines.

Lines are JSON (one object per line, ISO UTC timestamps) when stdout is not a terminal, and
coloured console output when it is. Events are constant snake_case phrases ending in a past-tense
verb; values go in keys. Never log a token, a secret or a message body.
"""

import logging
import sys

import structlog

# The fixed keys.
UID = "uid"
CONN_ID = "conn_id"
MID = "mid"
CLIENT_ID = "client_id"
GATEWAY_ID = "gateway_id"
NAMESPACE = "namespace"
CODE = "code"
SERVICE = "service"

READY_EVENT = "service_ready"
"""Logged once by every service when it serves; tests and operators wait for it."""


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog for this process; called once, by ``runtime/startup.py``.

    Records of standard-library loggers (aio-pika, aiormq, asyncpg, websockets) go through the
    same renderer to stdout, from WARNING up, so that a process writes one kind of line to one
    stream, and stderr stays for the one-line startup errors.
    """
    if json is None:
        json = not sys.stdout.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    exceptions = (
        structlog.processors.format_exc_info if json else structlog.dev.set_exc_info
    )
    structlog.configure(
        processors=[*shared, exceptions, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exceptions,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)

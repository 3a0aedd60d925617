"""The exceptions Switchboard raises across module boundaries, and what becomes of each::

SwitchboardError
├── FrameRejected(code, client_id)            -> error frame to that client; connection stays open
├── ConnectionRefused(close_code, reason)     -> close the WebSocket with that code
├── BadEnvelope(reason)                       -> reject the AMQP message without requeue, and log it
├── SettingsError(variable, expected, got)    -> one line at startup, exit 2
└── DependencyUnavailable(name, where, hint)  -> one line at startup, exit 1
"""

from proto.codes import CloseCode, ErrorCode


class SwitchboardError(Exception):
    """Base of every Switchboard exception."""


class FrameRejected(SwitchboardError):
    """A client frame that gets an ``error`` frame; the connection stays open."""

    def __init__(
        self, code: ErrorCode, message: str, client_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id


class ConnectionRefused(SwitchboardError):
    """A condition that ends the WebSocket with ``close_code``."""

    def __init__(self, close_code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


class BadEnvelope(SwitchboardError):
    """An AMQP body that does not match its envelope: rejected without requeue."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SettingsError(SwitchboardError):
    """An environment variable with a value that cannot be used. Never carries a secret's value."""


class DependencyUnavailable(SwitchboardError):
    """A backing service that cannot be reached at startup."""

    def __init__(self, name: str, where: str, hint: str) -> None:
        super().__init__(f"{name} is not reachable at {where}: {hint}")
        self.name = name
        self.where = where
        self.hint = hint

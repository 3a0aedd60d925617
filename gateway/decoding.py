"""A client's text frame in: the typed frame, or the ``FrameRejected`` that answers it.

Pure, like ``session.py``, which calls it. The rules of ``proto/rules.py`` that no decoder can
check come first (a body nested too deeply is refused before msgspec recurses into it); then
msgspec decodes and validates in one pass, and its errors become error codes.
"""

import msgspec

from proto import frames, rules
from proto.codes import ErrorCode
from proto.errors import FrameRejected


def read_frame(text: str | bytes) -> frames.AnyClientFrame:
    """Decode and check one text frame.

    Raises:
        FrameRejected: ``invalid_json`` for a frame that is not JSON (or too deep to decode),
            ``unknown_type`` for a ``type`` no client may send, ``invalid_field`` for a field
            of the wrong shape or a body that breaks the rules; with the frame's id when it
            has one.
    """
    too_deep = rules.nesting_violation(text)
    if too_deep is not None:  # no decoder may recurse that far: refused by the rule
        raise FrameRejected(ErrorCode.INVALID_FIELD, f"$.body {too_deep}")
    try:
        return frames.decode_client_frame(text)
    except msgspec.ValidationError as exc:  # before DecodeError: it is a subclass
        probe = _probe_frame(text)
        client_id = probe.id if isinstance(probe.id, str) else None
        if probe.type not in frames.CLIENT_FRAME_TYPES:
            raise FrameRejected(
                ErrorCode.UNKNOWN_TYPE, f"unknown frame type: {exc}", client_id
            ) from exc
        raise FrameRejected(ErrorCode.INVALID_FIELD, str(exc), client_id) from exc
    except msgspec.DecodeError as exc:
        raise FrameRejected(
            ErrorCode.INVALID_JSON, f"not a JSON text frame: {exc}"
        ) from exc
    except RecursionError as exc:  # msgspec's decoder recurses per nesting level
        raise FrameRejected(
            ErrorCode.INVALID_JSON, "the frame is nested too deeply"
        ) from exc


def client_id_of(text: str | bytes) -> str | None:
    """The frame's ``id``, when it has one that is a string, without decoding the rest."""
    probe = _probe_frame(text)
    return probe.id if isinstance(probe.id, str) else None


def _probe_frame(text: str | bytes) -> frames.FrameProbe:
    try:
        return frames.probe_frame(text)
    except (msgspec.DecodeError, RecursionError):  # not an object, or too deep
        return frames.FrameProbe()

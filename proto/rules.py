"""The rules every value that enters Switchboard must follow: identifiers and message bodies.

One set of rules, checked once at the edge (a client frame at the gateway, a backend command at
the gateway's HTTP API or at the router, an envelope at the router) so that nothing past the edge
ever meets a value a key scheme, a routing key, a database column or a standard JSON decoder
would misread. A value that breaks a rule is refused with ``invalid_field`` and the JSON path of
the value (``$.to``, ``$.uids[3]``, ``$.body``); a token whose ``sub`` breaks it with
``invalid_token``.

Identifiers (uids, group names, room names, client ids, mids in ``ack``, gateway and connection
ids in envelopes): 1 to ``MAX_ID_LENGTH`` characters, each an ASCII letter or digit or one of
``_ - . @ + = | ~`` (``IDENTIFIER_CHARACTERS``). Why this set:

- It keeps the usual uids: e-mail addresses (``ann@example.com``, ``ann+test@example.com``),
  UUIDs, and the subjects identity providers mint (Auth0's ``auth0|5f7c...``, base64url ids
  with ``-`` and ``_``, padded ones with ``=``).
- No ``:``: it separates the parts of every Redis key (``<ns>:presence:{<uid>}``,
  ``<ns>:dedup:{<uid>}:<window>``), so a uid without one can never make another uid's key.
- No ``{`` or ``}``: the id in braces is the key's hash tag, which places every key of one uid,
  gateway, room or group in one Redis Cluster slot; a brace inside would cut the tag short.
- No ``*``, ``?``, ``[`` or ``#``: glob and topic-pattern characters (Redis ``SCAN`` patterns,
  the ``rooms`` claim's globs, AMQP topic wildcards) could otherwise match more than the one name.
- No space, no control character, no NUL, nothing outside ASCII: PostgreSQL ``text`` refuses NUL,
  logs and terminals misprint control characters, and look-alike Unicode would let two uids
  read the same to a person.
- Case matters: ``Ann`` and ``ann`` are two uids, as they are two ``sub`` values.

Bodies (``send``'s ``body``, ``api.send``'s and ``api.broadcast``'s ``body``): any JSON value, with

- at most ``MAX_BODY_DEPTH`` levels of nested arrays and objects: every service decodes the
  envelope that carries a body, and a recursive decoder's stack is finite (a frame or command
  nested deeper than its body may be is refused before it is decoded, ``nesting_violation``);
- no number literal longer than ``MAX_NUMBER_CHARS`` characters, and none whose value is not a
  finite IEEE 754 double (``1e400``): standard decoders refuse such numbers (Python's ``json``
  refuses integers over 4,300 digits, msgspec very long integers and numbers out of a double's
  range) or turn them into infinities that cannot be encoded again. A number that must be
  exact beyond a double's 15 to 17 digits belongs in a string.

Pure: no I/O.
"""

import re
from typing import Annotated

import msgspec

MAX_ID_LENGTH = 128
IDENTIFIER_CHARACTERS = "A-Za-z0-9_.@+=|~-"
"""The characters of an identifier, as a regular-expression character class body."""
IDENTIFIER_PATTERN = rf"^[{IDENTIFIER_CHARACTERS}]+$(?!\n)"
"""An identifier, for msgspec (which searches with Python's ``re``) and for JSON Schema
(ECMA-262). ``$(?!\n)`` is the end of the text in both: Python's ``$`` alone also matches
before a final newline."""
MAX_BODY_DEPTH = 64
"""Deepest nesting of arrays and objects in a body."""
MAX_NUMBER_CHARS = 64
"""Longest number literal in a body, sign, fraction and exponent included."""

Identifier = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=IDENTIFIER_PATTERN),
]
"""A uid, group, room, client id or other name that can end up in a key or a column."""
OptionalIdentifier = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_ID_LENGTH, pattern=rf"^[{IDENTIFIER_CHARACTERS}]*$(?!\n)"
    ),
]
"""An identifier, or the empty string where a field says "none" with ``""``."""

_IDENTIFIER = re.compile(rf"[{IDENTIFIER_CHARACTERS}]{{1,{MAX_ID_LENGTH}}}")
# Number literals are looked for in translated copies of the text (C, no regex): in one, each
# byte that may be part of a number literal becomes ``n`` and any other a space, so a run longer
# than the limit is a plain substring; in the other, digits and dots become ``d`` and exponent
# marks ``e``, so a positive exponent of three digits or more (the only way a short literal
# leaves a double's range) is ``deddd`` or ``de+ddd``. Both are absent from nearly every body,
# which is then accepted after a few passes over its bytes.
_NUMBER_CHARACTERS = b"0123456789.eE+-"
_NUMBER_RUNS = bytes(
    b"n"[0] if byte in _NUMBER_CHARACTERS else b" "[0] for byte in range(256)
)
_NUMBER_CLASSES = bytes(
    b"d"[0]
    if byte in b"0123456789."
    else b"e"[0]
    if byte in b"eE"
    else byte
    if byte in b"+-"
    else b" "[0]
    for byte in range(256)
)
_LONG_RUN = b"n" * (MAX_NUMBER_CHARS + 1)
_BIG_EXPONENTS = (b"deddd", b"de+ddd")
_BRACKET_ONLY = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_decode_any = msgspec.json.Decoder().decode


def _has_long_number(text: bytes) -> bool:
    """Whether some run of number characters is longer than ``MAX_NUMBER_CHARS``."""
    return _LONG_RUN in text.translate(_NUMBER_RUNS)


def _has_big_exponent(text: bytes) -> bool:
    classes = text.translate(_NUMBER_CLASSES)
    return b"e" in classes and any(pattern in classes for pattern in _BIG_EXPONENTS)


def _without_strings(body: bytes) -> bytes:
    """The JSON text with every string emptied (``""``), so that only structure is left.

    Escapes are dropped first (``\\\\`` pairs, then ``\\"``): what is left of a string holds no
    quote, and the text splits on quotes into outside, inside, outside...
    """
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b'""'.join(unescaped.split(b'"')[::2])


def is_identifier(value: str) -> bool:
    """Tell whether a string is a valid identifier (see the module docstring)."""
    return _IDENTIFIER.fullmatch(value) is not None


def body_violation(body: bytes) -> str | None:
    """Say which body rule a JSON value breaks, if any.

    Args:
        body: one JSON value that a decoder already accepted as JSON (a ``msgspec.Raw``).

    Returns:
        None for a valid body; else the reason, for an ``invalid_field`` message about
        ``$.body``.
    """
    many_brackets = body.count(b"[") + body.count(b"{") > MAX_BODY_DEPTH
    long_number = _has_long_number(body)
    big_exponent = _has_big_exponent(body)
    if not (many_brackets or long_number or big_exponent):
        return None  # the common case: a few passes over the bytes, all in C
    # Strings may hold anything: look at the structure and the numbers alone.
    structure = _without_strings(body)
    if many_brackets and body_depth(structure) > MAX_BODY_DEPTH:
        return f"is nested more than {MAX_BODY_DEPTH} levels deep"
    if long_number and _has_long_number(structure):
        return f"holds a number literal longer than {MAX_NUMBER_CHARS} characters"
    if big_exponent and _has_big_exponent(structure):
        try:
            _decode_any(structure)  # at most MAX_BODY_DEPTH deep: checked above
        except msgspec.DecodeError:
            # Well-formed JSON (the caller checked) that msgspec refuses: out of range.
            return "holds a number that is not a finite double"
    return None


def nesting_violation(text: str | bytes, enclosing_levels: int = 1) -> str | None:
    """Say whether a whole frame or command nests deeper than a body inside it may.

    Checked before decoding, so that no decoder recurses into a body far deeper than the rule
    allows (msgspec's stack ends near Python's recursion limit, at a depth that depends on the
    caller's stack): such input is refused by the rule, always with the same answer.

    Args:
        text: a frame or command, not decoded yet (any bytes: invalid JSON passes here and
            is refused by the decoder).
        enclosing_levels: the levels around the body (1: the frame or command object).

    Returns:
        None when the text is not too deep; else the reason, about ``$.body``.
    """
    limit = MAX_BODY_DEPTH + enclosing_levels
    if isinstance(text, str):
        if text.count("[") + text.count("{") <= limit:
            return None
        raw = text.encode("utf-8", "surrogatepass")
    else:
        raw = text
        if raw.count(b"[") + raw.count(b"{") <= limit:
            return None
    if body_depth(_without_strings(raw), limit) > limit:
        return f"is nested more than {MAX_BODY_DEPTH} levels deep"
    return None


def body_depth(structure: bytes, limit: int = MAX_BODY_DEPTH) -> int:
    """The deepest nesting of arrays and objects in JSON text whose strings hold no brackets.

    Args:
        structure: JSON text, its strings emptied (``body_violation`` does that).

        limit: the depth that matters; the count stops past it.

    Each pass deletes every innermost ``[]`` pair, one level, at C speed; it stops after
    ``limit + 1`` passes, which is all a verdict needs.
    """
    brackets = structure.translate(_BRACKET_ONLY, _NOT_BRACKETS)
    depth = 0
    while brackets and depth <= limit:
        brackets = brackets.replace(b"[]", b"")
        depth += 1
    return depth

"""Envelopes whose items are decoded one by one, so that one bad item never sinks the others.

A ``Delivery`` or a ``Batch`` carries many users' work. The fast path decodes the whole body in
one pass; when that fails, the body's ``items`` array is cut into its elements by a scan that
does not recurse (a body nested thousands of levels deep makes any recursive decoder raise
``RecursionError``, ``msgspec.Raw`` included), and each element is decoded alone. The elements
that fail come back as ``RefusedItem``: the item alone, wrapped as an envelope of the same kind,
with the reason, for the consumer to dead-letter (``proto.names.HEADER_REJECTED_REASON``).

Pure: no I/O. What a consumer does with a refused item is its own business.
"""

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from proto.envelopes import (
    Batch,
    Batched,
    Delivery,
    DeliveryItem,
    SyncWindow,
    encode,
)
from proto.errors import BadEnvelope

T = TypeVar("T")

DECODE_ERRORS = (
    msgspec.DecodeError,  # msgspec.ValidationError is a subclass
    RecursionError,  # recursive decoders give up on deep nesting
    ValueError,  # a __post_init__ check; UnicodeDecodeError is a subclass
    UnicodeDecodeError,
)
"""Every error decoding untrusted bytes may raise: a consumer catches them all."""

TOO_DEEP = "nested too deeply"
"""The reason given for a body that made a decoder raise ``RecursionError``."""


@dataclass(frozen=True, slots=True)
class RefusedItem:
    """One item of an envelope that cannot be handled, ready to be dead-lettered alone."""

    body: bytes
    """The item alone, as an envelope of the same kind (``{"items": [<item>]}``)."""
    reason: str
    """Why, without the item's content (msgspec's message names a JSON path)."""
    index: int
    """Its position among the envelope's items (for the log line)."""


@dataclass(frozen=True, slots=True)
class Decoded(Generic[T]):
    """The items of an envelope that decoded, and the ones refused."""

    items: list[T]
    refused: list[RefusedItem]
    positions: list[int] | None = None
    """The position of each of ``items`` among the envelope's items; None: every item decoded."""
    next_mid: str = ""
    """A ``Delivery``'s ``next_mid`` (a replay window's continuation), kept on both paths."""
    from_mid: str = ""
    """A ``Delivery``'s ``from_mid`` (where a replay window starts), kept on both paths."""
    sync: SyncWindow | None = None
    """A ``Delivery``'s ``sync`` (how far a sync window reaches), kept on both paths."""

    def position(self, index: int) -> int:
        """The position among the envelope's items of ``items[index]``."""
        return index if self.positions is None else self.positions[index]


_DECODE_DELIVERY_ITEM = msgspec.json.Decoder(DeliveryItem).decode
_DECODE_BATCHED = msgspec.json.Decoder(Batched).decode
_DECODE_DELIVERY = msgspec.json.Decoder(Delivery).decode
_DECODE_BATCH = msgspec.json.Decoder(Batch).decode
_DECODE_SYNC = msgspec.json.Decoder(SyncWindow).decode

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)
"""A JSON string, or a structural character: all the scan needs to see."""


def reason_of(exc: Exception) -> str:
    """The reason to log and to dead-letter with, for an error of ``DECODE_ERRORS``."""
    if isinstance(exc, RecursionError):
        return TOO_DEEP
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return str(exc) or type(exc).__name__


def wrap_items(raw_items: list[bytes]) -> bytes:
    """An envelope (``Delivery`` or ``Batch``) holding these raw items."""
    return b'{"items":[' + b",".join(raw_items) + b"]}"


def split_items(body: bytes) -> list[bytes]:
    """The raw JSON of each element of the top-level object's ``items`` array.

    Iterative, so that no nesting depth can make it fail; it checks the structure only as far
    as it needs to find the elements (each element is decoded on its own afterwards).

    Raises:
        BadEnvelope: the body is not a JSON object with an ``items`` array.
    """
    return _scan(body)[0]


def _scan(body: bytes) -> tuple[list[bytes], dict[str, str | bytes]]:
    """``split_items``, and the top-level object's members whose value is a string (as a
    ``str``) or an object (its raw JSON, as ``bytes``)."""
    strings: dict[str, str | bytes] = {}
    object_key: str | None = None
    """The top-level member whose object value is being scanned; its start is ``object_at``."""
    object_at = 0
    depth = 0
    expecting_key = False
    key: str | None = None
    items_at: int | None = None
    """The depth inside the ``items`` array; None while outside it."""
    start = 0
    found: list[bytes] | None = None
    elements: list[bytes] = []
    for token in _TOKEN.finditer(body):
        text = token.group()
        if text[0] == 0x22:  # a string
            if depth == 1:
                try:
                    value = json.loads(text)
                except ValueError:
                    raise BadEnvelope("the body is not JSON") from None
                if expecting_key:
                    key, expecting_key = value, False
                elif key is not None:
                    strings[key] = value
            continue
        char = text[0]
        if char in b"[{":
            if depth == 0 and char != 0x7B:
                raise BadEnvelope("the body is not a JSON object")
            if depth == 1 and key == "items" and char == 0x5B and items_at is None:
                items_at, start, elements = 2, token.end(), []
            if depth == 1 and key is not None and char == 0x7B:
                object_key, object_at = key, token.start()
            depth += 1
            expecting_key = depth == 1
        elif char in b"]}":
            if depth == items_at and char == 0x5D:
                _add_element(elements, body[start : token.start()])
                found, items_at = elements, None
            if depth == 2 and object_key is not None and char == 0x7D:
                strings[object_key] = body[object_at : token.end()]
                object_key = None
            depth -= 1
            if depth < 0:
                raise BadEnvelope("the body is not JSON")
        elif char == 0x2C:  # a comma
            if depth == 1:
                expecting_key, key = True, None
            elif depth == items_at:
                _add_element(elements, body[start : token.start()], is_last=False)
                start = token.end()
    if depth != 0 or found is None:
        raise BadEnvelope("the body is not a JSON object with an `items` array")
    return found, strings


def _add_element(elements: list[bytes], raw: bytes, is_last: bool = True) -> None:
    element = raw.strip()
    if element or not is_last or elements:
        elements.append(element)


def decode_delivery_items(body: bytes) -> Decoded[DeliveryItem]:
    """Decode a ``Delivery``: its items that decode, and the others refused one by one.

    Raises:
        BadEnvelope: not even the items can be told apart (not a JSON object with ``items``).
    """
    try:
        delivery = _DECODE_DELIVERY(body)
        return Decoded(
            delivery.items,
            [],
            next_mid=delivery.next_mid,
            from_mid=delivery.from_mid,
            sync=delivery.sync,
        )
    except DECODE_ERRORS:
        pass  # find which items are bad, below
    raw_items, members = _scan(body)
    decoded = _decode_each(raw_items, _DECODE_DELIVERY_ITEM)
    return dataclasses.replace(
        decoded,
        next_mid=_string(members.get("next_mid")),
        from_mid=_string(members.get("from_mid")),
        sync=_sync(members.get("sync")),
    )


def _string(member: str | bytes | None) -> str:
    return member if isinstance(member, str) else ""


def _sync(member: str | bytes | None) -> SyncWindow | None:
    """A sync window's ``sync`` member, or None (absent, or not a ``SyncWindow``)."""
    if not isinstance(member, bytes):
        return None
    try:
        return _DECODE_SYNC(member)
    except DECODE_ERRORS:
        return None


def decode_batch_items(body: bytes) -> Decoded[Batched]:
    """Decode a ``Batch``: its items that decode, and the others refused one by one.

    Raises:
        BadEnvelope: not even the items can be told apart (not a JSON object with ``items``).
    """
    try:
        return Decoded(_DECODE_BATCH(body).items, [])
    except DECODE_ERRORS:
        pass  # find which items are bad, below
    return _decode_each(split_items(body), _DECODE_BATCHED)


def batch_of(
    body: bytes, key: str, decode: Callable[[bytes], T]
) -> tuple[list[T], list[RefusedItem]]:
    """Decode a ``Batch`` whose items all carry ``key`` (``gateway.acks``: ``gateway.ack``
    items; ``router.replays``: ``router.replay`` items), each with ``decode``.

    Each item is decoded on its own: one that does not decode, carries another key, or that
    ``decode`` refuses (``BadEnvelope``) is refused alone, the others kept.

    Returns:
        The items decoded, and the refused ones (each alone in a ``Batch``).

    Raises:
        BadEnvelope: not even the items can be told apart.
    """
    batched = decode_batch_items(body)
    decoded: list[T] = []
    refused = list(batched.refused)
    for index, item in enumerate(batched.items):
        try:
            if item.key != key:
                raise BadEnvelope(f"$.items[] has a routing key other than {key}")
            decoded.append(decode(bytes(item.body)))
        except BadEnvelope as exc:
            refused.append(
                RefusedItem(
                    wrap_items([encode(item)]), exc.reason, batched.position(index)
                )
            )
    refused.sort(key=lambda item: item.index)
    return decoded, refused


def _decode_each(raw_items: list[bytes], decode: Callable[[bytes], T]) -> Decoded[T]:
    decoded: list[T] = []
    positions: list[int] = []
    refused: list[RefusedItem] = []
    for index, raw in enumerate(raw_items):
        try:
            decoded.append(decode(raw))
        except DECODE_ERRORS as exc:
            refused.append(RefusedItem(wrap_items([raw]), reason_of(exc), index))
        else:
            positions.append(index)
    return Decoded(decoded, refused, positions)

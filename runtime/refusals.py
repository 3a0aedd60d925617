"""What a service says of an item it refused: one log line each, never what the item carried.

The gateway, the router and the offline store decode each item of a batch on its own
(``proto/items.py``); an item that breaks the contract is dead-lettered alone, and logged here
alike by every service, so that one search finds every refusal. Counting it is the service's
(each exports its own error counter).
"""

import structlog

from proto.items import RefusedItem

log = structlog.get_logger()


def log_refused_item(routing_key: str, item: RefusedItem) -> None:
    """Log one refused item of a message: why, and where it was among the message's items."""
    log.warning(
        "envelope_rejected",
        reason=item.reason,
        item=item.index,
        routing_key=routing_key,
    )

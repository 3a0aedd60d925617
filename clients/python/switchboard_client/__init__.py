"""asyncio client for Switchboard chat gateways.

```python
async with Client(["ws://127.0.0.1:8001/ws", "ws://127.0.0.1:8002/ws"], get_token) as client:
    mid = await client.send(to="bob", body={"text": "hi"})
    async for message in client.messages():   # acknowledged once the loop body finished
        print(message.sender, message.body)
```
"""

from switchboard_client.client import (
    Client,
    ClientClosed,
    Message,
    MessageStream,
    RequestFailed,
    State,
    SwitchboardClientError,
    TokenSource,
)
from switchboard_client.history import (
    CallbackSeqStore,
    Conversation,
    FileSeqStore,
    HistoryPage,
    MemorySeqStore,
    Receipt,
    SeqStore,
)

__all__ = [
    "CallbackSeqStore",
    "Client",
    "ClientClosed",
    "Conversation",
    "FileSeqStore",
    "HistoryPage",
    "MemorySeqStore",
    "Message",
    "MessageStream",
    "Receipt",
    "RequestFailed",
    "SeqStore",
    "State",
    "SwitchboardClientError",
    "TokenSource",
]

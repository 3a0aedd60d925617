"""A namespace that switches ``SWITCHBOARD_HISTORY``, every service at once (docs/operations.md,
"History on or off"): what its offline store kept for uids that were away is replayed after the
switch, whichever way it went. Kept with history on, such a row has no frame of its own (its
message is in ``messages``), which a store with history off must still find."""

import pytest

from proto import env
from tests.support.stack import Stack
from tests.support.stored import wait_for_rows_stored

pytestmark = pytest.mark.integration


async def stop_all(stack: Stack) -> None:
    for process in reversed(stack.processes):
        if process.is_running:
            assert await process.stop() == 0, process.name


@pytest.mark.parametrize(("before", "after"), [("on", "off"), ("off", "on")])
async def test_what_was_kept_for_an_offline_uid_is_replayed_after_the_switch(
    stack: Stack, before: str, after: str
) -> None:
    stack.settings[env.HISTORY] = before
    await stack.start(gateways=1)
    alice = await stack.connect(0, uid="alice")
    sent = await alice.send_message("carol", {"text": "kept"})
    await wait_for_rows_stored(stack.stores[0])
    await alice.close()
    await stop_all(stack)

    stack.settings[env.HISTORY] = after
    await stack.start(gateways=1)
    carol = await stack.connect(stack.gateways[-1], uid="carol")
    message = await carol.expect_message(mid=sent["mid"], body={"text": "kept"})
    assert message["from"] == "alice"
    # Kept before the switch: no seq. With history off frames carry none; with it on, the
    # uid's inbox begins after the switch.
    assert "seq" not in message
    await carol.ack(sent["mid"])
    await carol.expect_nothing("message", for_s=0.5)

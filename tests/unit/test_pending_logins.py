"""Logins waiting for ``ready``: the gateway's count (``gateway/logins.py``) and its setting."""

import asyncio

import pytest

from gateway.logins import PendingLogins
from gateway.settings import DEFAULT_MAX_PENDING_LOGINS, Settings
from proto import env
from proto.errors import SettingsError
from tests.support.tokens import TEST_JWT_SECRET

BASE = {env.JWT_SECRET: TEST_JWT_SECRET}


async def test_a_login_counts_until_its_registration_is_done_or_cancelled() -> None:
    loop = asyncio.get_running_loop()
    logins = PendingLogins(limit=2)
    ready: asyncio.Future[None] = loop.create_future()
    left: asyncio.Future[None] = loop.create_future()
    logins.track(ready)
    assert not logins.is_full
    logins.track(left)
    assert logins.is_full
    assert logins.count == 2

    ready.set_result(None)  # the router's ready
    left.cancel()  # the client left first
    await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    assert logins.count == 0
    assert not logins.is_full


def test_the_cap_is_read_and_defaults_to_what_a_gateway_finishes_in_seconds() -> None:
    assert (
        Settings.from_env(BASE).max_pending_logins == DEFAULT_MAX_PENDING_LOGINS == 500
    )
    settings = Settings.from_env({**BASE, env.MAX_PENDING_LOGINS: "20"})
    assert settings.max_pending_logins == 20


@pytest.mark.parametrize("cap", ["0", "-1", "x"])
def test_a_cap_that_admits_no_login_is_an_error(cap: str) -> None:
    with pytest.raises(SettingsError, match=env.MAX_PENDING_LOGINS):
        Settings.from_env({**BASE, env.MAX_PENDING_LOGINS: cap})

"""The gateway's cap on what one connection may leave unacknowledged."""

import pytest

from gateway.settings import Settings
from proto import env
from proto.errors import SettingsError
from tests.support.tokens import TEST_JWT_SECRET

BASE = {env.JWT_SECRET: TEST_JWT_SECRET}


def test_the_cap_defaults_well_under_the_prefetch() -> None:
    settings = Settings.from_env(BASE)
    assert settings.max_unacked_per_connection == 100
    assert settings.max_unacked_per_connection < settings.prefetch


def test_the_cap_is_read() -> None:
    settings = Settings.from_env({**BASE, env.MAX_UNACKED_PER_CONNECTION: "20"})
    assert settings.max_unacked_per_connection == 20


@pytest.mark.parametrize(
    ("cap", "prefetch"), [("1000", ""), ("200", "200"), ("0", ""), ("x", "")]
)
def test_a_cap_that_could_hold_every_delivery_is_an_error(
    cap: str, prefetch: str
) -> None:
    with pytest.raises(SettingsError, match=env.MAX_UNACKED_PER_CONNECTION):
        Settings.from_env(
            {**BASE, env.MAX_UNACKED_PER_CONNECTION: cap, env.PREFETCH: prefetch}
        )

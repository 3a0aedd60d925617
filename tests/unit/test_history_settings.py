"""The settings of history and sync: defaults, what is read, and bounds that name the variable."""

import pytest

from gateway.settings import Settings as GatewaySettings
from offline_store.settings import Settings as StoreSettings
from proto import env
from proto.errors import SettingsError
from tests.support.tokens import TEST_JWT_SECRET

GATEWAY = {env.JWT_SECRET: TEST_JWT_SECRET}


def test_defaults() -> None:
    store = StoreSettings.from_env({})
    assert (store.history_days, store.sync_page, store.sync_grace_s) == (
        30.0,
        1000,
        300.0,
    )
    gateway = GatewaySettings.from_env(GATEWAY)
    assert (gateway.sync_gap_wait_s, gateway.sync_window) == (0.5, 500)


def test_values_are_read() -> None:
    store = StoreSettings.from_env(
        {env.HISTORY_DAYS: "0.5", env.SYNC_PAGE: "10", env.SYNC_GRACE_S: "60"}
    )
    assert (store.history_days, store.sync_page, store.sync_grace_s) == (0.5, 10, 60.0)
    gateway = GatewaySettings.from_env(
        {**GATEWAY, env.SYNC_GAP_WAIT_S: "0.05", env.SYNC_WINDOW: "50"}
    )
    assert (gateway.sync_gap_wait_s, gateway.sync_window) == (0.05, 50)


def test_the_sync_window_fits_in_half_the_outbox() -> None:
    small = GatewaySettings.from_env({**GATEWAY, env.OUTBOX_FRAMES: "100"})
    assert small.sync_window == 50  # the default, lowered to fit
    at_most = {**GATEWAY, env.OUTBOX_FRAMES: "2000", env.SYNC_WINDOW: "1000"}
    assert GatewaySettings.from_env(at_most).sync_window == 1000
    with pytest.raises(SettingsError, match=f"^{env.SYNC_WINDOW} must be at most half"):
        GatewaySettings.from_env({**at_most, env.SYNC_WINDOW: "1001"})


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_gateway_sync_window_errors_name_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{env.SYNC_WINDOW} "):
        GatewaySettings.from_env({**GATEWAY, env.SYNC_WINDOW: value})


@pytest.mark.parametrize("days", ["0", "0.0", "1e-3", "36500"])
def test_history_days_from_0_to_a_century(days: str) -> None:
    assert StoreSettings.from_env({env.HISTORY_DAYS: days}).history_days == float(days)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (env.HISTORY_DAYS, "-1"),
        (env.HISTORY_DAYS, "thirty"),
        (env.HISTORY_DAYS, "nan"),
        (env.HISTORY_DAYS, "inf"),
        (env.HISTORY_DAYS, "36501"),
        (env.SYNC_PAGE, "0"),
        (env.SYNC_PAGE, "10001"),
        (env.SYNC_PAGE, "1.5"),
        (env.SYNC_GRACE_S, "0"),
        (env.SYNC_GRACE_S, "-5"),
        (env.SYNC_GRACE_S, "5m"),
    ],
)
def test_store_errors_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable} "):
        StoreSettings.from_env({variable: value})


@pytest.mark.parametrize("value", ["0", "-0.5", "soon", "inf"])
def test_gateway_gap_wait_errors_name_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{env.SYNC_GAP_WAIT_S} "):
        GatewaySettings.from_env({**GATEWAY, env.SYNC_GAP_WAIT_S: value})


def test_non_negative_reader() -> None:
    what = "a number of days (0: keep everything)"
    assert env.non_negative({}, env.HISTORY_DAYS, 2.0, what) == 2.0
    assert env.non_negative({env.HISTORY_DAYS: ""}, env.HISTORY_DAYS, 2.0, what) == 2.0
    assert env.non_negative({env.HISTORY_DAYS: "0"}, env.HISTORY_DAYS, 2.0, what) == 0
    with pytest.raises(SettingsError, match="must be a number of days"):
        env.non_negative({env.HISTORY_DAYS: "-0.1"}, env.HISTORY_DAYS, 2.0, what)

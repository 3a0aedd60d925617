"""Every fault scenario with a short load: no message with a ``sent`` receipt may be lost.

The full load and the README's table: ``.venv/bin/python -m tests.chaos``. Scenarios that restart
RabbitMQ, Redis or PostgreSQL wait for other test runs on the machine first (tests/chaos/faults.py)
and bring the service back whatever happens.
"""

import pytest

from tests.chaos.checker import markdown_table
from tests.chaos.faults import SharedServiceBusy
from tests.chaos.load import LoadShape
from tests.chaos.scenarios import SCENARIOS, Scenario, run_scenario

pytestmark = [pytest.mark.integration, pytest.mark.exclusive]

SHORT_LOAD = LoadShape(
    users=8, group_size=4, rate_per_user=2.0, warmup_s=2.0, after_s=4.0, quiet_s=2.0
)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.inject.__name__)
async def test_no_sent_message_is_lost(scenario: Scenario) -> None:
    try:
        result = await run_scenario(scenario, SHORT_LOAD)
    except SharedServiceBusy as busy:
        pytest.skip(str(busy))
    table = markdown_table([result])
    assert result.accepted > 0, table
    assert result.lost == 0, table
    assert result.misrouted == 0, table
    assert result.mid_order_violations == 0, table
    assert result.recovery_s is not None, table

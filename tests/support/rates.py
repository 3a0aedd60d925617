"""Settings that lift the rate limits, for tests whose sender is a test, not the subject."""

from proto import env

UNLIMITED_RATE = {
    env.RATE_LIMIT_PER_S: "100000",
    env.RATE_LIMIT_BURST: "100000",
    env.RATE_LIMIT_BYTES_PER_S: "0",
    env.RATE_LIMIT_PER_UID_PER_S: "0",
}
"""No limit of a connection's frames or bytes, nor of a uid's frames across gateways (a rate of
0 turns a limit off): a burst of sends is then never throttled, whatever the host's speed."""

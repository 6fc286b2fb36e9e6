"""The gateway's Redis user covers every key the gateway writes (bus/acl.py cannot import gateway)."""

from bus.acl import SERVICES, key_patterns
from gateway.limits import LOCKOUT_ACCOUNT_PREFIX, LOCKOUT_IP_PREFIX, RATE_LIMIT_PREFIX


def test_the_gateway_may_touch_its_rate_limit_and_lockout_counters() -> None:
    globs = [pattern.removesuffix("*") for pattern in key_patterns(SERVICES["gateway"]) if pattern.endswith("*")]
    for prefix in (RATE_LIMIT_PREFIX, LOCKOUT_ACCOUNT_PREFIX, LOCKOUT_IP_PREFIX):
        assert any(prefix.startswith(glob) for glob in globs), prefix

"""Brute force and abuse at the edge: login lockout and per-IP rate limits, counted in Redis.

Every counter is a Redis key under the bus prefix, changed only by Lua scripts, so each
check-and-count is atomic however many gateway replicas share the Redis:

- ``ratelimit.<route>.<ip>``: requests from one client IP to one auth route in the current
  fixed window (``GATEWAY_RATE_LIMIT`` per ``GATEWAY_RATE_LIMIT_WINDOW`` seconds).
- ``lockout.account.<sha256(email)>`` and ``lockout.ip.<ip>``: failed logins in the window
  that began with the first one (``GATEWAY_LOGIN_FAILURE_WINDOW``). A login attempt
  reserves one failure on both before it is sent to auth, so concurrent attempts cannot
  slip past the limit; a success gives the IP's back and clears the account's, and an
  attempt that got no verdict (auth unavailable) gives both back.

The account key is derived from the email whether or not an account uses it, so a locked
out attempt answers the same for unknown emails, and never reaches auth.
"""

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, TypeVar

from litestar.connection import ASGIConnection
from litestar.exceptions import TooManyRequestsException
from loguru import logger
from redis.exceptions import RedisError

from bus.resp import RespConnection, Script
from gateway.settings import GatewaySettings
from schemas.errors import ErrorCode, ReplyError

RATE_LIMIT_PREFIX = "ratelimit."
LOCKOUT_ACCOUNT_PREFIX = "lockout.account."
LOCKOUT_IP_PREFIX = "lockout.ip."

# KEYS[1]: the counter. ARGV[1]: window seconds. Returns {count, seconds left}.
_HIT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

# KEYS: account, ip counters. ARGV: window, max for the account, max for the ip.
# Returns 0 (reserved one failure on each) or the seconds until the lockout ends.
_RESERVE = """
local locked = 0
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('TTL', key)
    if ttl < 1 then ttl = tonumber(ARGV[1]) end
    if ttl > locked then locked = ttl end
  end
end
if locked > 0 then return locked end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 or redis.call('TTL', key) < 0 then
    redis.call('EXPIRE', key, ARGV[1])
  end
end
return 0
"""

# Give back a reservation on each key (never below zero, never a key without expiry).
# ARGV[1] = "1": delete the first key instead (a success clears the account's count).
_RELEASE = """
for i, key in ipairs(KEYS) do
  if i == 1 and ARGV[1] == '1' then
    redis.call('DEL', key)
  elseif tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
return 0
"""

T = TypeVar("T")

LOCKED_OUT = "Too many failed logins; try again later."
RATE_LIMITED = "Too many requests; try again later."


def too_many(detail: str, retry_after: int) -> TooManyRequestsException:
    """429 with Retry-After (seconds, at least 1)."""
    return TooManyRequestsException(detail=detail, headers={"Retry-After": str(max(1, int(retry_after)))})


def client_ip(connection: ASGIConnection[Any, Any, Any, Any], settings: GatewaySettings) -> str | None:
    """The client's IP address: the direct peer, unless that is a trusted proxy.

    Behind trusted proxies (``GATEWAY_TRUSTED_PROXIES``) the client is the right-most
    ``X-Forwarded-For`` address that is not itself a trusted proxy: every address to its
    right was appended by a proxy we trust, anything to its left the client could forge.
    """
    peer = connection.client.host if connection.client else None
    if peer is None or not settings.trusted_proxies or not _trusted(peer, settings):
        return peer
    forwarded = ",".join(connection.headers.getall("x-forwarded-for", []))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer  # a malformed chain: believe only what we saw
        if not _trusted(str(address), settings):
            return str(address)
    return hops[0] if hops and _address(hops[0]) is not None else peer


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


def _trusted(host: str, settings: GatewaySettings) -> bool:
    address = _address(host)
    return address is not None and any(address in network for network in settings.trusted_proxies)


def _account_key(email: str) -> str:
    # Hashed: the counter's name need not keep the address in Redis.
    return LOCKOUT_ACCOUNT_PREFIX + hashlib.sha256(email.lower().encode()).hexdigest()


class Limits:
    """Rate limits and login lockout over one Redis."""

    def __init__(self, connection: RespConnection, settings: GatewaySettings) -> None:
        """Count on ``connection``: the gateway's hot-path one (bus/resp.py), as a login does twice."""
        self._connection = connection
        self._settings = settings
        self._name = settings.bus.name
        self._hit = Script(_HIT)
        self._reserve = Script(_RESERVE)
        self._release = Script(_RELEASE)
        self._releasing: set[asyncio.Task[None]] = set()

    async def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        return await self._settled(script.queued(self._connection, [self._name(key) for key in keys], args))

    async def _settled(self, result: Awaitable[Any]) -> Any:
        """``result``, a script's; an unreachable Redis as 503 (a ReplyError)."""
        try:
            return await result
        except (RedisError, OSError) as exc:
            # Without the counters the limits cannot be enforced: refuse, never let through.
            logger.warning("cannot reach the rate-limit counters: {}: {}", type(exc).__name__, exc)
            raise ReplyError("The service cannot take this request right now.", code=ErrorCode.UNAVAILABLE) from None

    async def hit(self, route: str, ip: str | None) -> None:
        """Count a request to ``route`` from ``ip``; 429 when over the route's limit."""
        limit = self._settings.route_rate_limit(route)
        if limit == 0:
            return
        key = f"{RATE_LIMIT_PREFIX}{route}.{ip or 'unknown'}"
        count, ttl = await self._run(self._hit, [key], [self._settings.rate_limit_window])
        if int(count) > limit:
            raise too_many(RATE_LIMITED, int(ttl))

    def _login_keys(self, email: str, ip: str | None) -> list[str]:
        return [_account_key(email), f"{LOCKOUT_IP_PREFIX}{ip or 'unknown'}"]

    async def login(self, email: str, ip: str | None, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, a login with ``email`` from ``ip``, under the lockout of the account and the IP.

        Before it, one failure is reserved on both counters, so concurrent attempts cannot
        slip past the limit; a locked-out account or IP gets 429 and ``attempt`` is never
        called (it costs auth nothing: no argon2 work). After it: a wrong password
        (``INVALID_CREDENTIALS``) stays counted; a success clears the account's count and
        gives back the IP's (``_succeeded``); any other outcome, auth unavailable say, was
        no verdict and gives both back.
        """
        settings = self._settings
        keys = self._login_keys(email, ip)
        args = [settings.login_failure_window, settings.login_max_failures, settings.login_max_failures_per_ip]
        locked = int(await self._run(self._reserve, keys, args))
        if locked:
            raise too_many(LOCKED_OUT, locked)
        try:
            result = await attempt()
        except Exception as exc:
            if not (isinstance(exc, ReplyError) and exc.reply.code == ErrorCode.INVALID_CREDENTIALS):
                await self._run(self._release, keys, ["0"])
            raise
        self._succeeded(keys)
        return result

    def _succeeded(self, keys: list[str]) -> None:
        """Clear the account's failures and give back the IP's reservation, in the background.

        The login has succeeded and its tokens are minted: they go to the client at once,
        without waiting for Redis, and whether or not it can be reached (a failure is
        logged; the reservation then runs out with its window). The release is queued on
        the connection at once, ahead of anything the client sends next: a following
        attempt is counted after it. ``stop`` waits for the releases still under way.
        """
        queued = self._release.queued(self._connection, [self._name(key) for key in keys], ["1"])
        release = asyncio.get_running_loop().create_task(self._released(queued))
        self._releasing.add(release)
        release.add_done_callback(self._releasing.discard)

    async def _released(self, queued: Awaitable[Any]) -> None:
        with contextlib.suppress(ReplyError):  # logged by _settled
            await self._settled(queued)

    async def stop(self) -> None:
        """Wait for the releases of logins that have succeeded (see ``_succeeded``)."""
        if self._releasing:
            await asyncio.wait(set(self._releasing))

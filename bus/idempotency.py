"""Handling an event once, for subscribers without a database: an inbox of Redis keys.

A subscriber with a database records handled event ids in a table, in the transaction
of the event's effect (``db.inbox``). One without a database (a mailer, a webhook
caller) cannot make its effect and that record atomic; :class:`RedisInbox` comes as
close as Redis allows:

- ``SET handled.<group>.<event id> pending:<token> NX PX <lease>`` before the work: only
  one consumer at a time works on an event;
- ``SET ... done PX <ttl>`` after it succeeded: a redelivered event is skipped;
- the key is deleted if the work failed, so the next delivery tries again.

A process that dies between finishing the work and marking it done does the work again
on redelivery (at least once); a lease that expires mid-work lets a second consumer in.
Make the lease longer than the work takes.
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from bus.settings import BusSettings

HANDLED_PREFIX = "handled."
"""Inbox keys: ``handled.<group>.<event id>``, under the deployment's prefix."""

_DONE = "done"

# Delete the lease only if it is still ours: after it expired another consumer may hold it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _is_done(value: bytes | str | None) -> bool:
    # Whether the client decodes responses or not.
    return value in (_DONE, _DONE.encode())


class EventInProgress(Exception):
    """Another consumer holds this event's lease: try again later (leave it pending)."""


class RedisInbox:
    """Which events one consumer group has handled, as keys that expire after ``ttl``."""

    def __init__(
        self, redis: Redis, settings: BusSettings, group: str, *, ttl: float = 7 * 86_400, lease: float = 60.0
    ) -> None:
        """Keys live ``ttl`` seconds once done; a consumer holds an event for ``lease`` seconds at most."""
        self._redis = redis
        self._prefix = settings.name(f"{HANDLED_PREFIX}{group}.")
        self._ttl_ms = int(ttl * 1000)
        self._lease_ms = int(lease * 1000)
        self._release = redis.register_script(_RELEASE)

    def key(self, event_id: str) -> str:
        """The Redis key that records ``event_id``."""
        return f"{self._prefix}{event_id}"

    async def handled(self, event_id: str) -> bool:
        """Whether ``event_id`` was handled (and its record has not expired)."""
        return _is_done(await self._redis.get(self.key(event_id)))

    @asynccontextmanager
    async def once(self, event_id: str) -> AsyncIterator[bool]:
        """Yield True if this consumer should handle ``event_id`` now, False if it was handled.

        The work inside the block is marked done when the block exits normally and
        forgotten when it raises. Raises :class:`EventInProgress` if another consumer
        holds the event right now.
        """
        key = self.key(event_id)
        token = f"pending:{uuid.uuid4().hex}".encode()
        if not await self._redis.set(key, token, nx=True, px=self._lease_ms):
            if _is_done(await self._redis.get(key)):
                yield False
                return
            raise EventInProgress(f"event {event_id} is being handled by another consumer")
        try:
            yield True
        except BaseException:
            await self._release(keys=[key], args=[token])
            raise
        await self._redis.set(key, _DONE, px=self._ttl_ms)

    async def forget(self) -> int:
        """Delete every record of this group: its events will be handled again; how many."""
        deleted = 0
        async for key in self._redis.scan_iter(match=f"{self._prefix}*", count=1000):
            deleted += await self._redis.delete(key)
        return deleted

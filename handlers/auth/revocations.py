"""The revoked-session keys in Redis that the gateway checks on every authenticated request.

Auth writes ``revoked.<session id>`` when it revokes a session, for as long as an access
token of that session could still pass the gateway's check; then the key expires on its
own, so the set holds only sessions whose tokens would otherwise still work.
"""

from collections.abc import Sequence

from redis.asyncio import Redis

from bus.settings import BusSettings
from handlers.auth.service import Revocation
from schemas.streams import revoked_session


class RevocationList:
    """Writes revocations to Redis: one pipeline per batch, each key with its own expiry."""

    def __init__(self, redis: Redis, settings: BusSettings) -> None:
        self._redis = redis
        self._settings = settings

    async def publish(self, revocations: Sequence[Revocation]) -> None:
        """Mark each session revoked for its remaining seconds (the value says why)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for revocation in revocations:
                if revocation.seconds > 0:
                    key = self._settings.name(revoked_session(revocation.session_id))
                    pipe.set(key, revocation.reason or "revoked", ex=revocation.seconds)
            await pipe.execute()

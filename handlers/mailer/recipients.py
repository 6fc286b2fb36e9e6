"""Who gets the welcome mail: name and address kept from RegistrationStarted, in Redis.

RegistrationCompleted carries only ids. RegistrationStarted, earlier on the same stream
(events.auth, read in order), carries the address and name, so the mailer keeps them for
a while instead of asking another service or widening a contract.
"""

import json

from redis.asyncio import Redis

from bus.settings import BusSettings
from handlers.mailer.service import Recipient

RECIPIENT_PREFIX = "mailer.recipient."


class RedisRecipients:
    """Recipients by user id, as keys ``mailer.recipient.<user id>`` that expire."""

    def __init__(self, redis: Redis, settings: BusSettings, *, ttl: float) -> None:
        self._redis = redis
        self._prefix = settings.name(RECIPIENT_PREFIX)
        self._ttl_ms = int(ttl * 1000)

    async def remember(self, user_id: str, recipient: Recipient) -> None:
        """Keep ``recipient`` for ``user_id`` until the TTL passes."""
        value = json.dumps({"email": recipient.email, "display_name": recipient.display_name})
        await self._redis.set(f"{self._prefix}{user_id}", value, px=self._ttl_ms)

    async def get(self, user_id: str) -> Recipient | None:
        """The recipient kept for ``user_id``, if any."""
        raw = await self._redis.get(f"{self._prefix}{user_id}")
        if raw is None:
            return None
        data = json.loads(raw)
        return Recipient(email=data["email"], display_name=data["display_name"])

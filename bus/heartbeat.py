"""Heartbeats: each handler instance says it is alive; the gateway's /ready reads them."""

import asyncio
import contextlib
import json
import os
import socket
import time

from loguru import logger
from redis.asyncio import Redis

from bus.settings import BusSettings
from schemas.streams import HEARTBEAT_PREFIX


def heartbeat_key(settings: BusSettings, service: str, instance: str) -> str:
    """The Redis key of one instance's heartbeat."""
    return settings.name(f"{HEARTBEAT_PREFIX}{service}.{instance}")


class Heartbeat:
    """Keeps a key with a TTL alive while the instance runs; deletes it on stop."""

    def __init__(self, redis: Redis, settings: BusSettings, service: str, instance: str) -> None:
        self._redis = redis
        self._key = heartbeat_key(settings, service, instance)
        self._interval = settings.heartbeat_interval
        self._value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Beat once now, then on every interval."""
        self._stopping.clear()
        await self._beat()
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        """Stop beating (after the beat in progress, if any) and say so."""
        # A flag, not task.cancel(): redis-py writes through asyncio.wait_for when the
        # client has a socket timeout, and on Python 3.11 wait_for loses a cancel that
        # races the write's completion; the task would then beat on and stop() wait for ever.
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._redis.delete(self._key)

    async def _beat(self) -> None:
        await self._redis.set(self._key, self._value, px=int(self._interval * 3000))

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                await self._beat()
            except Exception as exc:  # Redis away: keep trying, /ready will show it
                logger.warning("heartbeat failed: {!r}", exc)


async def live_instances(redis: Redis, settings: BusSettings, service: str) -> list[str]:
    """The instances of ``service`` whose heartbeat has not expired."""
    prefix = heartbeat_key(settings, service, "")
    found = [
        key.decode() if isinstance(key, bytes) else key async for key in redis.scan_iter(match=f"{prefix}*", count=500)
    ]
    return sorted(key.removeprefix(prefix) for key in found)

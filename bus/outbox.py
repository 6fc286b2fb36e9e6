"""The outbox relay: publishes events that were committed with the state they describe.

A service writes each event to its outbox table in the same transaction as the change
(see db.outbox). The relay reads unpublished rows in order, appends them to their
streams in one pipeline, and marks them published. A crash between the two publishes
a row again on restart (so does a mark lost in a PostgreSQL crash: db.outbox commits it
without waiting for the disk): delivery is at-least-once, and consumers keep an inbox.
"""

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from loguru import logger

from bus import wire
from bus.resp import RespConnection
from bus.settings import BusSettings
from bus.signing import Signer

CONTENDED_RETRY = 0.02
"""Seconds before a relay that found the outbox held by another one looks again."""

OutboxEntry = tuple[str, Mapping[str, Any], bytes]
"""One event ready to publish: its stream (without prefix), envelope headers, JSON payload."""


class OutboxStore(Protocol):
    """Where a service keeps its outbox; implemented over its database in ``db``."""

    def claim(self, limit: int) -> AbstractAsyncContextManager[Sequence[OutboxEntry] | None]:
        """Yield up to ``limit`` unpublished entries, oldest first; mark them published on exit.

        None: another relay is publishing this outbox now.
        """
        ...

    async def close(self) -> None:
        """Let go of what the claims hold open (a connection); a later claim opens it again."""
        ...


class OutboxRelay:
    """Publishes one store's outbox: at once when woken, and on an interval as a safety net."""

    def __init__(
        self,
        store: OutboxStore,
        settings: BusSettings,
        *,
        signer: Signer,
        batch_size: int = 100,
        interval: float = 1.0,
    ) -> None:
        """Publish ``store``'s events, each signed by ``signer`` (the producing service's key).

        The XADDs of a batch leave in one write on a connection of the relay's own
        (``bus.resp``): through a redis-py pipeline they cost several times the CPU.
        """
        self._signer = signer
        self._store = store
        self._redis = RespConnection(settings.redis_url, client_name=f"{signer.service}:outbox:{os.getpid()}")
        self._settings = settings
        self._batch_size = batch_size
        self._interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        """Publish soon: a transaction with events has just committed."""
        self._wake.set()

    async def start(self) -> None:
        """Start relaying in the background."""
        self._task = asyncio.create_task(self._run(), name="outbox relay")

    async def stop(self) -> None:
        """Publish what is committed, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            with contextlib.suppress(Exception):
                await self.drain()
        finally:
            try:
                await self._redis.stop()
            finally:
                await self._store.close()

    async def drain(self) -> int:
        """Publish every committed entry now; how many were published."""
        published = 0
        while True:
            async with self._store.claim(self._batch_size) as entries:
                if entries is None:
                    # Another instance's relay holds the outbox: it may have missed what
                    # was committed here (its drain can end before that). Look again soon.
                    asyncio.get_running_loop().call_later(CONTENDED_RETRY, self._wake.set)
                    return published
                if entries:
                    signer = self._signer
                    appended = await self._redis.execute(
                        *(
                            (
                                "XADD",
                                self._settings.name(stream),
                                "*",
                                wire.DATA_FIELD,
                                wire.encode(headers, payload, signer=signer),
                            )
                            for stream, headers, payload in entries
                        )
                    )
                    failed = next((result for result in appended if isinstance(result, Exception)), None)
                    if failed is not None:
                        raise failed  # not marked published: the whole batch is tried again
                    published += len(entries)
            # A batch short of the limit was all there was: no second transaction to find
            # nothing (it was a third of the relay's work per login). What commits from
            # now on calls wake(), and the relay drains again.
            if len(entries) < self._batch_size:
                return published

    async def _run(self) -> None:
        # A stop flag rather than cancellation: a cancel racing the wake-up can be lost
        # inside asyncio.wait_for on Python 3.11, leaving stop() waiting for ever.
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.drain()
            except Exception as exc:  # keep relaying: the rows stay and are retried
                logger.warning("outbox relay failed, will retry: {!r}", exc)
                await asyncio.sleep(self._interval)

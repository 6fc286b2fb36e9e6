"""A handler service's moving parts, started in order and stopped gracefully."""

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from faststream.redis import RedisBroker
from loguru import logger
from redis.asyncio import Redis

from bus.broker import Consumer
from bus.heartbeat import Heartbeat
from bus.metrics import MetricsServer
from bus.process import freeze_heap


class Component(Protocol):
    """Anything with an async start and stop (relays, heartbeats, clients)."""

    async def start(self) -> None:
        """Begin work."""
        ...

    async def stop(self) -> None:
        """Finish work and release resources."""
        ...


class ServiceRuntime:
    """Groups, broker, background components; stop finishes in-flight messages first."""

    def __init__(
        self,
        *,
        service: str,
        broker: RedisBroker,
        redis: Redis,
        consumer: Consumer,
        components: Sequence[Component] = (),
        before_start: Sequence[Callable[[], Awaitable[None]]] = (),
        after_stop: Sequence[Callable[[], Awaitable[None]]] = (),
        metrics: MetricsServer | None = None,
    ) -> None:
        self.service = service
        self.broker = broker
        self.redis = redis
        self.consumer = consumer
        self.metrics = metrics
        # The metrics endpoint first up and last down: it shows the start and the stop too.
        self._components = [*([metrics] if metrics is not None else []), *components]
        self._heartbeat = Heartbeat(redis, consumer.settings, service, consumer.instance)
        self._before_start = before_start
        self._after_stop = after_stop
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Prepare storage, create groups, start consuming, then announce the instance."""
        for hook in self._before_start:
            await hook()
        await self.consumer.ensure_groups(self.redis)
        await self.broker.start()
        for component in self._components:
            await component.start()
        await self._heartbeat.start()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.service} subscriber supervisor")
        logger.info("{} started as {}", self.service, self.consumer.instance)

    async def _supervise(self) -> None:
        """Restart subscribers that stopped on their own, recreating lost consumer groups.

        FastStream stops a subscriber for good when its group is gone (Redis lost its
        data: a FLUSHALL, a restart without persistence); the service would live on and
        read nothing. Here the groups are made again (at the stream's start) and reading
        resumes, loudly logged.
        """
        interval = self.consumer.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            stopped = [subscriber for subscriber in self.broker.subscribers if not subscriber.running]
            if not stopped:
                continue
            logger.critical(
                "{} of {}'s subscribers stopped reading (consumer groups lost: did Redis lose its data?); "
                "recreating the groups and resuming",
                len(stopped),
                self.service,
            )
            try:
                await self.consumer.ensure_groups(self.redis)
                for subscriber in stopped:
                    await subscriber.start()
            except Exception as exc:  # Redis still away: try again next round
                logger.error("could not resume the subscribers yet: {!r}", exc)

    async def stop(self) -> None:
        """Stop announcing, stop reading and finish in-flight messages, flush, release."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._heartbeat.stop()
        logger.info("{} stopping: no new messages, finishing the ones in hand", self.service)
        # FastStream bounds each subscriber's wait by the grace; bound the whole stop too, so a
        # stuck handler cannot keep the process alive: what it held stays pending for the others.
        grace = self.consumer.settings.shutdown_grace
        try:
            async with asyncio.timeout(2 * grace):
                await self.broker.stop()
        except TimeoutError:
            logger.error("in-flight messages not finished after {:g} s; leaving them to other instances", 2 * grace)
        try:
            released = await self.consumer.release(self.redis)
        except Exception as exc:  # Redis away: the claimers find them later all the same
            logger.warning("could not release pending entries: {!r}", exc)
        else:
            if released:
                logger.info("released {} unhandled entries to the other instances", released)
        for component in reversed(self._components):
            await component.stop()
        for hook in self._after_stop:
            await hook()
        await self.redis.aclose()
        logger.info("{} stopped", self.service)


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def received() -> None:
        logger.info("{} received: stopping gracefully", sig.name)
        stop.set()

    return received


async def serve(runtime: ServiceRuntime) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, _stopper(stop, sig))
    await runtime.start()
    freeze_heap()  # the process is what it will be from now on
    try:
        await stop.wait()
    finally:
        await runtime.stop()

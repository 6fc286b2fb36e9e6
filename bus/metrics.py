"""Prometheus metrics of a handler service, and the small HTTP endpoint that serves them.

The bus middleware counts every message it sees (outcome, redelivery, duration) through
:class:`HandlerMetrics`; the stream gauges (pending and lag per group, dead letters, outbox
backlog) are read from Redis and the database when Prometheus scrapes, so they are never
stale and cost nothing between scrapes. Handlers have no web server: :class:`MetricsServer`
answers ``GET /metrics`` on the service's own event loop (``<SERVICE>_METRICS_PORT``).
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Protocol

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from redis.asyncio import Redis

from bus.settings import BusSettings

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The Prometheus text format (0.0.4) every Prometheus version reads."""

SAMPLE_TIMEOUT = 2.0
"""Seconds a scrape waits for Redis and the database before it answers with what it has."""


def quiet_created_series() -> None:
    """Leave out the ``*_created`` timestamp of every counter: noise in the text format.

    prometheus_client's switch is process-wide; each metrics object sets it as it is made.
    """
    disable_created_metrics()  # type: ignore[no-untyped-call]


class StreamGroups(Protocol):
    """What a service reads (its Consumer): the gauges are sampled for these."""

    @property
    def groups(self) -> Sequence[tuple[str, str]]:
        """(stream, group) pairs this service reads through."""
        ...

    @property
    def event_streams(self) -> Collection[str]:
        """Streams whose failed entries end up in a dead-letter stream."""
        ...

    def dead_letter_stream(self, stream: str) -> str:
        """Where the entries of ``stream`` that keep failing go."""
        ...


class HandlerMetrics:
    """A handler service's series, on a registry of its own (several services share a test process)."""

    def __init__(self, settings: BusSettings, registry: CollectorRegistry | None = None) -> None:
        quiet_created_series()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._prefix = settings.prefix
        r = self.registry
        self.messages = Counter(
            "busway_messages",
            "Messages handled, by outcome: ok; a typed error code (not_found, ...); invalid; expired (its "
            "deadline had passed); dead-lettered; error (the handler raised: an event stays pending for a retry); "
            "skipped (an event of a type the subscriber does not handle, acked unread).",
            ["stream", "outcome"],
            registry=r,
        )
        self.redelivered = Counter(
            "busway_messages_redelivered",
            "Messages handed out again after a failed or abandoned delivery (claimed after BUS_CLAIM_IDLE_MS).",
            ["stream"],
            registry=r,
        )
        self.duration = Histogram(
            "busway_message_duration_seconds", "Time to handle one message.", ["stream"], registry=r
        )
        self.pending = Gauge(
            "busway_stream_pending",
            "Entries delivered to the group and not acknowledged.",
            ["stream", "group"],
            registry=r,
        )
        self.lag = Gauge(
            "busway_stream_lag", "Entries in the stream the group has not read yet.", ["stream", "group"], registry=r
        )
        self.dead_letters = Gauge(
            "busway_dead_letters", "Entries in a stream's dead-letter stream (dlq.<stream>).", ["stream"], registry=r
        )
        self.outbox_backlog = Gauge(
            "busway_outbox_backlog", "Committed events the outbox relay has not published yet.", registry=r
        )
        # Keyed by the stream's full name: the hot path does two dict lookups, no label work.
        self._handled: dict[str, dict[str, Any]] = {}
        self._per_stream: dict[str, tuple[Any, Any]] = {}

    def label(self, stream: str) -> str:
        """A stream's label: its name without the deployment's prefix."""
        return stream.removeprefix(self._prefix)

    def _count(self, stream: str, outcome: str) -> None:
        """One more ``busway_messages_total`` of ``stream`` with ``outcome``."""
        outcomes = self._handled.get(stream)
        if outcomes is None:
            outcomes = self._handled[stream] = {}
        counter = outcomes.get(outcome)
        if counter is None:
            counter = outcomes[outcome] = self.messages.labels(self.label(stream), outcome)
        counter.inc()

    def handled(self, stream: str, outcome: str, seconds: float, *, redelivered: bool) -> None:
        """Count one handled message (called by the bus middleware for every message)."""
        self._count(stream, outcome)
        children = self._per_stream.get(stream)
        if children is None:
            name = self.label(stream)
            children = self._per_stream[stream] = (self.duration.labels(name), self.redelivered.labels(name))
        children[0].observe(seconds)
        if redelivered:
            children[1].inc()

    def skipped(self, stream: str) -> None:
        """Count one event acked unread: its type is not one the subscriber handles."""
        self._count(stream, "skipped")

    async def sample(
        self, redis: Redis, source: StreamGroups, backlog: Callable[[], Awaitable[int]] | None = None
    ) -> None:
        """Read the gauges: pending and lag of this service's groups, dead letters, outbox backlog."""
        groups = list(dict.fromkeys(source.groups))
        streams = list(dict.fromkeys(stream for stream, _ in groups))
        dead = [(stream, source.dead_letter_stream(stream)) for stream in sorted(source.event_streams)]
        async with redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xinfo_groups(stream)
            for _, dlq in dead:
                pipe.xlen(dlq)
            results = await pipe.execute(raise_on_error=False)
        infos = dict(zip(streams, results[: len(streams)], strict=True))
        for stream, group in groups:
            info = infos.get(stream)
            found = next((g for g in info if _text(g.get("name")) == group), None) if isinstance(info, list) else None
            if found is None:
                continue
            self.pending.labels(self.label(stream), group).set(found.get("pending") or 0)
            if found.get("lag") is not None:  # Redis 7+, and only when it can tell
                self.lag.labels(self.label(stream), group).set(found["lag"])
        for (stream, _), length in zip(dead, results[len(streams) :], strict=True):
            if isinstance(length, int):
                self.dead_letters.labels(self.label(stream)).set(length)
        if backlog is not None:
            self.outbox_backlog.set(await backlog())

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MetricsServer:
    """``GET /metrics`` over plain HTTP on the service's event loop: no thread, no framework.

    Each scrape samples the gauges first (bounded by SAMPLE_TIMEOUT), then answers with
    every series. ``port=None`` serves nothing; ``port=0`` takes a free port (see ``port``).
    """

    def __init__(
        self,
        metrics: HandlerMetrics,
        redis: Redis,
        source: StreamGroups,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        backlog: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.metrics = metrics
        self._redis = redis
        self._source = source
        self._backlog = backlog
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int | None:
        """The port it listens on once started; None when off."""
        if self._server is None:
            return None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen, unless no port is configured."""
        if self._port is None:
            return
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        logger.info("metrics on http://{}:{}/metrics", self._host, self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def render(self) -> bytes:
        """Sample the gauges, then every series as Prometheus text."""
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT):
                await self.metrics.sample(self._redis, self._source, self._backlog)
        except Exception as exc:  # Redis or the database away: serve the counters all the same
            logger.warning("could not sample stream metrics: {!r}", exc)
        return self.metrics.render()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                method, path = await _read_request(reader)
                if method not in {"GET", "HEAD"}:
                    status, body, kind = "405 Method Not Allowed", b"Only GET.\n", "text/plain; charset=utf-8"
                elif path.split("?", 1)[0] not in {"/metrics", "/"}:
                    status, body, kind = "404 Not Found", b"Try /metrics.\n", "text/plain; charset=utf-8"
                else:
                    status, body, kind = "200 OK", await self.render(), CONTENT_TYPE
                head = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                writer.write(f"{head}Connection: close\r\n\r\n".encode() + (b"" if method == "HEAD" else body))
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError) as exc:
            logger.debug("metrics request dropped: {!r}", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader, max_headers: int = 100) -> tuple[str, str]:
    """The method and target of an HTTP/1.x request; its headers are read and dropped."""
    parts = (await reader.readline()).decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request")
    for _ in range(max_headers):
        if (await reader.readline()) in {b"\r\n", b"\n", b""}:
            return parts[0], parts[1]
    raise ValueError("too many headers")

"""Redis commands issued in the same event-loop turn, sent together in one pipeline.

Under load many requests reach Redis at once; one pipeline for all of them costs one
write and one read instead of one of each per request (redis-py has no autopipelining).
"""

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

Queue = Callable[[Pipeline], None]
"""Puts one caller's commands on the pipeline."""


class Autopipeline:
    """Coalesces what callers queue during one loop turn into a single pipeline."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._batch: list[tuple[Queue, asyncio.Future[list[Any]]]] = []

    async def execute(self, queue: Queue) -> list[Any]:
        """Run ``queue``'s commands with the others of this turn; their results, in order.

        A command's error is returned in its place; a connection error raises for all.
        """
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append((queue, future))
        return await future

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.ensure_future(self._send(batch))
        task.add_done_callback(lambda _: None)

    async def _send(self, batch: list[tuple[Queue, "asyncio.Future[list[Any]]"]]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                spans = []
                for queue, _ in batch:
                    start = len(pipe.command_stack)
                    queue(pipe)
                    spans.append((start, len(pipe.command_stack)))
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: every caller hears of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (start, end), (_, future) in zip(spans, batch, strict=True):
            if not future.done():
                future.set_result(results[start:end])

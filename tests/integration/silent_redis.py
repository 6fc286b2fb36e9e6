"""A loopback server standing in for a Redis that stopped answering (fault tests)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass
class SilentServer:
    """A loopback server that accepts connections and never answers."""

    port: int
    accepted: list[asyncio.StreamWriter]


@asynccontextmanager
async def silent_server() -> AsyncIterator[SilentServer]:
    """A server that stands in for a Redis that stopped answering."""
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    try:
        yield SilentServer(server.sockets[0].getsockname()[1], accepted)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()

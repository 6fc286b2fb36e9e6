"""The bus round trip alone: ``BusClient.request`` to a real users handler, no HTTP.

``uv run python -m bench.roundtrip [--requests N] [--concurrency C ...]`` starts a users
handler process on a fresh PostgreSQL database, sends ``users.ping`` commands from this
process and prints requests per second with the CPU time each side spent per request:
this process's (the requester's, as the gateway's bus client) and the handler's. Without
HTTP and a load generator on the same CPUs it is steadier than ``just bench``: a change
to bus/ shows here first.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from loguru import logger

from bench.run import PY, ROOT, cpu_seconds, own_prefix
from bus.rpc import BusClient
from bus.settings import BusSettings
from db.migrations import upgrade_async
from db.provision import fresh_databases
from handlers.users.main import MIGRATIONS as USERS_MIGRATIONS
from schemas import streams
from schemas.commands import Ping
from schemas.errors import ReplyError
from schemas.replies import Pong


async def measure(client: BusClient, handler_pid: int, requests: int, concurrency: int) -> str:
    """Send ``requests`` pings, ``concurrency`` at a time; one line of figures."""
    per_worker = max(1, requests // concurrency)

    async def worker(count: int) -> None:
        for _ in range(count):
            await client.request(streams.USERS_PING, Ping(), Pong)

    await asyncio.gather(*(worker(max(1, per_worker // 10)) for _ in range(concurrency)))  # warm-up
    own, handler, started = time.process_time(), cpu_seconds(handler_pid), time.perf_counter()
    await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    sent = per_worker * concurrency
    own_us = (time.process_time() - own) / sent * 1e6
    handler_us = (cpu_seconds(handler_pid) - handler) / sent * 1e6
    return (
        f"C={concurrency:<3} {sent / elapsed:8.0f} req/s   CPU per request: "
        f"requester {own_us:4.0f} µs, handler {handler_us:4.0f} µs"
    )


async def main(args: argparse.Namespace) -> None:
    suffix = uuid.uuid4().hex[:6]
    admin_url = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    settings = BusSettings(environment="test", prefix=f"bench-{suffix}:")
    databases = fresh_databases(admin_url, [f"busway_bench_users_{suffix}"])
    async with databases as (users_url,), own_prefix(settings.prefix):
        await upgrade_async(USERS_MIGRATIONS, users_url)
        env = {
            **os.environ,
            "BUSWAY_ENV": "test",
            "BUS_PREFIX": settings.prefix,
            "LOG_LEVEL": "WARNING",
            "USERS_DATABASE_URL": users_url,
            "USERS_MIGRATE_ON_START": "false",
        }
        log = Path("/tmp/busway-bench-logs")
        log.mkdir(exist_ok=True)
        with (log / "roundtrip-users.log").open("w") as out:
            handler = subprocess.Popen([PY, "-m", "handlers.users", "serve"], cwd=ROOT, env=env, stdout=out, stderr=out)
        client = BusClient(settings, f"roundtrip-{suffix}", producer="gateway")
        try:
            await client.start()
            for _ in range(100):  # until the handler answers
                try:
                    await client.request(streams.USERS_PING, Ping(), Pong, timeout=1)
                    break
                except ReplyError:
                    if handler.poll() is not None:
                        raise SystemExit(f"roundtrip: the users handler exited; see {log}") from None
            for concurrency in args.concurrency:
                print(await measure(client, handler.pid, args.requests, concurrency), flush=True)
        finally:
            await client.stop()
            handler.terminate()
            handler.wait(timeout=20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    arguments = parser.parse_args()
    if arguments.requests < 1 or min(arguments.concurrency) < 1:
        parser.error("--requests and --concurrency must be positive")
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    asyncio.run(main(arguments))

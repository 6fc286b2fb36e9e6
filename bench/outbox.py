"""The outbox relay's claim alone: its CPU per relay pass on PostgreSQL, asyncpg against the ORM.

``uv run just bench-outbox [--passes N]`` makes a fresh users database, then, in turns,
commits one event and claims it (what the relay does after each login), through the
store's asyncpg statements and through the ORM (the path SQLite takes), and prints the
CPU time of each claim. Both run in this process, in alternating rounds, so the
machine's noise falls on both alike. The ORM path takes no advisory lock (SQLite needs
none), one statement fewer than the ORM claim PostgreSQL ran before: the saving measured
here is, if anything, smaller than the real one.
"""

import argparse
import os
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import uvloop

from bench.run import service_cpu
from db.engine import create_engine, session_factory
from db.migrations import upgrade_async
from db.outbox import SqlOutboxStore, add_event
from db.provision import fresh_databases
from handlers.users.main import MIGRATIONS as USERS_MIGRATIONS
from handlers.users.models import Outbox
from schemas.envelope import Trace
from schemas.events import UserUpdated

Claim = Callable[[int], AbstractAsyncContextManager[Any]]


async def rounds(store: SqlOutboxStore, commit: Callable[[], Any], passes: int) -> None:
    claims: dict[str, Claim] = {
        "asyncpg": store.claim,
        "ORM": store._claim_orm,  # the baseline: the claim through the ORM, without the lock
    }
    for round_number in range(1, 4):
        figures = []
        for name, claim in claims.items():
            cpu = 0.0
            server_started = service_cpu()["postgres"]
            for _ in range(passes):
                await commit()
                started = time.process_time()
                async with claim(100) as entries:
                    if not entries or len(entries) != 1:
                        raise SystemExit(f"bench: the {name} claim found {entries!r}, not the one event")
                cpu += time.process_time() - started
            # PostgreSQL's share over the whole series: the commit's part is the same for both paths.
            server = (service_cpu()["postgres"] - server_started) / passes * 1e6
            figures.append(f"{name} {cpu / passes * 1e6:5.0f} µs (PostgreSQL, commit and claim: {server:4.0f} µs)")
        print(f"round {round_number}: CPU per claim: " + ", ".join(figures), flush=True)


async def main(args: argparse.Namespace) -> None:
    suffix = uuid.uuid4().hex[:6]
    admin_url = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    async with fresh_databases(admin_url, [f"busway_bench_outbox_{suffix}"]) as (url,):
        await upgrade_async(USERS_MIGRATIONS, url)
        engine = create_engine(url)
        sessions = session_factory(engine)
        event, trace = UserUpdated(user_id="u-bench", changes={"display_name": "Bench"}), Trace(correlation_id="c")

        async def commit() -> None:
            async with sessions() as session, session.begin():
                add_event(session, Outbox, "events.users", event, trace=trace, producer="users")

        store = SqlOutboxStore(sessions, Outbox)
        try:
            await rounds(store, commit, args.passes)
        finally:
            await store.close()
            await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--passes", type=int, default=300, help="claims per path and round (default 300)")
    parsed = parser.parse_args()
    if parsed.passes < 1:
        parser.error("--passes must be at least 1")
    uvloop.run(main(parsed))

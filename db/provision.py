"""Creating and dropping whole PostgreSQL databases: for tests, benchmarks and dev set-up."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url


def _dsn(admin_url: str) -> str:
    return make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def fresh_databases(admin_url: str, names: Sequence[str]) -> AsyncIterator[list[str]]:
    """Create the databases ``names`` (dropping leftovers), yield their URLs, drop them after.

    ``admin_url`` is a SQLAlchemy URL of a role allowed to create databases; the URLs
    yielded keep its driver and credentials.
    """
    admin = await asyncpg.connect(_dsn(admin_url), timeout=5)
    base = make_url(admin_url)
    try:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        yield [base.set(database=name).render_as_string(hide_password=False) for name in names]
    finally:
        if admin.is_closed():  # the server restarted meanwhile (fault tests do that)
            admin = await asyncpg.connect(_dsn(admin_url), timeout=5)
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

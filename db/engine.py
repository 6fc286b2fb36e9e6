"""One engine and session factory per service; SQLite by default, PostgreSQL via asyncpg."""

from pathlib import Path
from typing import Annotated, Any

import asyncpg
from pydantic import AfterValidator
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

SessionFactory = async_sessionmaker[AsyncSession]


SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


def checked_url(url: str) -> str:
    """``url`` if it names a database busway can use; ValueError saying why not otherwise."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        msg = "not a database URL (e.g. sqlite+aiosqlite:///var/users.db or postgresql+asyncpg://user@host/db)"
        raise ValueError(msg) from None
    if parsed.drivername not in SUPPORTED_DRIVERS:
        msg = f"driver {parsed.drivername!r} is not supported; use one of {', '.join(SUPPORTED_DRIVERS)}"
        raise ValueError(msg)
    return url


DatabaseUrl = Annotated[str, AfterValidator(checked_url)]
"""A settings field holding a database URL busway can use."""


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url``; a SQLite file's folder is created if missing.

    SQLite runs in WAL mode with a busy timeout so readers do not block the writer;
    PostgreSQL gets a bounded pool (``pool_size``): the service's bulkhead.
    """
    parsed = make_url(url)
    # Statement parameters (emails, hashes) stay out of error messages and logs.
    options: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": 30}
    else:
        # No pool_pre_ping: it costs a round trip per checkout. A connection broken by a
        # server restart raises a disconnect error, which invalidates the pool instead.
        options.update(pool_size=pool_size, max_overflow=0, pool_timeout=10, pool_recycle=1800)
    engine = create_async_engine(url, **options)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions bound to ``engine`` that keep loaded values after commit."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable: asyncpg connects and reads with plain sockets
    TimeoutError,
    PoolTimeout,
    asyncpg.PostgresConnectionError,  # class 08: connection failures
    asyncpg.exceptions.OperatorInterventionError,  # class 57: "starting up", "shutting down", terminated
    asyncpg.InterfaceError,  # "connection is closed"
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is unreachable (a retry may work), not a bug or bad data."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _OUTAGE_ERRORS):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return False

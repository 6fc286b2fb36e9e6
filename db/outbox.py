"""Outbox and inbox tables, shared by shape, owned by each service's own metadata.

A service declares ``class Outbox(OutboxFields, ItsBase, table=True)`` and
``class Inbox(InboxFields, ItsBase, table=True)`` in its models, so each table lives in
that service's database and migrations.
"""

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
from sqlalchemy import Index, Integer, any_, bindparam, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import declared_attr
from sqlmodel import Field, SQLModel, col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from db.engine import SessionFactory
from schemas.envelope import (
    CAUSATION_ID,
    CORRELATION_ID,
    MESSAGE_ID,
    OCCURRED_AT,
    PRODUCER,
    SCHEMA_VERSION,
    TYPE,
    Trace,
)
from schemas.events import EVENT_TYPES, Event


def _now() -> datetime:
    return datetime.now(UTC)


class OutboxFields(SQLModel):
    """One event, written with the state change it describes; kept as the event log."""

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:  # noqa: N805
        # One Index object per table: each service's outbox lives in its own metadata.
        return (Index(f"ix_{cls.__tablename__}_unpublished", "published_at", "seq"),)

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=64, unique=True)
    stream: str = Field(max_length=200)
    type: str = Field(max_length=100, index=True)
    version: int
    occurred_at: datetime
    correlation_id: str = Field(max_length=64, index=True)
    causation_id: str | None = Field(default=None, max_length=64)
    producer: str = Field(max_length=64)
    subject: str | None = Field(default=None, max_length=64, index=True)
    payload: str
    published_at: datetime | None = Field(default=None)


class InboxFields(SQLModel):
    """One event this service has handled: a redelivered event changes nothing twice."""

    event_id: str = Field(max_length=64, primary_key=True)
    handled_at: datetime = Field(default_factory=_now)


def add_event(
    session: AsyncSession,
    model: type[OutboxFields],
    stream: str,
    event: Event,
    *,
    trace: Trace,
    producer: str,
    subject: str | None = None,
) -> OutboxFields:
    """Stage ``event`` in ``session``: it commits (and is published) with the change."""
    _, version = EVENT_TYPES[type(event).__name__]
    row = model(
        id=uuid.uuid4().hex,
        stream=stream,
        type=type(event).__name__,
        version=version,
        occurred_at=_now(),
        correlation_id=trace.correlation_id,
        causation_id=trace.causation_id,
        producer=producer,
        subject=subject,
        payload=event.model_dump_json(),
    )
    session.add(row)
    return row


OutboxEntry = tuple[str, dict[str, Any], bytes]
"""What the relay (bus.outbox) publishes: stream without prefix, envelope headers, JSON payload."""


_ENTRY_COLUMNS = (
    "id", "stream", "type", "version", "occurred_at", "correlation_id", "causation_id", "producer", "payload",
)  # fmt: skip
"""The columns of an outbox row that its published entry is made of."""


def entry_of(row: Mapping[str, Any]) -> OutboxEntry:
    """The relay's view of an outbox row (its columns by name: ``_ENTRY_COLUMNS``)."""
    headers: dict[str, Any] = {
        MESSAGE_ID: row["id"],
        TYPE: row["type"],
        SCHEMA_VERSION: row["version"],
        OCCURRED_AT: row["occurred_at"].astimezone(UTC).isoformat(),
        CORRELATION_ID: row["correlation_id"],
        CAUSATION_ID: row["causation_id"],
        PRODUCER: row["producer"],
    }
    return row["stream"], headers, row["payload"].encode()


class SqlOutboxStore:
    """The relay's access to one service's outbox table."""

    def __init__(self, sessions: SessionFactory, model: type[OutboxFields]) -> None:
        self._sessions = sessions
        self._model = model
        bind = sessions.kw.get("bind")
        if not isinstance(bind, AsyncEngine):
            msg = "an outbox store needs sessions bound to an engine (db.engine.session_factory)"
            raise TypeError(msg)
        self._engine = bind
        # The claim's statements, compiled once for asyncpg (numbered parameters, in order).
        table = model.__table__  # type: ignore[attr-defined]  # SQLModel declares it at runtime
        dialect = bind.dialect
        lock = select(func.pg_try_advisory_xact_lock(func.hashtext(model.__tablename__)))
        pick = (
            select(table.c.seq, *(table.c[name] for name in _ENTRY_COLUMNS))
            .where(table.c.published_at.is_(None))
            .order_by(table.c.seq)
            .limit(bindparam("limit", type_=Integer))
            .with_for_update(skip_locked=True)
        )
        mark = (
            update(table)
            .where(table.c.seq == any_(bindparam("seqs", type_=ARRAY(Integer))))
            .values(published_at=bindparam("at"))
        )
        self._lock_sql = str(lock.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        self._pick_sql = str(pick.compile(dialect=dialect))
        self._mark_sql = str(mark.compile(dialect=dialect))

    def claim(self, limit: int) -> AbstractAsyncContextManager[Sequence[OutboxEntry] | None]:
        """Lock up to ``limit`` unpublished rows; None while another relay holds the outbox."""
        if self._engine.dialect.name == "postgresql":
            return self._claim_postgres(limit)
        return self._claim_orm(limit)

    @asynccontextmanager
    async def _claim_postgres(self, limit: int) -> AsyncIterator[Sequence[OutboxEntry] | None]:
        """The claim in asyncpg's own statements, in a transaction of its own.

        It runs once per committed change that has events (every login): through the ORM
        a claim costs about three times the CPU (``just bench-outbox``; docs/performance.md).
        One relay at a time per outbox (the advisory lock): two relays taking alternate
        batches (SKIP LOCKED) would append one aggregate's events out of order.
        """
        async with self._engine.connect() as connection:
            pg = cast("asyncpg.Connection", (await connection.get_raw_connection()).driver_connection)
            try:
                async with pg.transaction():
                    if not await pg.fetchval(self._lock_sql):
                        yield None
                        return
                    rows = await pg.fetch(self._pick_sql, limit)
                    yield [entry_of(row) for row in rows]
                    if rows:
                        await pg.execute(self._mark_sql, _now(), [row["seq"] for row in rows])
            finally:
                # Past SQLAlchemy, so its pool sees neither a connection the server ended
                # nor a transaction that could not be closed: drop such a connection. A
                # failure of the caller's (Redis down) leaves it healthy, and pooled.
                if pg.is_closed() or pg.is_in_transaction():
                    await connection.invalidate()

    @asynccontextmanager
    async def _claim_orm(self, limit: int) -> AsyncIterator[Sequence[OutboxEntry] | None]:
        """The claim through the ORM: SQLite, whose one writer at a time needs no lock of ours."""
        model = self._model
        async with self._sessions() as session, session.begin():
            query = (
                select(model)
                .where(col(model.published_at).is_(None))
                .order_by(col(model.seq))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = (await session.exec(query)).all()
            yield [entry_of(row.model_dump()) for row in rows]
            if rows:
                await session.exec(
                    update(model).where(col(model.seq).in_([row.seq for row in rows])).values(published_at=_now())
                )

    async def backlog(self) -> int:
        """How many committed events wait to be published (a metric)."""
        model = self._model
        async with self._sessions() as session:
            found = await session.exec(select(func.count()).select_from(model).where(col(model.published_at).is_(None)))
            return int(found.one())

"""Outbox and inbox tables, shared by shape, owned by each service's own metadata.

A service declares ``class Outbox(OutboxFields, ItsBase, table=True)`` and
``class Inbox(InboxFields, ItsBase, table=True)`` in its models, so each table lives in
that service's database and migrations.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import Index, Integer, String, bindparam, true, update
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


_DBAPI_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn")
"""Options SQLAlchemy's asyncpg dialect takes for itself, not asyncpg.connect's."""


async def _end(pg: asyncpg.Connection, *, committed: bool) -> bool:
    """Leave ``pg`` out of any transaction; whether it can be used again (else it is dropped).

    A claim that ended early (nothing to do, the outbox held, the caller's XADD failed)
    rolls back, and a failure of the caller's (Redis down) leaves the connection healthy.
    One that cannot roll back, or whose rollback is cancelled, is terminated: the server
    then lets go of its transaction and its lock.
    """
    healthy = committed
    if not committed and not pg.is_closed():
        try:
            await pg.execute("ROLLBACK")  # also when BEGIN's outcome is unknown (it was cancelled)
            healthy = True
        except asyncio.CancelledError:
            pg.terminate()
            raise
        except Exception:  # noqa: S110  # dropped just below
            pass
    if not healthy or pg.is_closed() or pg.is_in_transaction():
        pg.terminate()
        return False
    return True


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
        # The claim's statements, compiled once for asyncpg (numbered parameters, in order):
        # the advisory lock and the pick in one statement; the mark, with COMMIT, a simple
        # query of its own (``_mark_and_commit``).
        table = model.__table__  # type: ignore[attr-defined]  # SQLModel declares it at runtime
        dialect = bind.dialect
        lock = func.pg_try_advisory_xact_lock(func.hashtext(bindparam("lock", type_=String)))
        held = select(lock.label("ok")).subquery("held")
        picked = (
            select(table.c.seq, *(table.c[name] for name in _ENTRY_COLUMNS))
            .where(held.c.ok, table.c.published_at.is_(None))
            .order_by(table.c.seq)
            .limit(bindparam("limit", type_=Integer))
            .with_for_update(skip_locked=True)
            .lateral("picked")
        )
        claim = select(held.c.ok.label("held"), picked).select_from(held.outerjoin(picked, true()))
        compiled = claim.compile(dialect=dialect)
        self._claim_sql = str(compiled)
        self._claim_params = tuple(compiled.positiontup or ())
        self._mark_sql = str(update(table).values(published_at=func.clock_timestamp()).compile(dialect=dialect))
        self._pg: asyncpg.Connection | None = None
        """The relay's own connection (PostgreSQL): opened at the first claim, closed by ``close``."""
        self._claiming = False

    def _mark_and_commit(self, seqs: Sequence[int]) -> str:
        """The simple query that marks rows ``seqs`` published and commits: one round trip.

        The commit does not wait for its WAL to reach the disk (``synchronous_commit`` off
        for this transaction alone): a mark lost in a PostgreSQL crash only publishes its
        events again, which delivery at least once allows and consumers' inboxes absorb.
        PostgreSQL spent 50–100 µs less CPU per claim, and a commit-and-claim pass took
        0.1–0.25 ms less (docs/performance.md).
        """
        listed = ", ".join(str(int(seq)) for seq in seqs)  # integers of ours, nothing a caller gave
        return f"SET LOCAL synchronous_commit TO OFF; {self._mark_sql} WHERE seq IN ({listed}); COMMIT"

    def claim(self, limit: int) -> AbstractAsyncContextManager[Sequence[OutboxEntry] | None]:
        """Lock up to ``limit`` unpublished rows; None while another relay holds the outbox."""
        if self._engine.dialect.name == "postgresql":
            return self._claim_postgres(limit)
        return self._claim_orm(limit)

    @asynccontextmanager
    async def _claim_postgres(self, limit: int) -> AsyncIterator[Sequence[OutboxEntry] | None]:
        """The claim in asyncpg's own statements, in a transaction of its own: three round trips.

        BEGIN; the advisory lock and the pick in one statement; then, once the caller has
        published, the mark and COMMIT in one simple query (the ids are integers of ours).
        It runs once per committed change that has events (every login): through the ORM,
        five round trips, a claim cost about three times the CPU (``just bench-outbox``;
        docs/performance.md). One relay at a time per outbox (the advisory lock, held to
        the end of the transaction): two relays taking alternate batches (SKIP LOCKED)
        would append one aggregate's events out of order.
        """
        if self._claiming:  # this process's relay is mid-claim on the one connection: held
            yield None
            return
        self._claiming = True
        try:
            pg = await self._connection()
            committed = False
            try:
                await pg.execute("BEGIN")
                values = {"limit": limit, "lock": self._model.__tablename__}
                rows = await pg.fetch(self._claim_sql, *(values[name] for name in self._claim_params))
                if not rows[0]["held"]:
                    yield None
                    return
                picked = [row for row in rows if row["seq"] is not None]
                yield [entry_of(row) for row in picked]
                await pg.execute(self._mark_and_commit([row["seq"] for row in picked]) if picked else "COMMIT")
                committed = True
            finally:
                if not await _end(pg, committed=committed):
                    self._pg = None
        finally:
            self._claiming = False

    async def _connection(self) -> asyncpg.Connection:
        """The relay's own connection, opened (again) if need be.

        Past SQLAlchemy's pool: a checkout and its return cost about as much as the claim's
        BEGIN (py-spy, ``just bench-outbox``), once per login. One connection per process,
        outside ``*_DATABASE_POOL_SIZE``; its transaction is the claim's, so a pooler in
        transaction mode in front of PostgreSQL does no harm.
        """
        pg = self._pg
        if pg is None or pg.is_closed():
            args, options = self._engine.dialect.create_connect_args(self._engine.url)
            for name in _DBAPI_ONLY:
                options.pop(name, None)
            pg = self._pg = await asyncpg.connect(*args, **options)
        return pg

    async def close(self) -> None:
        """Close the relay's own connection (a later claim opens another)."""
        pg, self._pg = self._pg, None
        if pg is not None and not pg.is_closed():
            try:
                await asyncio.wait_for(pg.close(), 5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pg.terminate()

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

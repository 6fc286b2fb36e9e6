"""Outbox and inbox tables, shared by shape, owned by each service's own metadata.

A service declares ``class Outbox(OutboxFields, ItsBase, table=True)`` and
``class Inbox(InboxFields, ItsBase, table=True)`` in its models, so each table lives in
that service's database and migrations.
"""

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Index, update
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


def entry_of(row: OutboxFields) -> OutboxEntry:
    """The relay's view of an outbox row."""
    headers: dict[str, Any] = {
        MESSAGE_ID: row.id,
        TYPE: row.type,
        SCHEMA_VERSION: row.version,
        OCCURRED_AT: row.occurred_at.isoformat(),
        CORRELATION_ID: row.correlation_id,
        CAUSATION_ID: row.causation_id,
        PRODUCER: row.producer,
    }
    return row.stream, headers, row.payload.encode()


class SqlOutboxStore:
    """The relay's access to one service's outbox table."""

    def __init__(self, sessions: SessionFactory, model: type[OutboxFields]) -> None:
        self._sessions = sessions
        self._model = model

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[Sequence[OutboxEntry] | None]:
        """Lock up to ``limit`` unpublished rows; None while another relay holds the outbox."""
        model = self._model
        async with self._sessions() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                # One relay at a time per outbox: two relays taking alternate batches
                # (SKIP LOCKED) would append one aggregate's events out of order.
                locked = await session.exec(select(func.pg_try_advisory_xact_lock(func.hashtext(model.__tablename__))))
                if not locked.one():
                    yield None
                    return
            query = (
                select(model)
                .where(col(model.published_at).is_(None))
                .order_by(col(model.seq))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = (await session.exec(query)).all()
            yield [entry_of(row) for row in rows]
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

"""A service's event log: its outbox rows, kept after publishing; exported and pruned here.

Every handler service exposes the export as ``python -m handlers.<service> eventlog``
(``busway replay --from-log`` runs it: the CLI imports no database code) and runs an
``EventLogPruner`` that deletes published rows older than its retention.
"""

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from loguru import logger
from sqlalchemy import delete
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from db.engine import SessionFactory, create_engine, is_sqlite, session_factory
from db.outbox import OutboxFields, entry_of

Encode = Callable[[Mapping[str, Any], bytes], bytes]
"""Envelope headers and payload bytes -> the ``__data__`` bytes, signed by the exporting service."""


def canonical_json(value: Any) -> bytes:
    """JSON as an exported record carries it (and ``busway replay`` writes it): compact, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def record_of(row: OutboxFields, encode: Encode | None = None) -> dict[str, Any]:
    """The exported form of one outbox row (schemas.eventlog.EventLogRecord), as the relay publishes it.

    With ``encode`` (the service's signing encoder) the message carries its producer's
    signature, computed over the payload exactly as the record holds it, so subscribers
    accept it when it is replayed.
    """
    stream, headers, payload = entry_of(row.model_dump())
    if encode is not None:
        message = json.loads(encode(headers, canonical_json(json.loads(payload))))
    else:
        message = {key: value for key, value in headers.items() if value is not None}
        message["payload"] = json.loads(payload)
    return {"stream": stream, "position": str(row.seq), "message": message}


async def read_log(
    sessions: SessionFactory,
    model: type[OutboxFields],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    types: Collection[str] = (),
    correlation_id: str | None = None,
    batch: int = 500,
) -> AsyncIterator[OutboxFields]:
    """Published rows in log order (``seq``), filtered in the database; both time bounds inclusive.

    Unpublished rows are left out: the relay is about to send them anyway, and sending
    them ahead of it would put them out of order.
    """
    last = 0
    while True:
        query = select(model).where(col(model.published_at).is_not(None), col(model.seq) > last)
        if since is not None:
            query = query.where(col(model.occurred_at) >= since)
        if until is not None:
            query = query.where(col(model.occurred_at) <= until)
        if types:
            query = query.where(col(model.type).in_(list(types)))
        if correlation_id is not None:
            query = query.where(col(model.correlation_id) == correlation_id)
        async with sessions() as session:
            rows = (await session.exec(query.order_by(col(model.seq)).limit(batch))).all()
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        last = rows[-1].seq or last


async def prune_published(
    sessions: SessionFactory, model: type[OutboxFields], *, before: datetime, batch: int = 1000
) -> int:
    """Delete published rows published before ``before``; how many. Unpublished rows always stay.

    In batches, so a long-neglected log does not hold one huge transaction.
    """
    deleted = 0
    while True:
        async with sessions() as session, session.begin():
            old = (
                select(model.seq)
                .where(col(model.published_at).is_not(None), col(model.published_at) < before)
                .order_by(col(model.seq))
                .limit(batch)
            )
            seqs = list((await session.exec(old)).all())
            if seqs:
                await session.exec(delete(model).where(col(model.seq).in_(seqs)))
        deleted += len(seqs)
        if len(seqs) < batch:
            return deleted


class EventLogPruner:
    """Deletes a service's published events older than its retention, now and then."""

    def __init__(
        self,
        sessions: SessionFactory,
        model: type[OutboxFields],
        *,
        retention_days: int,
        interval: float = 3600.0,
    ) -> None:
        self._sessions = sessions
        self._model = model
        self._retention = timedelta(days=retention_days) if retention_days else None
        self._interval = interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def prune(self, now: datetime | None = None) -> int:
        """Prune once; how many rows went. Nothing with a retention of 0 (keep for ever)."""
        if self._retention is None:
            return 0
        before = (now or datetime.now(UTC)) - self._retention
        pruned = await prune_published(self._sessions, self._model, before=before)
        if pruned:
            logger.info("pruned {} events published before {}", pruned, before.isoformat())
        return pruned

    async def start(self) -> None:
        """Prune now and then every interval, in the background."""
        if self._retention is not None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="event log pruner")

    async def stop(self) -> None:
        """Stop pruning (a prune in progress finishes its batch's transaction or rolls back)."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.prune()
            except Exception as exc:  # the database may be away for a while: try next time
                logger.warning("event log pruning failed, will retry: {!r}", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        msg = f"not an ISO-8601 time: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    return value if value.utcoffset() is not None else value.replace(tzinfo=UTC)


def _parser(service: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m handlers.{service} eventlog",
        description=f"Write {service}'s published events as JSON lines (schemas.eventlog) to stdout.",
    )
    parser.add_argument("--since", type=_timestamp, help="only events that occurred at or after (ISO-8601)")
    parser.add_argument("--until", type=_timestamp, help="only events that occurred at or before (ISO-8601)")
    parser.add_argument("--type", action="append", default=[], dest="types", help="only this type (repeatable)")
    parser.add_argument("--correlation-id", help="only events with this correlation id")
    return parser


async def export(
    sessions: SessionFactory,
    model: type[OutboxFields],
    out: TextIO,
    options: argparse.Namespace,
    encode: Encode | None = None,
) -> int:
    """Write the filtered log to ``out``, one JSON object per line; how many lines."""
    written = 0
    async for row in read_log(
        sessions,
        model,
        since=options.since,
        until=options.until,
        types=options.types,
        correlation_id=options.correlation_id,
    ):
        out.write(json.dumps(record_of(row, encode), separators=(",", ":"), ensure_ascii=False) + "\n")
        written += 1
    out.flush()
    return written


def export_command(
    service: str, database_url: str, model: type[OutboxFields], args: Sequence[str], encode: Encode | None = None
) -> int:
    """``python -m handlers.<service> eventlog [filters]``: the exit status.

    Logs go to stderr (stdout is the data); a failure is one line on stderr.
    """
    options = _parser(service).parse_args(list(args))
    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{message}")
    if is_sqlite(database_url):
        database = make_url(database_url).database or ""
        # Opening a missing SQLite file would create an empty one (and report no table).
        if database and database != ":memory:" and not Path(database).exists():
            print(f"{service}: no database at {database}; set {service.upper()}_DATABASE_URL", file=sys.stderr)
            return 1

    async def run() -> int:
        engine = create_engine(database_url, pool_size=1)
        try:
            return await export(session_factory(engine), model, sys.stdout, options, encode)
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        print(f"{service}: cannot read the event log: {reason}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader stopped (busway replay interrupted): nothing to say
        return 1
    except OSError as exc:
        print(f"{service}: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a driver error SQLAlchemy did not wrap: one line, not a trace
        print(f"{service}: cannot read the event log: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0

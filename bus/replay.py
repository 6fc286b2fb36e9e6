"""Replaying messages: read them from a stream, a dead-letter stream or an event log; send them again.

A replayed entry keeps its envelope, its ``id`` above all, so a consumer that keeps an
inbox handles it once however often it is replayed. A replay goes back to a stream
(every group reading it sees the entries again) or to one consumer group alone, through
that group's replay stream ``replay.<group>.<stream>`` (see ``Consumer.events``).
``busway replay`` (bus/operator_commands.py) drives this module; docs/operations.md
is the user's guide.
"""

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, cast

from pydantic import ValidationError
from redis import Redis

from bus.settings import BusSettings
from bus.wire import DATA_FIELD
from schemas.eventlog import EventLogRecord
from schemas.streams import dead_letters, replay_stream

DLQ_PREFIX = dead_letters("")
REPLAY_PREFIX = replay_stream("", "").removesuffix(".")  # "replay."
_ENTRY_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class ReplayError(Exception):
    """The replay cannot go on; the message says why in one line."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Entry:
    """One message to replay, as read from its source."""

    position: str
    """Where it sits in its source: the stream entry id, the outbox seq, the file line."""
    stream: str
    """The stream it belongs to, without prefix: where it goes back to by default."""
    data: bytes
    """The message, exactly as it travels (the entry's ``__data__``)."""
    message_id: str | None = None
    type: str | None = None
    correlation_id: str | None = None
    occurred_at: str | None = None
    group: str | None = None
    """Dead letters only: the group that gave up on it."""


def envelope_of(data: bytes) -> dict[str, Any]:
    """The JSON object of a message; empty when it is not one."""
    try:
        message = json.loads(data)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _entry(position: str, stream: str, data: bytes, group: str | None = None) -> Entry:
    message = envelope_of(data)
    return Entry(
        position=position,
        stream=stream,
        data=data,
        message_id=_text(message.get("id")),
        type=_text(message.get("type")),
        correlation_id=_text(message.get("correlation_id")),
        occurred_at=_text(message.get("occurred_at")),
        group=group,
    )


def is_dead_letter_stream(base: str) -> bool:
    """Whether ``base`` (without prefix) is a dead-letter stream."""
    return base.startswith(DLQ_PREFIX)


def original_stream(base: str) -> str:
    """The stream a replay stream ``replay.<group>.<stream>`` stands in for; others as they are."""
    if base.startswith(REPLAY_PREFIX):
        _group, _, stream = base.removeprefix(REPLAY_PREFIX).partition(".")
        return stream or base
    return base


def check_entry_id(value: str, option: str) -> str:
    """``value`` if it is a stream entry id (``<ms>`` or ``<ms>-<seq>``); ReplayError otherwise."""
    if not _ENTRY_ID.match(value):
        raise ReplayError(f"{option}: {value!r} is not a stream entry id (like 1718000000000-0)", exit_code=2)
    return value


def parse_time(value: str, option: str) -> datetime:
    """An ISO-8601 time (UTC when it has no offset); ReplayError otherwise."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ReplayError(f"{option}: {value!r} is not an ISO-8601 time (like 2025-06-01T12:00:00Z)", 2) from None
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def id_range(from_id: str | None, to_id: str | None, since: datetime | None, until: datetime | None) -> tuple[str, str]:
    """XRANGE bounds (both inclusive) from entry ids or from times; ReplayError when they are inverted."""
    if from_id is not None and to_id is not None and _id_key(from_id) > _id_key(to_id):
        raise ReplayError(f"--from-id {from_id} is after --to-id {to_id}", exit_code=2)
    if since is not None and until is not None and since > until:
        raise ReplayError(f"--since {since.isoformat()} is after --until {until.isoformat()}", exit_code=2)
    start, end = from_id or "-", to_id or "+"
    if since is not None:
        start = f"{-((_EPOCH - since) // _MS)}-0"  # the first whole millisecond at or after
    if until is not None:
        end = str((until - _EPOCH) // _MS)  # a bare <ms> as the end means its last entry
    return start, end


StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]


def xrange(redis: Redis, name: str, *, start: str = "-", end: str = "+", count: int = 500) -> StreamEntries:
    """XRANGE on a client that returns bytes, typed as such."""
    return cast(StreamEntries, redis.xrange(name, min=start, max=end, count=count) or [])


def _exists(redis: Redis, name: str) -> bool:
    return bool(redis.type(name) == b"stream")


def group_names(redis: Redis, name: str) -> list[str]:
    """The consumer groups of stream ``name`` (full name); none when it does not exist."""
    if not _exists(redis, name):
        return []
    return [_text(group["name"]) or "" for group in redis.xinfo_groups(name)]


def read_stream(
    redis: Redis, settings: BusSettings, base: str, *, start: str = "-", end: str = "+", batch: int = 500
) -> Iterator[Entry]:
    """The entries of stream ``base`` between ``start`` and ``end``, oldest first.

    A dead-letter stream yields the original messages, each meant for the stream it was
    dead-lettered from.
    """
    name = settings.name(base)
    if not _exists(redis, name):
        where = f" under BUS_PREFIX={settings.prefix!r}" if settings.prefix else ""
        raise ReplayError(f"no stream named {base!r}{where}")
    dead = is_dead_letter_stream(base)
    cursor = start
    while True:
        rows = xrange(redis, name, start=cursor, end=end, count=batch)
        for raw_id, fields in rows:
            entry_id = _text(raw_id) or ""
            data = fields.get(DATA_FIELD.encode(), b"")
            if dead:
                source = _text(fields.get(b"source_stream"))
                stream = source.removeprefix(settings.prefix) if source else base.removeprefix(DLQ_PREFIX)
                yield _entry(entry_id, stream, data, _text(fields.get(b"group")))
            else:
                yield _entry(entry_id, base, data)
        if len(rows) < batch:
            return
        cursor = f"({_text(rows[-1][0])}"


def read_records(lines: Iterable[str], origin: str) -> Iterator[Entry]:
    """The entries of an exported event log (JSON lines of ``schemas.eventlog.EventLogRecord``)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            record = EventLogRecord.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ReplayError(f"{origin}, line {number}: not an event log record ({where}: {first['msg']})") from None
        except ValueError as exc:
            raise ReplayError(f"{origin}, line {number}: not JSON ({exc})") from None
        # Compact UTF-8, as the exporting service wrote the payload it signed.
        data = json.dumps(raw["message"], separators=(",", ":"), ensure_ascii=False).encode()
        yield _entry(record.position or str(number), record.stream, data)


@dataclass(frozen=True)
class Filters:
    """Which entries to replay. Empty: all of them."""

    types: frozenset[str] = frozenset()
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    """Time bounds on ``occurred_at`` (inclusive), for sources that are not streams."""

    def matches(self, entry: Entry) -> bool:
        """Whether ``entry`` is to be replayed; an unreadable one never is."""
        if entry.type is None or entry.message_id is None:
            return False
        if self.types and entry.type not in self.types:
            return False
        if self.correlation_id is not None and entry.correlation_id != self.correlation_id:
            return False
        if self.since is not None or self.until is not None:
            try:
                occurred = parse_time(entry.occurred_at or "", "occurred_at")
            except ReplayError:
                return False
            if (self.since is not None and occurred < self.since) or (self.until is not None and occurred > self.until):
                return False
        return True


@dataclass
class Targets:
    """Where each entry goes: back to its stream, another stream, or one group's replay stream.

    Each destination is checked once, before anything is sent to it.
    """

    redis: Redis
    settings: BusSettings
    to_stream: str | None = None
    group: str | None = None
    warnings: list[str] = field(default_factory=list)
    _resolved: dict[str, str] = field(default_factory=dict)

    def base_of(self, entry: Entry) -> str:
        """Where ``entry`` goes, without prefix."""
        if self.group is None:
            return self.to_stream or entry.stream
        return replay_stream(self.group, self.to_stream or original_stream(entry.stream))

    def __call__(self, entry: Entry) -> str:
        """The full name of the stream ``entry`` goes to; ReplayError when it cannot go there."""
        key = self.to_stream or entry.stream
        if key not in self._resolved:
            self._resolved[key] = self._check(entry)
        return self._resolved[key]

    def _check(self, entry: Entry) -> str:
        base = self.base_of(entry)
        if self.group is None:
            if not _exists(self.redis, self.settings.name(base)):
                raise ReplayError(f"no stream named {base!r} to replay into")
            return self.settings.name(base)
        source = self.to_stream or original_stream(entry.stream)
        if not _exists(self.redis, self.settings.name(source)):
            raise ReplayError(f"no stream named {source!r}, so no group reads it")
        groups = group_names(self.redis, self.settings.name(source))
        readers = group_names(self.redis, self.settings.name(base))
        if self.group not in groups and self.group not in readers:
            known = ", ".join(groups) or "none"
            raise ReplayError(f"no consumer group {self.group!r} reads {source!r} (its groups: {known})")
        if self.group not in readers:
            self.warnings.append(
                f"group {self.group!r} does not read {base!r} yet; the entries wait there until it does"
            )
        return self.settings.name(base)


@dataclass
class Summary:
    """What a replay did so far."""

    read: int = 0
    matched: int = 0
    sent: int = 0

    @property
    def skipped(self) -> int:
        """Read but left out: filtered out, or not a busway message."""
        return self.read - self.matched

    def line(self) -> str:
        """One line for the operator."""
        return f"read {self.read}, matched {self.matched}, sent {self.sent}, skipped {self.skipped}"


def select(entries: Iterable[Entry], filters: Filters, summary: Summary) -> Iterator[Entry]:
    """The entries that pass ``filters``, counting what was read and matched."""
    for entry in entries:
        summary.read += 1
        if filters.matches(entry):
            summary.matched += 1
            yield entry


def send(
    redis: Redis,
    planned: Sequence[tuple[Entry, str]],
    summary: Summary,
    *,
    rate: float | None = None,
    batch: int = 100,
    progress: Callable[[int], None] = lambda _: None,
) -> None:
    """Append each entry to its target stream, in order, in pipelined batches.

    ``rate``: at most that many entries a second. ``summary.sent`` counts the batches
    Redis confirmed, so an interrupted replay reports what surely went out.
    """
    size = max(1, min(batch, int(rate / 10) if rate else batch))
    started = time.monotonic()
    for offset in range(0, len(planned), size):
        chunk = planned[offset : offset + size]
        pipe = redis.pipeline(transaction=False)
        for entry, target in chunk:
            pipe.xadd(target, {DATA_FIELD: entry.data})
        pipe.execute()
        summary.sent += len(chunk)
        progress(len(chunk))
        if rate:
            ahead = started + summary.sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def write_records(out: IO[str], planned: Sequence[tuple[Entry, str]], summary: Summary) -> None:
    """Write entries as an event log (JSON lines), each with the stream it belongs to."""
    for entry, stream in planned:
        record = {"stream": stream, "position": entry.position, "message": json.loads(entry.data)}
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        summary.sent += 1
    out.flush()

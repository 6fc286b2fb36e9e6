"""What is on the bus: streams, their consumer groups and backlogs, and the dead letters.

Read-only views for ``busway streams`` and ``busway dlq`` (bus/operator_commands.py).
"""

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from bus.replay import DLQ_PREFIX, envelope_of, is_dead_letter_stream, xrange
from bus.settings import BusSettings
from bus.wire import DATA_FIELD


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _optional(value: Any) -> str | None:
    return None if value is None else _text(value)


def id_time(entry_id: str) -> datetime:
    """When an entry was appended: the milliseconds part of its id."""
    return datetime.fromtimestamp(int(entry_id.partition("-")[0]) / 1000, tz=UTC)


def _age(entry_id: str, now_ms: int) -> float:
    return max(0.0, (now_ms - int(entry_id.partition("-")[0])) / 1000)


@dataclass(frozen=True)
class ConsumerInfo:
    """One consumer of a group: its pending entries and how long it has been idle."""

    name: str
    pending: int
    idle_s: float


@dataclass(frozen=True)
class GroupInfo:
    """One consumer group of a stream and its backlog."""

    name: str
    consumers: list[ConsumerInfo]
    pending: int
    lag: int | None
    """Entries not yet delivered to the group (None: Redis cannot tell)."""
    last_delivered_id: str
    oldest_pending_id: str | None
    oldest_pending_age_s: float | None
    """Seconds since the oldest pending entry was appended."""
    oldest_pending_idle_s: float | None
    """Seconds since that entry was last delivered."""


@dataclass(frozen=True)
class StreamInfo:
    """One stream under the prefix."""

    stream: str
    """Its name without the prefix."""
    length: int
    groups: list[GroupInfo] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """A plain dict for ``--json``."""
        return asdict(self)


def stream_names(redis: Redis, settings: BusSettings) -> list[str]:
    """Every stream under the prefix, without it, sorted."""
    found = redis.scan_iter(match=f"{settings.prefix}*", _type="stream", count=1000)
    return sorted(_text(name).removeprefix(settings.prefix) for name in found)


def _group(redis: Redis, name: str, raw: dict[str, Any], now_ms: int) -> GroupInfo:
    group = _text(raw["name"])
    consumers = [
        ConsumerInfo(name=_text(c["name"]), pending=int(c["pending"]), idle_s=int(c["idle"]) / 1000)
        for c in redis.xinfo_consumers(name, group)
    ]
    oldest_id = oldest_age = oldest_idle = None
    if int(raw["pending"]):
        summary = redis.xpending(name, group)
        if summary["min"] is not None:
            oldest_id = _text(summary["min"])
            oldest_age = _age(oldest_id, now_ms)
            first = redis.xpending_range(name, group, min=oldest_id, max=oldest_id, count=1)
            if first:
                oldest_idle = int(first[0]["time_since_delivered"]) / 1000
    lag = raw.get("lag")
    return GroupInfo(
        name=group,
        consumers=consumers,
        pending=int(raw["pending"]),
        lag=None if lag is None else int(lag),
        last_delivered_id=_text(raw["last-delivered-id"]),
        oldest_pending_id=oldest_id,
        oldest_pending_age_s=oldest_age,
        oldest_pending_idle_s=oldest_idle,
    )


def stream_info(redis: Redis, settings: BusSettings, base: str) -> StreamInfo | None:
    """Length and groups of stream ``base``; None when it is gone."""
    name = settings.name(base)
    if redis.type(name) != b"stream":
        return None
    now_ms = int(time.time() * 1000)
    groups = [_group(redis, name, raw, now_ms) for raw in redis.xinfo_groups(name)]
    return StreamInfo(stream=base, length=int(redis.xlen(name)), groups=groups)


def list_streams(redis: Redis, settings: BusSettings) -> list[StreamInfo]:
    """Every stream under the prefix with its groups."""
    infos = (stream_info(redis, settings, base) for base in stream_names(redis, settings))
    return [info for info in infos if info is not None]


@dataclass(frozen=True)
class DeadLetterStream:
    """One dead-letter stream and how much it holds."""

    stream: str
    source: str
    entries: int
    oldest: str | None
    newest: str | None


def dead_letter_streams(redis: Redis, settings: BusSettings) -> list[DeadLetterStream]:
    """Every ``dlq.*`` stream under the prefix, with counts and the times of its first and last entry."""
    found = []
    for base in stream_names(redis, settings):
        if not is_dead_letter_stream(base):
            continue
        name = settings.name(base)
        first = redis.xrange(name, count=1)
        last = redis.xrevrange(name, count=1)
        found.append(
            DeadLetterStream(
                stream=base,
                source=base.removeprefix(DLQ_PREFIX),
                entries=int(redis.xlen(name)),
                oldest=id_time(_text(first[0][0])).isoformat() if first else None,
                newest=id_time(_text(last[0][0])).isoformat() if last else None,
            )
        )
    return found


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter entry: why and when, and what the original message was."""

    entry_id: str
    dead_lettered_at: str
    source_stream: str
    source_id: str
    group: str
    attempts: int | None
    error: str
    correlation_id: str
    message_id: str | None
    type: str | None
    occurred_at: str | None


def dead_letters(redis: Redis, settings: BusSettings, base: str, *, count: int) -> list[DeadLetter]:
    """The first ``count`` entries of dead-letter stream ``base``, oldest first."""
    letters = []
    for raw_id, fields in xrange(redis, settings.name(base), count=count):
        entry_id = _text(raw_id)
        message = envelope_of(fields.get(DATA_FIELD.encode(), b""))
        attempts = _text(fields.get(b"attempts", b""))
        letters.append(
            DeadLetter(
                entry_id=entry_id,
                dead_lettered_at=_text(fields.get(b"dead_lettered_at") or id_time(entry_id).isoformat()),
                source_stream=_text(fields.get(b"source_stream", b"")).removeprefix(settings.prefix),
                source_id=_text(fields.get(b"source_id", b"")),
                group=_text(fields.get(b"group", b"")),
                attempts=int(attempts) if attempts.isdigit() else None,
                error=_text(fields.get(b"error", b"")),
                correlation_id=_text(fields.get(b"correlation_id", b"")),
                message_id=_optional(message.get("id")),
                type=_optional(message.get("type")),
                occurred_at=_optional(message.get("occurred_at")),
            )
        )
    return letters


def purge(redis: Redis, settings: BusSettings, base: str, *, to_id: str | None = None) -> int:
    """Delete a dead-letter stream's entries (those up to ``to_id`` inclusive, or all); how many."""
    name = settings.name(base)
    if to_id is None:
        # Trimmed, not deleted: a group someone created on it (a monitor) stays.
        return int(redis.xtrim(name, maxlen=0, approximate=False))
    deleted = 0
    while True:
        ids = [raw_id for raw_id, _ in xrange(redis, name, end=to_id)]
        if not ids:
            return deleted
        deleted += int(redis.xdel(name, *ids))

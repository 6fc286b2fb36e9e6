"""Read busway's events with nothing but redis-py and json: a complete consumer.

It does what docs/events.md asks of a consumer: its own consumer group, created at 0;
its own pending entries first, then the ones a dead consumer left, then new ones;
deduplication on the event id; dispatch on (type, version), everything else skipped;
XACK once the work is done.

    REDIS_URL=redis://localhost:6379 python docs/examples/subscriber.py --group my-mailer
    python docs/examples/subscriber.py --group my-mailer --drain   # handle what is there, then exit
"""

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import redis

STREAMS = ("events.auth", "events.users")
CLAIM_IDLE_MS = 60_000  # pending this long, an entry belongs to a consumer that died: take it over
SEEN_FOR_SECONDS = 7 * 24 * 3600  # how long a handled event id is remembered, to drop duplicates
BATCH = 100


def welcome(payload: dict[str, Any]) -> str:
    """RegistrationCompleted v1: the account can log in now (a mailer would send a welcome)."""
    return f"welcome {payload['user_id']}"


def profile_created(payload: dict[str, Any]) -> str:
    """UserCreated v1."""
    return f"profile {payload['user_id']} created for {payload['email']}"


def logged_in(payload: dict[str, Any]) -> str:
    """UserLoggedIn v1."""
    return f"user {payload['user_id']} logged in (session {payload['session_id']})"


def profile_changed(payload: dict[str, Any]) -> str:
    """UserUpdated v1: ``changes`` maps each changed field to its new value."""
    return f"user {payload['user_id']} changed {', '.join(sorted(payload['changes']))}"


# The (type, version) pairs this consumer understands. Anything else is skipped: producers
# add event types without notice, and a new version of a type is a contract not read yet.
HANDLERS: dict[tuple[str, int], Callable[[dict[str, Any]], str]] = {
    ("RegistrationCompleted", 1): welcome,
    ("UserCreated", 1): profile_created,
    ("UserLoggedIn", 1): logged_in,
    ("UserUpdated", 1): profile_changed,
}


class Subscriber:
    """One consumer of one consumer group, reading every event stream."""

    def __init__(self, client: redis.Redis, prefix: str, group: str, consumer: str) -> None:
        self.redis = client
        self.prefix = prefix
        self.group = group
        self.consumer = consumer
        self.streams = [prefix + stream for stream in STREAMS]

    def ensure_groups(self) -> None:
        """Create the group at 0, so events written before our first start reach us too."""
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):  # BUSYGROUP: it exists already
                    raise

    def handle(self, stream: str, entry_id: str, fields: dict[str, str] | None) -> None:
        """Do the work for one entry, remember its event id, then acknowledge it."""
        try:
            message = json.loads(fields["__data__"]) if fields else None
        except (KeyError, ValueError):
            message = None
        if not isinstance(message, dict):
            print(f"unreadable entry {entry_id} on {stream}", file=sys.stderr)
            self.redis.xack(stream, self.group, entry_id)  # it will never be readable
            return
        kind, version, event_id = message.get("type"), message.get("version", 1), message.get("id")
        seen = f"{self.prefix}{self.group}:seen:{event_id}"
        handler = HANDLERS.get((kind, version))
        if handler is None:
            print(f"skipped {kind} v{version} {event_id}")
        elif self.redis.exists(seen):
            print(f"duplicate {kind} v{version} {event_id}")  # delivery is at-least-once
        else:
            try:
                outcome = handler(message["payload"])
            except Exception as exc:  # left pending: claim_abandoned hands it out again later
                print(f"failed {kind} v{version} {event_id}: {exc!r}", file=sys.stderr)
                return
            print(f"handled {kind} v{version} {event_id}: {outcome} (correlation {message['correlation_id']})")
        # A real service records the id in the database transaction of its effect (an inbox
        # table). Here: remember it and acknowledge the entry together (MULTI/EXEC).
        with self.redis.pipeline() as pipe:
            pipe.set(seen, 1, ex=SEEN_FOR_SECONDS)
            pipe.xack(stream, self.group, entry_id)
            pipe.execute()

    def read(self, positions: dict[str, str], block_ms: int | None) -> dict[str, str]:
        """One XREADGROUP; the id of the last entry read, per stream that had any.

        Per stream, ``>`` asks for new entries; an entry id, for our own pending entries after it.
        """
        batches = self.redis.xreadgroup(self.group, self.consumer, positions, count=BATCH, block=block_ms)
        last: dict[str, str] = {}
        for stream, entries in batches or []:
            for entry_id, fields in entries:
                self.handle(stream, entry_id, fields)  # fields is None for an entry deleted meanwhile
                last[stream] = entry_id
        return last

    def claim_abandoned(self) -> int:
        """Take over entries that another consumer of the group read and never acknowledged."""
        handled = 0
        for stream in self.streams:
            _, entries, _ = self.redis.xautoclaim(
                stream, self.group, self.consumer, min_idle_time=CLAIM_IDLE_MS, start_id="0-0", count=BATCH
            )
            for entry_id, fields in entries:
                self.handle(stream, entry_id, fields)
                handled += 1
        return handled

    def run(self, *, drain: bool, block_ms: int) -> None:
        """Consume until interrupted, or (``drain``) until nothing new arrives within ``block_ms``."""
        self.ensure_groups()
        pending = dict.fromkeys(self.streams, "0")  # first what we read before a crash or stop
        while pending:
            pending = self.read(pending, None)
        new = dict.fromkeys(self.streams, ">")
        while True:
            claimed = self.claim_abandoned()
            if not self.read(new, block_ms) and not claimed and drain:
                return


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and consume; 1 when Redis fails."""
    parser = argparse.ArgumentParser(description="Consume busway's events with plain redis-py.")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://localhost:6379"))
    parser.add_argument("--prefix", default=os.environ.get("BUS_PREFIX", ""), help="busway's BUS_PREFIX")
    parser.add_argument("--group", default="example-subscriber", help="your service's name; never users or auth")
    parser.add_argument("--consumer", default=None, help="unique per process (default: <group>-<host>-<pid>)")
    parser.add_argument("--block-ms", type=int, default=5000, help="how long one read waits for new entries")
    parser.add_argument("--drain", action="store_true", help="exit once there is nothing new to read")
    args = parser.parse_args(argv)
    consumer = args.consumer or f"{args.group}-{socket.gethostname()}-{os.getpid()}"
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    try:
        Subscriber(client, args.prefix, args.group, consumer).run(drain=args.drain, block_ms=args.block_ms)
    except KeyboardInterrupt:
        pass
    except redis.RedisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

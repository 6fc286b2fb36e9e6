"""A subscriber of your own: every login and failed login as one JSON line in a file.

    uv run python -m examples.login_journal var/logins.jsonl

It joins the bus as consumer group ``login-journal`` (reading events.auth from its start),
and records the events it handled in Redis, so a redelivered event writes no second line.
docs/subscribers.md walks through it; tests/examples/test_login_journal.py tests it.
"""

import asyncio
import json
import sys
from pathlib import Path

from bus.subscribers import EventContext, Subscriber
from schemas import streams
from schemas.events import LoginFailed, UserLoggedIn


def login_journal(path: Path) -> Subscriber:
    """A subscriber that appends one line per login (and failed login) to ``path``."""
    subscriber = Subscriber(streams.EVENTS_AUTH)

    @subscriber.on(UserLoggedIn, LoginFailed)
    async def write(event: UserLoggedIn | LoginFailed, ctx: EventContext) -> None:
        line = {
            "event_id": ctx.event_id,
            "occurred_at": ctx.occurred_at.isoformat(),
            "type": type(event).__name__,
            "user_id": event.user_id,
            "ip": event.ip,
        }
        await asyncio.to_thread(_append, path, json.dumps(line))

    return subscriber


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as journal:
        journal.write(line + "\n")


if __name__ == "__main__":
    login_journal(Path(sys.argv[1] if len(sys.argv) > 1 else "var/logins.jsonl")).run("login-journal", once=True)

"""Redis ACLs: one Redis user per service, allowed only the keys, streams and channels it needs.

The streams come from ``schemas`` (every command stream is ``<service>.<command>``, every
event stream ``events.<service>``); what each service reads, writes and keeps is declared
in :data:`SERVICES` below. ``python -m bus.acl`` writes the ACL file Redis loads
(``--aclfile``); docs/security.md#redis-users explains it::

    uv run python -m bus.acl --prefix "" > deploy/redis/users.acl.template

Passwords: by default each user's line reads ``>@<SERVICE>_PASSWORD@``, a placeholder that
compose.yml's Redis replaces from ``REDIS_<SERVICE>_PASSWORD`` at start; ``--passwords``
fills in real ones (``service=password,...``) instead, as the tests do.
"""

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from schemas import streams
from schemas.commands import COMMANDS

HANDLER_COMMANDS = (
    "+ping",
    "+hello",
    "+client|setname",
    "+client|setinfo",
    # Acks and replies sent with the next read, without replies of their own (bus.resp.ReadConnection).
    "+client|reply",
    # The streams: read as a consumer group, claim, acknowledge, delete secrets, dead-letter.
    "+xadd",
    "+xreadgroup",
    "+xack",
    "+xautoclaim",
    "+xclaim",
    "+xpending",
    "+xgroup|create",
    "+xgroup|createconsumer",
    "+xinfo|groups",
    "+xlen",
    "+xdel",
    "+xrange",
    "+xrevrange",
    # Failures kept for dead letters, heartbeats, replies, idempotency keys and their script.
    "+hset",
    "+hget",
    "+hdel",
    "+set",
    "+get",
    "+del",
    "+exists",
    "+scan",
    "+publish",
    "+evalsha",
    "+eval",
)
"""What a handler service runs; nothing that could read or change what is not its own."""

GATEWAY_COMMANDS = (
    "+ping",
    "+hello",
    "+client|setname",
    "+client|setinfo",
    "+xadd",
    "+subscribe",
    "+unsubscribe",
    "+get",
    "+exists",
    "+scan",
    "+evalsha",
    "+eval",
    "+script|load",
)
"""The gateway sends commands, listens on its inbox, reads heartbeats and revoked sessions,
and counts rate limits and failed logins with Lua scripts (gateway/limits.py)."""

GATEWAY_COUNTER_KEYS = ("ratelimit.*", "lockout.*")
"""The rate-limit and lockout counters of gateway/limits.py (names kept there; bus imports no gateway)."""


def command_streams(service: str) -> list[str]:
    """The command streams ``service`` consumes (``<service>.<command>``)."""
    return sorted({route.stream for route in COMMANDS if route.stream.partition(".")[0] == service})


def events_of(service: str) -> str:
    """The event stream ``service`` produces."""
    return f"events.{service}"


@dataclass(frozen=True)
class Access:
    """What one service may touch in Redis (names without the deployment's prefix)."""

    service: str
    consumes: Sequence[str] = ()
    """Streams it reads in its consumer group (with their failures hash, dead letters and replays)."""
    produces: Sequence[str] = ()
    """Streams it appends to."""
    keys: Sequence[str] = ()
    """Other keys (glob patterns)."""
    channels: Sequence[str] = ()
    """Pub/Sub channels (glob patterns)."""
    commands: Sequence[str] = field(default=HANDLER_COMMANDS)


def _handler(service: str, *, reads: Iterable[str], produces: bool, keys: Sequence[str] = ()) -> Access:
    return Access(
        service,
        consumes=[*command_streams(service), *reads],
        produces=[events_of(service)] if produces else [],
        keys=[f"{streams.HEARTBEAT_PREFIX}{service}.*", *keys],
        # Replies go to the requester's inbox, whoever that is.
        channels=[f"{streams.INBOX_PREFIX}*"],
    )


SERVICES: Mapping[str, Access] = {
    "users": _handler("users", reads=[streams.EVENTS_AUTH], produces=True),
    "auth": _handler(
        "auth",
        reads=[streams.EVENTS_USERS],
        produces=True,
        keys=[f"{streams.REVOKED_SESSION_PREFIX}*"],
    ),
    "activity": _handler("activity", reads=[streams.EVENTS_AUTH, streams.EVENTS_USERS], produces=False),
    "mailer": _handler("mailer", reads=[streams.EVENTS_AUTH], produces=False, keys=["handled.mailer.*", "mailer.*"]),
    "gateway": Access(
        "gateway",
        produces=sorted({route.stream for route in COMMANDS}),
        keys=[f"{streams.HEARTBEAT_PREFIX}*", f"{streams.REVOKED_SESSION_PREFIX}*", *GATEWAY_COUNTER_KEYS],
        channels=[f"{streams.INBOX_PREFIX}gateway-*"],
        commands=GATEWAY_COMMANDS,
    ),
}
"""Every busway service's Redis user. Add a service here, or a key a service starts to use."""


def key_patterns(access: Access) -> list[str]:
    """The key patterns of ``access``, without prefix."""
    patterns: list[str] = []
    for stream in access.consumes:
        patterns += [
            stream,
            f"{stream}:failures",
            streams.dead_letters(stream),
            streams.replay_stream(access.service, stream),
        ]
    patterns += [*access.produces, *access.keys]
    return list(dict.fromkeys(patterns))


def acl_line(access: Access, prefix: str, password: str | None = None) -> str:
    """One ``user`` line of an ACL file; the password placeholder when ``password`` is None."""
    secret = password if password is not None else f"@{access.service.upper()}_PASSWORD@"
    keys = " ".join(f"~{prefix}{pattern}" for pattern in key_patterns(access))
    channels = " ".join(f"&{prefix}{pattern}" for pattern in access.channels)
    commands = " ".join(access.commands)
    return f"user {access.service} on >{secret} resetkeys {keys} resetchannels {channels} -@all {commands}"


def acl_file(prefix: str = "", passwords: Mapping[str, str] | None = None, admin_password: str | None = None) -> str:
    """The whole ACL file: the default user may only PING (health checks); one user per service; an admin."""
    # Redis refuses comments in an ACL file: docs/security.md says where this one comes from.
    lines = [
        "user default on nopass resetkeys resetchannels -@all +ping +hello",
    ]
    for access in SERVICES.values():
        lines.append(acl_line(access, prefix, (passwords or {}).get(access.service) if passwords else None))
    admin = admin_password if admin_password is not None else "@ADMIN_PASSWORD@"
    lines.append(f"user admin on >{admin} ~* &* +@all")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bus.acl [--prefix P] [--passwords users=...,auth=...]``: print the ACL file."""
    parser = argparse.ArgumentParser(prog="python -m bus.acl", description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="", help="BUS_PREFIX of the deployment")
    parser.add_argument(
        "--passwords", default=None, help="service=password,... (default: @SERVICE_PASSWORD@ placeholders)"
    )
    args = parser.parse_args(argv)
    passwords: dict[str, str] | None = None
    if args.passwords:
        passwords = {}
        for item in args.passwords.split(","):
            service, sep, password = item.partition("=")
            if not sep or service not in {*SERVICES, "admin"} or not password or " " in password:
                print(
                    f"--passwords: expected service=password for one of {', '.join(SERVICES)}, admin", file=sys.stderr
                )
                return 2
            passwords[service] = password
    admin = passwords.pop("admin", None) if passwords else None
    sys.stdout.write(acl_file(args.prefix, passwords, admin))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""busway's events read as an outsider would: plain redis-py and json, decoded with nothing
but docs/events.md (its tables and JSON schemas), against the real running system. And the
example subscriber that docs/events.md includes, run as a program."""

import asyncio
import json
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest
from redis.asyncio import Redis

from tests.e2e.conftest import PASSWORD, new_email
from tests.harness import System, eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "events.md"
SUBSCRIBER = ROOT / "docs" / "examples" / "subscriber.py"
HEX32 = re.compile(r"^[0-9a-f]{32}$")

Entries = list[tuple[str, dict[str, str]]]
"""Stream entries as redis-py returns them with decode_responses=True: (entry id, fields)."""


@dataclass(frozen=True)
class Documented:
    """What docs/events.md promises about events, read from the page itself."""

    envelope: dict[str, Any]
    versions: dict[str, int]
    streams: dict[str, str]
    payloads: dict[str, dict[str, Any]]


def read_the_doc() -> Documented:
    text = DOC.read_text(encoding="utf-8")
    table = re.findall(r"^\| \[`(\w+)`\]\(#\w+\) \| (\d+) \| `([\w.]+)` \|", text, flags=re.MULTILINE)
    blocks = re.findall(r"<summary>JSON schema of (.+?)</summary>\s*```json\n(.*?)\n```", text, flags=re.DOTALL)
    schemas = {title: json.loads(body) for title, body in blocks}
    payloads = {}
    for title, schema in schemas.items():
        match = re.fullmatch(r"the <code>(\w+)</code> v(\d+) payload", title)
        if match:
            payloads[match[1]] = schema
    return Documented(
        envelope=schemas["the envelope"],
        versions={name: int(version) for name, version, _ in table},
        streams={name: stream for name, _, stream in table},
        payloads=payloads,
    )


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    formats = jsonschema.FormatChecker()
    formats.checks("date-time", raises=ValueError)(lambda value: datetime.fromisoformat(value).tzinfo is not None)
    return jsonschema.Draft202012Validator(schema, format_checker=formats)


async def act_as_a_user(system: System, display_name: str) -> dict[str, str]:
    """Register, log in and rename through HTTP; the ids the events should carry."""
    email = new_email()
    register_id, login_id, update_id = (f"doc-{uuid.uuid4().hex[:12]}" for _ in range(3))
    registered = await system.http.post(
        "/v1/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": display_name},
        headers={"X-Request-ID": register_id},
    )
    assert registered.status_code == 201, registered.text
    login = await system.http.post(
        "/v1/auth/login", json={"email": email, "password": PASSWORD}, headers={"X-Request-ID": login_id}
    )
    assert login.status_code == 200, login.text
    renamed = await system.http.patch(
        "/v1/users/me",
        json={"display_name": f"{display_name} 2"},
        headers={"Authorization": f"Bearer {login.json()['access_token']}", "X-Request-ID": update_id},
    )
    assert renamed.status_code == 200, renamed.text
    return {
        "email": email,
        "user_id": registered.json()["id"],
        "register": register_id,
        "login": login_id,
        "update": update_id,
    }


async def test_events_read_with_plain_redis_are_what_docs_events_md_says(system: System) -> None:
    doc = read_the_doc()
    assert {"RegistrationStarted", "UserCreated", "UserUpdated"} <= set(doc.payloads)
    envelope = validator(doc.envelope)
    plain = Redis.from_url(system.bus.redis_url, decode_responses=True)
    group, consumer = "doc-reader", "doc-reader-1"
    names = {system.stream(stream): stream for stream in set(doc.streams.values())}
    try:
        for name in names:
            await plain.xgroup_create(name, group, id="0", mkstream=True)
        user = await act_as_a_user(system, "Doc Reader")
        received: list[tuple[str, dict[str, Any]]] = []
        expected = {"RegistrationStarted", "UserCreated", "RegistrationCompleted", "UserLoggedIn", "UserUpdated"}

        async def everything_arrived() -> bool:
            read = await plain.xreadgroup(group, consumer, dict.fromkeys(names, ">"), count=100, block=100)
            batches = cast(list[tuple[str, Entries]], read or [])
            for name, entries in batches:
                for entry_id, fields in entries:
                    assert list(fields) == ["__data__"]  # one field, holding the JSON envelope
                    received.append((names[name], json.loads(fields["__data__"])))
                    await plain.xack(name, group, entry_id)
            return expected <= {message["type"] for _, message in received}

        await eventually(everything_arrived, what=f"{sorted(expected)} on the event streams")
        pending = [await plain.xpending(name, group) for name in names]
    finally:
        await plain.aclose()
    assert [int(p["pending"]) for p in pending] == [0] * len(names)

    by_type: dict[str, dict[str, Any]] = {}
    for stream, message in received:
        assert list(envelope.iter_errors(message)) == []
        kind = message["type"]
        assert message["version"] == doc.versions[kind]
        assert stream == doc.streams[kind]
        assert message["producer"] == stream.removeprefix("events.")
        assert HEX32.match(message["id"])
        assert list(validator(doc.payloads[kind]).iter_errors(message["payload"])) == []
        assert message["payload"]["user_id"] == user["user_id"]
        by_type[kind] = message
    assert len({message["id"] for _, message in received}) == len(received)

    started, created = by_type["RegistrationStarted"], by_type["UserCreated"]
    completed = by_type["RegistrationCompleted"]
    assert started["payload"]["email"] == created["payload"]["email"] == user["email"]
    assert {started["correlation_id"], created["correlation_id"], completed["correlation_id"]} == {user["register"]}
    assert created["causation_id"] == started["id"]
    assert completed["causation_id"] == created["id"]
    assert created["payload"]["registration_id"] == started["payload"]["registration_id"]
    assert by_type["UserLoggedIn"]["correlation_id"] == user["login"]
    assert by_type["UserLoggedIn"]["payload"]["session_id"]
    assert by_type["UserUpdated"]["correlation_id"] == user["update"]
    assert by_type["UserUpdated"]["payload"]["changes"] == {"display_name": "Doc Reader 2"}


async def run_subscriber(system: System, group: str) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SUBSCRIBER),
        "--redis-url",
        system.bus.redis_url,
        "--prefix",
        system.prefix,
        "--group",
        group,
        "--drain",
        "--block-ms",
        "200",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert err == b""
    return out.decode().splitlines()


async def test_the_example_subscriber_handles_skips_and_deduplicates_real_events(system: System) -> None:
    user = await act_as_a_user(system, "Example")
    raw = Redis.from_url(system.bus.redis_url, decode_responses=True)
    auth, users = system.stream("events.auth"), system.stream("events.users")
    try:

        async def published() -> dict[str, dict[str, Any]] | None:
            entries = cast(Entries, await raw.xrange(auth)) + cast(Entries, await raw.xrange(users))
            found = {message["type"]: message for message in (json.loads(f["__data__"]) for _, f in entries)}
            return found if {"RegistrationCompleted", "UserLoggedIn", "UserUpdated"} <= set(found) else None

        found = await eventually(published, what="the user's events on the streams")
        login = found["UserLoggedIn"]
        await raw.xadd(auth, {"__data__": json.dumps(login)})  # delivered twice
        future = {**login, "id": uuid.uuid4().hex, "type": "FutureEvent"}
        await raw.xadd(auth, {"__data__": json.dumps(future)})
        newer = {**found["UserUpdated"], "id": uuid.uuid4().hex, "version": 2}
        await raw.xadd(users, {"__data__": json.dumps(newer)})

        lines = await run_subscriber(system, "example")
        pending = [int((await raw.xpending(stream, "example"))["pending"]) for stream in (auth, users)]
    finally:
        await raw.aclose()

    completed = found["RegistrationCompleted"]
    assert (
        f"handled RegistrationCompleted v1 {completed['id']}: welcome {user['user_id']} "
        f"(correlation {user['register']})"
    ) in lines
    assert f"handled UserLoggedIn v1 {login['id']}: user {user['user_id']} logged in (session " in "\n".join(lines)
    assert f"duplicate UserLoggedIn v1 {login['id']}" in lines
    assert f"skipped RegistrationStarted v1 {found['RegistrationStarted']['id']}" in lines
    assert f"skipped FutureEvent v1 {future['id']}" in lines
    assert f"skipped UserUpdated v2 {newer['id']}" in lines
    assert (
        f"handled UserUpdated v1 {found['UserUpdated']['id']}: user {user['user_id']} changed display_name "
        f"(correlation {user['update']})"
    ) in lines
    assert pending == [0, 0]
    assert await run_subscriber(system, "example") == []  # everything was acknowledged

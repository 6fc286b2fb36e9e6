"""`busway import-legacy`: the monolith's users log in to busway with their old passwords."""

import asyncio
import json
import random
import sqlite3
import sys
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from sqlmodel import col, select

from handlers.auth.models import Credential
from handlers.auth.models import Outbox as AuthOutbox
from handlers.users.models import Outbox as UsersOutbox
from handlers.users.models import Profile
from tests.e2e.conftest import register_and_login
from tests.harness import SIGNING_KEY, System, eventually
from tests.integration.test_events import read_plain

pytestmark = pytest.mark.e2e

OLD_PASSWORD = "hunter2-from-2016"


def bcrypt_hash(password: str) -> str:
    """A hash as the monolith's bcryptjs made it (cost 4: these are tests)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4, prefix=b"2a")).decode()


def legacy_database(path: Path, rows: list[tuple[Any, ...]]) -> None:
    """The monolith's SQLite schema: users(id, username, email, password, created_at)."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT, email TEXT, "
            "password TEXT, created_at DATETIME DEFAULT CURRENT_TIMESTAMP)"
        )
        db.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?)", rows)
    db.close()


async def import_legacy(system: System, legacy: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    """Run ``busway import-legacy`` as a user would: exit status, the JSON summary, the report."""
    env = {
        "USERS_DATABASE_URL": system.databases.users_url,
        "AUTH_DATABASE_URL": system.databases.auth_url,
        "AUTH_SIGNING_KEY": SIGNING_KEY,
        "BUSWAY_ENV": "test",
        "PATH": "",
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from bus.cli import main; main()", "import-legacy", "--sqlite", str(legacy), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await child.communicate()
    summary = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    return child.returncode or 0, summary, err.decode()


async def test_legacy_users_are_imported_once_and_log_in_with_their_old_passwords(
    system: System, tmp_path: Path
) -> None:
    base = random.randrange(1, 10**9) * 100
    taken = await register_and_login(system)  # a busway user whose email the monolith also has
    hashed = bcrypt_hash(OLD_PASSWORD)
    tag = str(base)
    legacy = tmp_path / "legacy.db"
    legacy_database(
        legacy,
        [
            (base + 1, "ada", f"Ada-{tag}@Example.com", hashed, "2016-03-01 10:00:00"),
            (base + 2, "grace", f"grace-{tag}@example.com", hashed, 1467331200000),  # Date.now() milliseconds
            (base + 3, "", f"linus-{tag}@example.com", hashed, None),
            (base + 4, "bad", "not-an-email", hashed, "2017-01-01"),
            (base + 5, "nohash", f"nohash-{tag}@example.com", None, "2017-01-01"),
            (base + 6, "md5", f"md5-{tag}@example.com", "5f4dcc3b5aa765d61d8327deb882cf99", "2017-01-01"),
            (base + 7, "ada2", f"ada-{tag}@example.com", hashed, "2018-01-01"),
            (base + 8, "clash", taken.email, hashed, "2018-01-01"),
        ],
    )

    status, summary, report = await import_legacy(system, legacy)
    assert status == 0, report
    assert summary["imported"] == 3
    assert summary["skipped"] == 0
    assert {(row["legacy_id"], row["reason"]) for row in summary["invalid"]} == {
        (str(base + 4), "bad email"),
        (str(base + 5), "missing hash"),
        (str(base + 6), "non-bcrypt hash"),
        (str(base + 7), "duplicate email"),
        (str(base + 8), "duplicate email"),
    }
    assert "imported" in report
    assert f"invalid: legacy id {base + 6}: non-bcrypt hash" in report

    async with system.sessions("users")() as session:
        profiles = {
            p.email: p
            for p in (await session.exec(select(Profile).where(col(Profile.email).like(f"%-{tag}@example.com")))).all()
        }
    assert set(profiles) == {f"ada-{tag}@example.com", f"grace-{tag}@example.com", f"linus-{tag}@example.com"}
    ada = profiles[f"ada-{tag}@example.com"]
    assert ada.display_name == "ada"
    assert ada.created_at.isoformat().startswith("2016-03-01T10:00:00")
    assert profiles[f"grace-{tag}@example.com"].created_at.isoformat().startswith("2016-07-01T00:00:00")
    assert profiles[f"linus-{tag}@example.com"].display_name == f"linus-{tag}"
    user_ids = [p.id for p in profiles.values()]
    async with system.sessions("auth")() as session:
        credential = await session.get(Credential, ada.id)
    assert credential is not None
    assert credential.password_hash == hashed
    assert credential.status == "active"

    # Subscribers see the imported users: one event per user per service on the bus.
    async def published() -> set[str] | None:
        events = await read_plain(system.bus.redis_url, system.stream("events.users"))
        imported = {e["payload"]["user_id"] for e in events if e["type"] == "UserImported"}  # type: ignore[index]
        return imported if imported == set(user_ids) else None

    await eventually(published, what="a UserImported event per imported user on events.users")

    async def outbox_rows() -> tuple[int, int]:
        async with system.sessions("users")() as users, system.sessions("auth")() as auth:
            u = await users.exec(select(UsersOutbox.id).where(col(UsersOutbox.subject).in_(user_ids)))
            a = await auth.exec(select(AuthOutbox.id).where(col(AuthOutbox.subject).in_(user_ids)))
            return len(u.all()), len(a.all())

    assert await outbox_rows() == (3, 3)

    # Again: nothing changes.
    status, summary, report = await import_legacy(system, legacy)
    assert status == 0, report
    assert (summary["imported"], summary["skipped"], len(summary["invalid"])) == (0, 3, 5)
    assert await outbox_rows() == (3, 3)

    # The old password works through the gateway, and the bcrypt hash becomes argon2.
    login = await system.http.post("/v1/auth/login", json={"email": f"ADA-{tag}@example.com", "password": OLD_PASSWORD})
    assert login.status_code == 200, login.text
    me = await system.http.get("/v1/users/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == ada.id
    async with system.sessions("auth")() as session:
        upgraded = await session.get(Credential, ada.id)
    assert upgraded is not None
    assert upgraded.password_hash.startswith("$argon2")
    wrong = await system.http.post("/v1/auth/login", json={"email": f"ada-{tag}@example.com", "password": "nope-nope"})
    assert wrong.status_code == 401

    # Dual run: someone registers on the monolith after the import; a re-import adds only them.
    legacy_database(legacy, [(base + 9, "late", f"late-{tag}@example.com", bcrypt_hash("late-comer-1"), "2026-11-01")])
    status, summary, report = await import_legacy(system, legacy)
    assert status == 0, report
    assert (summary["imported"], summary["skipped"]) == (1, 3)
    late = await system.http.post(
        "/v1/auth/login", json={"email": f"late-{tag}@example.com", "password": "late-comer-1"}
    )
    assert late.status_code == 200, late.text


async def test_a_dry_run_writes_nothing_and_a_bad_file_is_one_clear_line(system: System, tmp_path: Path) -> None:
    base = random.randrange(1, 10**9) * 100
    legacy = tmp_path / "legacy.db"
    legacy_database(legacy, [(base + 1, "dry", f"dry-{base}@example.com", bcrypt_hash("dry-run-pw"), None)])
    status, summary, report = await import_legacy(system, legacy, "--dry-run")
    assert status == 0, report
    assert (summary["imported"], summary["would_import"]) == (0, 1)
    async with system.sessions("users")() as session:
        found = await session.exec(select(Profile).where(Profile.email == f"dry-{base}@example.com"))
        assert found.first() is None

    mapping = tmp_path / "mapping.json"
    mapping.write_text('{"table": "accounts"}')
    status, summary, report = await import_legacy(system, legacy, "--mapping", str(mapping))
    assert status == 1
    assert "has no table 'accounts'" in report
    assert "Traceback" not in report

    status, _, report = await import_legacy(system, tmp_path / "missing.db")
    assert status == 2
    assert "no such file" in report
    assert "Traceback" not in report


async def test_a_mapping_file_reads_other_column_names(system: System, tmp_path: Path) -> None:
    base = random.randrange(1, 10**9) * 100
    legacy = tmp_path / "accounts.db"
    with sqlite3.connect(legacy) as db:
        db.execute("CREATE TABLE accounts (uid INTEGER PRIMARY KEY, login TEXT, mail TEXT, hash TEXT, joined TEXT)")
        db.execute(
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?)",
            (base + 1, "mapped", f"mapped-{base}@example.com", bcrypt_hash("mapped-pw-1"), "2015-05-05T05:05:05Z"),
        )
    db.close()
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        '{"table": "accounts", "id": "uid", "username": "login", "email": "mail", "password": "hash", '
        '"created_at": "joined"}'
    )
    status, summary, report = await import_legacy(system, legacy, "--mapping", str(mapping))
    assert status == 0, report
    assert summary["imported"] == 1
    login = await system.http.post(
        "/v1/auth/login", json={"email": f"mapped-{base}@example.com", "password": "mapped-pw-1"}
    )
    assert login.status_code == 200, login.text


async def test_an_import_stopped_half_way_is_finished_by_running_it_again(system: System, tmp_path: Path) -> None:
    base = random.randrange(1, 10**9) * 100
    email = f"halfway-{base}@example.com"
    legacy = tmp_path / "legacy.db"
    legacy_database(legacy, [(base + 1, "halfway", email, bcrypt_hash("halfway-pw-1"), "2019-09-09")])
    # The users step ran, then the import died before auth: a profile, no credential.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "handlers.users", "import-legacy", str(legacy),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"USERS_DATABASE_URL": system.databases.users_url, "BUSWAY_ENV": "test", "PATH": ""},
    )  # fmt: skip
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    assert json.loads(out.decode().strip().splitlines()[-1])["outcome"] == "imported"
    refused = await system.http.post("/v1/auth/login", json={"email": email, "password": "halfway-pw-1"})
    assert refused.status_code == 401  # no credential: the user cannot log in to half an account

    status, summary, report = await import_legacy(system, legacy)
    assert status == 0, report
    assert (summary["imported"], summary["skipped"], summary["incomplete"]) == (1, 0, [])
    login = await system.http.post("/v1/auth/login", json={"email": email, "password": "halfway-pw-1"})
    assert login.status_code == 200, login.text

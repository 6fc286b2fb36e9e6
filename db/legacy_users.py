"""The monolith's users, read from its SQLite file: one reader both services' import commands share.

The monolith (Node/Express + SQLite) kept its users in one table. Both the users and the
auth service read the same file the same way, so they agree on which rows are valid and on
each user's busway id: ``user_id_of(legacy_id)`` is derived from the legacy id, so running
an import again finds the users it already made instead of making new ones.
"""

import argparse
import json
import os
import re
import sqlite3
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from db.engine import SessionFactory, create_engine, session_factory
from schemas.envelope import Trace
from schemas.fields import DisplayName, Email

LEGACY_NAMESPACE = uuid.UUID("6c0f1f8e-6d1c-4f3e-9a53-3b8d1c2f0b7e")
"""Namespace of the ids made from legacy ids: the same legacy id is always the same busway id."""

BCRYPT = re.compile(r"^\$2[abxy]\$\d{2}\$[./A-Za-z0-9]{53}$")
_EMAIL: TypeAdapter[str] = TypeAdapter(Email)
_NAME: TypeAdapter[str] = TypeAdapter(DisplayName)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LegacyImportError(Exception):
    """The legacy file or the mapping cannot be used at all (not one bad row: those are reported)."""


class LegacyMapping(BaseModel):
    """Where the monolith keeps each field: its table and column names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    table: str = "users"
    id: str = "id"
    username: str = "username"
    email: str = "email"
    password: str = Field(default="password", description="The bcrypt hash column.")
    created_at: str = "created_at"

    @classmethod
    def from_file(cls, path: Path) -> "LegacyMapping":
        """A mapping from a JSON file, e.g. ``{"table": "accounts", "password": "password_hash"}``."""
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except OSError as exc:
            msg = f"cannot read the mapping {path}: {exc.strerror or exc}"
            raise LegacyImportError(msg) from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'mapping'}: {e['msg']}" for e in exc.errors())
            msg = f"the mapping {path} is not valid: {problems}"
            raise LegacyImportError(msg) from None

    def names(self) -> list[str]:
        """Every table and column name, checked before they go into SQL."""
        return [self.table, self.id, self.username, self.email, self.password, self.created_at]


@dataclass(frozen=True)
class LegacyUser:
    """One valid legacy user, as busway will know them."""

    legacy_id: str
    user_id: str
    email: str
    display_name: str
    password_hash: str
    created_at: datetime


@dataclass(frozen=True)
class InvalidRow:
    """A legacy row that cannot be imported, and why."""

    legacy_id: str
    reason: str


def user_id_of(legacy_id: str) -> str:
    """The busway user id of the legacy user ``legacy_id``: the same on every run and in every service."""
    return uuid.uuid5(LEGACY_NAMESPACE, f"legacy-user:{legacy_id}").hex


def _created_at(value: Any, now: datetime) -> datetime:
    if value is None or value == "":
        return now
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Node's Date.now() is milliseconds; a Unix timestamp in seconds is smaller than 1e11.
        seconds = value / 1000 if abs(value) >= 1e11 else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return _created_at(float(text), now)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # SQLite's CURRENT_TIMESTAMP is UTC without an offset.
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise ValueError(value)


def _row(raw: sqlite3.Row, mapping: LegacyMapping, now: datetime) -> LegacyUser | InvalidRow:
    legacy_id = str(raw[mapping.id])
    email_value = raw[mapping.email]
    try:
        email = _EMAIL.validate_python(str(email_value or "").strip())
    except ValidationError:
        return InvalidRow(legacy_id, "bad email")
    password = raw[mapping.password]
    if password is None or not str(password).strip():
        return InvalidRow(legacy_id, "missing hash")
    password = str(password).strip()
    if not BCRYPT.fullmatch(password):
        return InvalidRow(legacy_id, "non-bcrypt hash")
    try:
        created_at = _created_at(raw[mapping.created_at], now)
    except (ValueError, OverflowError, OSError):
        return InvalidRow(legacy_id, "bad created_at")
    username = str(raw[mapping.username] or "").strip()[:100]
    try:
        display_name = _NAME.validate_python(username)
    except ValidationError:
        # No usable username: the part of the email before the @ is a name the user knows.
        display_name = email.split("@", 1)[0][:100]
    return LegacyUser(legacy_id, user_id_of(legacy_id), email, display_name, password, created_at)


def read_legacy_users(path: Path, mapping: LegacyMapping | None = None) -> list[LegacyUser | InvalidRow]:
    """Every row of the monolith's users table, in legacy id order, each valid or with its reason.

    Of rows sharing an email (compared case-insensitively), the first is kept and the
    others are ``duplicate email``: busway allows one account per email.
    """
    mapping = mapping or LegacyMapping()
    for name in mapping.names():
        if not _IDENTIFIER.fullmatch(name):
            msg = f"{name!r} is not a table or column name"
            raise LegacyImportError(msg)
    if not path.is_file():
        msg = f"no such file: {path}"
        raise LegacyImportError(msg)
    try:
        # Read-only: the monolith may still be running on this file (dual run).
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        msg = f"cannot open {path}: {exc}"
        raise LegacyImportError(msg) from None
    try:
        connection.row_factory = sqlite3.Row
        try:
            columns = {row[1] for row in connection.execute(f'PRAGMA table_info("{mapping.table}")')}
        except sqlite3.DatabaseError as exc:
            msg = f"{path} is not a SQLite database: {exc}"
            raise LegacyImportError(msg) from None
        if not columns:
            msg = f"{path} has no table {mapping.table!r} (see --mapping)"
            raise LegacyImportError(msg)
        missing = [c for c in mapping.names()[1:] if c not in columns]
        if missing:
            msg = f"table {mapping.table!r} has no column {', '.join(map(repr, missing))} (see --mapping)"
            raise LegacyImportError(msg)
        selected = ", ".join(f'"{c}"' for c in mapping.names()[1:])
        # Names, not values: each checked as an identifier above and found among the table's columns.
        query = f'SELECT {selected} FROM "{mapping.table}" ORDER BY "{mapping.id}"'  # noqa: S608
        rows = connection.execute(query).fetchall()
    finally:
        connection.close()
    now = datetime.now(UTC)
    result: list[LegacyUser | InvalidRow] = []
    seen_emails: set[str] = set()
    for raw in rows:
        row = _row(raw, mapping, now)
        if isinstance(row, LegacyUser):
            if row.email in seen_emails:
                row = InvalidRow(row.legacy_id, "duplicate email")
            else:
                seen_emails.add(row.email)
        result.append(row)
    return result


def report_line(legacy_id: str, outcome: str, reason: str | None = None) -> str:
    """One line of an import command's report: JSON, one row per line."""
    return json.dumps({"legacy_id": legacy_id, "outcome": outcome, "reason": reason})


Report = Callable[[str, str, str | None], None]
"""Called once per row: legacy id, outcome (new, imported, present, conflict, invalid), reason."""

Importer = Callable[[SessionFactory, Sequence[LegacyUser], bool, Trace, Report], Awaitable[None]]
"""A service's import: for each user, ``present``, ``conflict`` or (``new`` on a check | ``imported``)."""


@dataclass(frozen=True)
class ImportOptions:
    """The arguments of ``python -m handlers.<service> import-legacy``."""

    file: Path
    mapping: LegacyMapping
    check: bool
    only: frozenset[str] | None
    report_fd: int | None
    correlation_id: str


def parse_import_arguments(argv: Sequence[str], prog: str) -> ImportOptions:
    """Parse the import command's arguments; a bad one is a usage line and exit 2."""
    parser = argparse.ArgumentParser(prog=prog, description="Import the legacy monolith's users into this service.")
    parser.add_argument("file", type=Path, help="the monolith's SQLite database")
    parser.add_argument("--mapping", type=Path, help="JSON file naming the legacy table and columns")
    parser.add_argument("--check", action="store_true", help="write nothing; say what would happen to each row")
    parser.add_argument("--only", type=Path, help="a file of legacy ids, one per line: import only these")
    parser.add_argument("--report-fd", type=int, help="write the JSON-lines report to this file descriptor")
    parser.add_argument("--correlation-id", default=None, help="the correlation id of the events (default: new)")
    args = parser.parse_args(list(argv))
    try:
        mapping = LegacyMapping.from_file(args.mapping) if args.mapping else LegacyMapping()
        only = frozenset(args.only.read_text(encoding="utf-8").split()) if args.only else None
    except (LegacyImportError, OSError) as exc:
        parser.error(str(exc))
    return ImportOptions(
        file=args.file,
        mapping=mapping,
        check=args.check,
        only=only,
        report_fd=args.report_fd,
        correlation_id=args.correlation_id or uuid.uuid4().hex,
    )


async def run_import(options: ImportOptions, database_url: str, importer: Importer) -> int:
    """Read the legacy file, give its valid rows to ``importer``, report every row; the exit status."""
    try:
        rows = read_legacy_users(options.file, options.mapping)
    except LegacyImportError as exc:
        print(f"import-legacy: {exc}", file=sys.stderr)
        return 2
    out = os.fdopen(options.report_fd, "w", buffering=1) if options.report_fd is not None else sys.stdout

    def report(legacy_id: str, outcome: str, reason: str | None = None) -> None:
        out.write(report_line(legacy_id, outcome, reason) + "\n")
        out.flush()

    wanted = [row for row in rows if options.only is None or row.legacy_id in options.only]
    for row in wanted:
        if isinstance(row, InvalidRow):
            report(row.legacy_id, "invalid", row.reason)
    engine = create_engine(database_url, pool_size=2)
    try:
        users = [row for row in wanted if isinstance(row, LegacyUser)]
        await importer(
            session_factory(engine), users, not options.check, Trace(correlation_id=options.correlation_id), report
        )
    finally:
        await engine.dispose()
        if out is not sys.stdout:
            out.close()
    return 0

"""Reading the monolith's SQLite users: validation, dates, mappings, clear errors."""

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from db.legacy_users import InvalidRow, LegacyImportError, LegacyMapping, LegacyUser, read_legacy_users, user_id_of

HASH = "$2b$04$" + "a" * 53


def _legacy(path: Path, rows: list[tuple[object, ...]]) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT, email TEXT, password TEXT, created_at)")
        db.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?)", rows)
    db.close()
    return path


def test_rows_are_validated_and_dates_read_in_every_form_the_monolith_used(tmp_path: Path) -> None:
    legacy = _legacy(
        tmp_path / "legacy.db",
        [
            (1, " Ann ", "Ann@Example.com", HASH, "2016-03-01 10:00:00"),
            (2, "bob", "bob@example.com", HASH, 1467331200000),
            (3, "cy", "cy@example.com", HASH, "2017-01-01T00:00:00+02:00"),
            (4, "dee", "dee@example.com", HASH, "yesterday"),
            (5, "\x00", "eve@example.com", HASH, 1467331200),
        ],
    )
    rows = read_legacy_users(legacy)
    ann, bob, cy, dee, eve = rows
    assert isinstance(ann, LegacyUser)
    assert (ann.email, ann.display_name, ann.user_id) == ("ann@example.com", "Ann", user_id_of("1"))
    assert ann.created_at == datetime(2016, 3, 1, 10, tzinfo=UTC)
    assert isinstance(bob, LegacyUser)
    assert bob.created_at == datetime(2016, 7, 1, tzinfo=UTC)
    assert isinstance(cy, LegacyUser)
    assert cy.created_at == datetime(2016, 12, 31, 22, tzinfo=UTC)
    assert dee == InvalidRow("4", "bad created_at")
    assert isinstance(eve, LegacyUser)
    assert (eve.display_name, eve.created_at) == ("eve", datetime(2016, 7, 1, tzinfo=UTC))
    assert user_id_of("1") == user_id_of("1") != user_id_of("2")


def test_a_file_or_mapping_that_does_not_fit_is_one_clear_error(tmp_path: Path) -> None:
    legacy = _legacy(tmp_path / "legacy.db", [])
    with pytest.raises(LegacyImportError, match="has no column 'hash'"):
        read_legacy_users(legacy, LegacyMapping(password="hash"))
    with pytest.raises(LegacyImportError, match="is not a table or column name"):
        read_legacy_users(legacy, LegacyMapping(table='users"; DROP TABLE users; --'))
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello " * 100)
    with pytest.raises(LegacyImportError, match="not a SQLite database"):
        read_legacy_users(not_sqlite)
    mapping = tmp_path / "mapping.json"
    mapping.write_text('{"tabel": "accounts"}')
    with pytest.raises(LegacyImportError, match="tabel"):
        LegacyMapping.from_file(mapping)

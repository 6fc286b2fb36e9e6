"""Telling a database outage (retry later, 503) from a bug or bad data (500, dead letter)."""

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError

from db.engine import is_outage


def wrapped(error: Exception, *, invalidated: bool = False) -> DBAPIError:
    """An error as SQLAlchemy raises it: the driver's error as ``orig``, raised from it."""
    outer = DBAPIError("SELECT 1", {}, error, connection_invalidated=invalidated)
    outer.__cause__ = error
    return outer


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is starting up")),
        wrapped(asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")),
        wrapped(asyncpg.InterfaceError("connection is closed")),
        wrapped(ValueError("anything"), invalidated=True),
        TimeoutError(),
    ],
)
def test_outages_are_recognised(error: Exception) -> None:
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad data"),
        IntegrityError("INSERT", {}, Exception("duplicate key")),
        wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key")),
        RuntimeError("a bug"),
    ],
)
def test_other_failures_are_not_outages(error: Exception) -> None:
    assert not is_outage(error)

"""examples/login_journal.py beside the running system: one line per login, however often delivered."""

import json
from pathlib import Path
from typing import Any

import pytest

from bus.subscribers import EventContext
from examples.login_journal import login_journal
from schemas.events import UserLoggedIn
from tests.e2e.conftest import register_and_login
from tests.harness import System, eventually


async def test_a_login_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "logins.jsonl"
    event = UserLoggedIn(user_id="u1", session_id="s1", ip="10.0.0.1")
    assert await login_journal(path).dispatch(event, EventContext("e1"))
    assert json.loads(path.read_text())["ip"] == "10.0.0.1"


@pytest.mark.e2e
async def test_the_journal_gets_one_line_per_login_and_failed_login(system: System, tmp_path: Path) -> None:
    path = tmp_path / "logins.jsonl"
    journal = login_journal(path).runtime("login-journal", system.bus, once=True)
    await journal.start()
    try:
        account = await register_and_login(system)
        wrong = await system.http.post("/v1/auth/login", json={"email": account.email, "password": "wrong one!"})
        assert wrong.status_code == 401

        async def two_lines() -> list[dict[str, Any]] | None:
            lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
            mine = [line for line in lines if line["user_id"] == account.user_id]
            return mine if len(mine) == 2 else None

        login, failed = await eventually(two_lines, what="two journal lines")
        assert (login["type"], failed["type"]) == ("UserLoggedIn", "LoginFailed")
        assert failed["ip"] == "127.0.0.1"

        await system.deliver_again("events.auth", login["event_id"])
        await eventually(lambda: system.caught_up("login-journal", "events.auth"), what="the copy to be handled")
        assert len(path.read_text().splitlines()) == 2
    finally:
        await journal.stop()

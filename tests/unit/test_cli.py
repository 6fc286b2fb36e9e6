"""The busway command line: clear answers for bad arguments and a missing Redis."""

import pytest
from typer.testing import CliRunner

from bus.cli import app

runner = CliRunner()


def test_run_refuses_an_unknown_service() -> None:
    result = runner.invoke(app, ["run", "billing"])
    assert result.exit_code == 2
    assert "unknown service" in result.output


def test_migrate_refuses_a_service_without_a_database() -> None:
    result = runner.invoke(app, ["migrate", "gateway"])
    assert result.exit_code == 2
    assert "has no database" in result.output


def test_up_says_how_to_get_redis_when_there_is_none(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")
    monkeypatch.setenv("PATH", "")
    monkeypatch.chdir(str(tmp_path))
    result = runner.invoke(app, ["up"])
    assert result.exit_code == 1
    assert "docker compose up -d redis" in result.output
    assert "REDIS_URL=redis://127.0.0.1:1" in result.output

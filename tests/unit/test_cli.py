"""The busway command line: clear answers for bad arguments and a missing Redis."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.cli import METRICS_PORTS, MODULES, app, metrics_port_defaults

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


def test_migrate_refuses_the_mailer_which_keeps_no_database() -> None:
    result = runner.invoke(app, ["migrate", "mailer"])
    assert result.exit_code == 2
    assert "has no database" in result.output
    assert "activity" in result.output


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [("activity", "ACTIVITY_DATABASE_URL", "garbage"), ("mailer", "MAILER_RESET_URL", "https://example.com/no-token")],
)
def test_the_subscriber_services_run_and_name_a_bad_setting(service: str, variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", MODULES[service], "serve"],
        env={variable: value, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{variable}:" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_gives_each_handler_a_metrics_port_unless_one_is_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in METRICS_PORTS:
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    assert metrics_port_defaults(env_file) == {
        "USERS_METRICS_PORT": "9101",
        "AUTH_METRICS_PORT": "9102",
        "ACTIVITY_METRICS_PORT": "9103",
        "MAILER_METRICS_PORT": "9104",
    }
    assert len(set(METRICS_PORTS.values())) == len(METRICS_PORTS)
    env_file.write_text("AUTH_METRICS_PORT=9300\nMAILER_METRICS_PORT=9400\n")
    monkeypatch.setenv("USERS_METRICS_PORT", "9200")
    assert metrics_port_defaults(env_file) == {"ACTIVITY_METRICS_PORT": "9103"}
    monkeypatch.setenv("ACTIVITY_METRICS_PORT", "9500")
    assert metrics_port_defaults(env_file) == {}

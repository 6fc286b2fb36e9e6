"""The busway command line: clear answers for bad arguments and a missing Redis."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.cli import METRICS_PORTS, MODULES, app, metrics_port_defaults
from handlers.auth.keys import generate_pem

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


def _rotate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from bus.cli import main; main()", "rotate-keys", *args],
        env={"PATH": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rotate_keys_adds_a_signing_key_and_retires_an_old_one(tmp_path: Path) -> None:
    env = {"AUTH_SIGNING_KEYS_DIR": str(tmp_path)}
    first = _rotate(env)
    second = _rotate(env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert len(list(tmp_path.glob("*.pem"))) == 2
    old_kid = first.stdout.split("(kid ")[1].split(")")[0]
    new_kid = second.stdout.split("(kid ")[1].split(")")[0]

    refused = _rotate(env, "--retire", new_kid)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"rotate-key: key {new_kid} is the newest and signs new tokens; rotate first, retire it later"
    )
    retired = _rotate(env, "--retire", old_kid)
    assert retired.returncode == 0, retired.stderr
    assert len(list(tmp_path.glob("*.pem"))) == 1


@pytest.mark.parametrize(
    ("fixed_key", "args", "message"),
    [
        (True, (), "rotate-key: AUTH_SIGNING_KEY is set"),
        (False, ("--retire", "nope"), "rotate-key: no signing key 'nope'"),
    ],
)
def test_rotate_keys_errors_are_one_clear_line(
    tmp_path: Path, fixed_key: bool, args: tuple[str, ...], message: str
) -> None:
    env = {"AUTH_SIGNING_KEYS_DIR": str(tmp_path)}
    if fixed_key:
        env["AUTH_SIGNING_KEY"] = generate_pem().decode()
    result = _rotate(env, *args)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr

"""Configuration: bad values are reported by variable name; production needs real keys."""

import subprocess
import sys

import pydantic
import pytest

from bus.broker import Consumer
from bus.middleware import deadline_passed
from bus.process import settings_error
from bus.settings import BusSettings
from handlers.activity.settings import ActivitySettings
from handlers.auth.settings import AuthSettings
from handlers.mailer.settings import MailerSettings
from handlers.users.settings import UsersSettings


def test_production_refuses_to_start_without_signing_keys() -> None:
    bus = BusSettings(signing_key="s" * 40, trusted_keys={"gateway": ["g" * 40]}, _env_file=None)  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError, match="AUTH_SIGNING_KEY") as caught:
        AuthSettings(environment="production", bus=bus, _env_file=None)
    report = settings_error(caught.value, "AUTH_")
    assert "AUTH_SIGNING_KEY or AUTH_SIGNING_KEYS_DIR must be set in production" in report
    assert "AUTH_:" not in report


def test_settings_errors_name_the_environment_variable() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        UsersSettings(database_pool_size=0, _env_file=None)
    report = settings_error(caught.value, "USERS_")
    assert "USERS_DATABASE_POOL_SIZE" in report
    assert "Traceback" not in report


def test_the_activity_service_and_the_mailer_read_their_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIVITY_METRICS_PORT", "9103")
    monkeypatch.setenv("MAILER_METRICS_PORT", "9104")
    monkeypatch.setenv("MAILER_METRICS_HOST", "0.0.0.0")
    assert ActivitySettings(_env_file=None).metrics_port == 9103
    mailer = MailerSettings(_env_file=None)
    assert (mailer.metrics_port, mailer.metrics_host) == (9104, "0.0.0.0")
    monkeypatch.setenv("MAILER_METRICS_PORT", "70000")
    with pytest.raises(pydantic.ValidationError) as caught:
        MailerSettings(_env_file=None)
    assert "MAILER_METRICS_PORT" in settings_error(caught.value, "MAILER_")


@pytest.mark.parametrize(("variable", "value"), [("BUS_PREFIX", "a b"), ("LOG_FORMAT", "xml")])
def test_shared_bus_settings_errors_name_their_own_variable(variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "handlers.auth", "serve"],
        env={variable: value, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{variable}:" in result.stderr
    assert "AUTH_" not in result.stderr


@pytest.mark.parametrize(
    ("module", "variable", "value", "says"),
    [
        ("handlers.users", "USERS_DATABASE_URL", "garbage", "not a database URL"),
        ("handlers.users", "USERS_DATABASE_URL", "postgresql://db/users", "postgresql+asyncpg"),
        ("handlers.auth", "REDIS_URL", "foo", "redis://"),
        ("handlers.auth", "AUTH_SIGNING_KEY", "not a key", "not a PEM private key"),
    ],
)
def test_unusable_urls_and_keys_are_reported_not_crashed_on(module: str, variable: str, value: str, says: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "serve"],
        env={variable: value, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Invalid configuration" in result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_a_service_with_a_bad_setting_exits_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "handlers.users", "serve"],
        env={"USERS_DATABASE_POOL_SIZE": "zero", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "USERS_DATABASE_POOL_SIZE" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_command_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "handlers.auth", "explode"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "usage" in result.stderr


def test_deadlines() -> None:
    assert deadline_passed({"deadline": "1000"}, now_ms=2000)
    assert not deadline_passed({"deadline": "3000"}, now_ms=2000)
    assert not deadline_passed({}, now_ms=2000)
    assert not deadline_passed({"deadline": "soon"}, now_ms=2000)


def test_idle_reads_block_long_and_claimers_look_often_enough_for_a_hand_back() -> None:
    """A new entry wakes a blocked read at once, so reads may block long; the claimers must look
    often enough that what a stopping instance hands back (``Consumer.release``) is taken well
    within a command's deadline."""
    settings = BusSettings(prefix="p:", _env_file=None)
    consumer = Consumer(settings, "users", "users-1")
    stream = consumer.stream("users.get")
    assert stream.polling_interval == settings.polling_interval_ms == 5000
    assert consumer.claimer(stream).polling_interval == settings.claim_interval_ms == 1000
    assert settings.claim_interval_ms / 1000 < settings.request_timeout / 2

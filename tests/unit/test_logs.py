"""LOG_FORMAT=json: one flat JSON object per line, stdlib loggers included."""

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

SCRIPT = textwrap.dedent(
    """
    import logging
    from loguru import logger
    from bus.correlation import correlated
    from bus.logs import configure_logging, stdlib_logger

    configure_logging("users", "json", "INFO", "users-host-42")
    logger.info("started")
    with correlated("corr-1", service="users", message_id="m-1", type="GetUser"):
        logger.info("handled {}", "users.get", outcome="ok", duration_ms=1.5)
        logging.getLogger("uvicorn.error").warning("from uvicorn")
        logging.getLogger("litestar").warning("from litestar")
        logging.getLogger("faststream").warning("from faststream")
        stdlib_logger("users").warning("from the broker")
        logging.getLogger("some.library").warning("from a library")
        try:
            1 / 0
        except ZeroDivisionError:
            logger.exception("handler failed")
    logger.info("odd value", thing=object())
    """
)


@pytest.fixture(scope="module")
def lines() -> list[dict[str, Any]]:
    """What the script wrote, one parsed object per line."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True, cwd="."
    )
    assert result.stderr == ""
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_line_is_one_flat_json_object_with_service_and_instance(lines: list[dict[str, Any]]) -> None:
    assert [line["message"] for line in lines] == [
        "started",
        "handled users.get",
        "from uvicorn",
        "from litestar",
        "from faststream",
        "from the broker",
        "from a library",
        "handler failed",
        "odd value",
    ]
    for line in lines:
        assert {"time", "level", "message", "service", "instance", "correlation_id"} <= line.keys()
        assert line["service"] == "users"
        assert line["instance"] == "users-host-42"
        assert all(not isinstance(value, dict | list) for value in line.values()), line
    assert lines[0]["correlation_id"] == "-"


def test_a_handled_message_line_carries_its_ids_outcome_and_duration(lines: list[dict[str, Any]]) -> None:
    handled = lines[1]
    assert handled["level"] == "INFO"
    assert handled["correlation_id"] == "corr-1"
    assert handled["message_id"] == "m-1"
    assert handled["type"] == "GetUser"
    assert handled["outcome"] == "ok"
    assert handled["duration_ms"] == 1.5


def test_stdlib_records_are_routed_through_with_the_correlation_id(lines: list[dict[str, Any]]) -> None:
    routed = {line["logger_name"]: line for line in lines if "logger_name" in line}
    assert set(routed) == {"uvicorn.error", "litestar", "faststream", "busway.users", "some.library"}
    for line in routed.values():
        assert line["level"] == "WARNING"
        assert line["correlation_id"] == "corr-1"


def test_an_exception_keeps_its_traceback_in_one_field(lines: list[dict[str, Any]]) -> None:
    failed = next(line for line in lines if line["message"] == "handler failed")
    assert failed["level"] == "ERROR"
    assert failed["exception"] == "ZeroDivisionError: division by zero"
    assert "Traceback (most recent call last)" in failed["traceback"]
    assert 'File "<string>", line' in failed["traceback"]


def test_a_value_json_cannot_hold_is_written_as_text(lines: list[dict[str, Any]]) -> None:
    odd = lines[-1]
    assert odd["thing"].startswith("<object object at")

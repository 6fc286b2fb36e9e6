"""busway replay, streams and dlq without Redis: argument errors are one line, ranges and filters."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.cli import app
from bus.replay import Entry, Filters, ReplayError, id_range, original_stream, read_records
from handlers.users.settings import UsersSettings

runner = CliRunner()
NO_REDIS = {"REDIS_URL": "redis://127.0.0.1:1", "BUS_PREFIX": "unit:"}


def one_line_error(args: list[str], code: int, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, args, env=env or NO_REDIS)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("busway: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "exactly one source"),
        (["--stream", "events.auth", "--dlq", "events.auth"], "exactly one source"),
        (["--stream", "events.auth", "--from-id", "1-0", "--since", "2025-01-01"], "not both"),
        (["--from-log", "users", "--from-id", "1-0"], "use them with --stream or --dlq"),
        (["--stream", "events.auth", "--to-file", "x.jsonl", "--to-group", "users"], "--to-file"),
        (["--stream", "events.auth", "--rate", "0"], "--rate must be above 0"),
        (["--from-log", "billing"], "unknown service 'billing' for --from-log; choose from users, auth"),
        (["--from-file", "/nonexistent/events.jsonl"], "no such file"),
        (["--stream", "events.auth", "--from-id", "yesterday"], "'yesterday' is not a stream entry id"),
        (["--stream", "events.auth", "--to-id", "12-x"], "'12-x' is not a stream entry id"),
        (["--stream", "events.auth", "--since", "last week"], "'last week' is not an ISO-8601 time"),
        (["--stream", "events.auth", "--from-id", "20-0", "--to-id", "10-5"], "--from-id 20-0 is after --to-id 10-5"),
        (["--stream", "events.auth", "--since", "2025-02-01", "--until", "2025-01-01"], "is after --until"),
    ],
)
def test_bad_replay_arguments_are_one_line_and_status_2(args: list[str], says: str) -> None:
    assert says in one_line_error(["replay", *args], 2)


def test_an_unreachable_redis_is_one_line_naming_the_url() -> None:
    for args in (["replay", "--stream", "events.auth"], ["streams"], ["dlq"], ["dlq", "show", "events.auth"]):
        line = one_line_error(args, 1)
        assert "cannot reach Redis at REDIS_URL=redis://127.0.0.1:1" in line


def test_the_password_in_redis_url_is_not_shown() -> None:
    line = one_line_error(["streams"], 1, {"REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"})
    assert "hunter2" not in line
    assert "redis://:***@127.0.0.1:1/0" in line


def test_invalid_bus_settings_are_a_configuration_error() -> None:
    line = one_line_error(["streams"], 2, {"REDIS_URL": "http://localhost"})
    assert "invalid configuration: REDIS_URL" in line
    line = one_line_error(["replay", "--stream", "events.auth"], 2, {"BUS_PREFIX": "no spaces allowed"})
    assert "BUS_PREFIX" in line


def test_a_file_that_is_not_an_event_log_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('\n{"stream": "events.auth", "message": {"id": "x"}}\n')
    line = one_line_error(["replay", "--from-file", str(path), "--to-file", str(tmp_path / "out.jsonl")], 1)
    assert f"{path}, line 2: not an event log record (message.type: Field required)" in line
    path.write_text("not json\n")
    line = one_line_error(["replay", "--from-file", str(path), "--to-file", str(tmp_path / "out.jsonl")], 1)
    assert "line 1: not JSON" in line


def test_a_file_can_be_filtered_into_another_file_without_redis(tmp_path: Path) -> None:
    def line(message_id: str, kind: str, at: str) -> str:
        message = {
            "id": message_id,
            "type": kind,
            "version": 1,
            "occurred_at": at,
            "correlation_id": f"c-{message_id}",
            "producer": "auth",
            "payload": {"n": message_id},
        }
        return json.dumps({"stream": "events.auth", "position": message_id, "message": message})

    source = tmp_path / "in.jsonl"
    source.write_text(
        "\n".join(
            [
                line("a", "UserLoggedIn", "2025-01-01T10:00:00+00:00"),
                line("b", "UserLoggedIn", "2025-01-02T10:00:00+00:00"),
                line("c", "RegistrationStarted", "2025-01-02T11:00:00+00:00"),
                line("d", "UserLoggedIn", "2025-01-03T10:00:00+00:00"),
            ]
        )
    )
    target = tmp_path / "out.jsonl"
    args = ["replay", "--from-file", str(source), "--to-file", str(target), "--type", "UserLoggedIn"]
    result = runner.invoke(app, [*args, "--since", "2025-01-02", "--until", "2025-01-02T23:59:59"], env=NO_REDIS)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "read 4, matched 1, sent 1, skipped 3"
    [written] = [json.loads(text) for text in target.read_text().splitlines()]
    assert written["message"]["id"] == "b"
    assert written["stream"] == "events.auth"
    assert written["message"]["payload"] == {"n": "b"}


def test_id_ranges_from_times_cover_whole_milliseconds() -> None:
    since = datetime(1970, 1, 1, 0, 0, 2, 500, tzinfo=UTC)  # 2000.5 ms: the first whole one is 2001
    until = datetime(1970, 1, 1, 0, 0, 3, 999_999, tzinfo=UTC)
    assert id_range(None, None, since, until) == ("2001-0", "3999")
    assert id_range("5", "7-3", None, None) == ("5", "7-3")
    assert id_range(None, None, None, None) == ("-", "+")
    with pytest.raises(ReplayError):
        id_range("7-4", "7-3", None, None)


def test_filters_match_type_correlation_and_time() -> None:
    entry = Entry("1-0", "events.auth", b"{}", "m", "UserLoggedIn", "c1", "2025-01-02T00:00:00+00:00")
    assert Filters().matches(entry)
    assert Filters(frozenset({"UserLoggedIn", "X"})).matches(entry)
    assert not Filters(frozenset({"X"})).matches(entry)
    assert not Filters(correlation_id="c2").matches(entry)
    day = datetime(2025, 1, 2, tzinfo=UTC)
    assert Filters(since=day, until=day).matches(entry)  # both bounds inclusive
    assert not Filters(since=datetime(2025, 1, 3, tzinfo=UTC)).matches(entry)
    unreadable = Entry("2-0", "events.auth", b"junk")
    assert not Filters().matches(unreadable)


def test_a_replay_stream_stands_for_its_original() -> None:
    assert original_stream("replay.users.events.auth") == "events.auth"
    assert original_stream("events.auth") == "events.auth"


def test_read_records_keeps_the_message_as_it_was() -> None:
    message = {
        "id": "m1",
        "type": "T",
        "version": 1,
        "occurred_at": "2025-01-01T00:00:00+00:00",
        "correlation_id": "c",
        "producer": "p",
        "payload": {"a": [1, 2]},
    }
    [entry] = list(read_records([json.dumps({"stream": "events.x", "message": message})], "test"))
    assert json.loads(entry.data) == message
    assert (entry.position, entry.stream, entry.message_id, entry.type) == ("1", "events.x", "m1", "T")


def test_event_log_retention_is_configurable_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    assert UsersSettings().event_log_retention_days == 30
    monkeypatch.setenv("USERS_EVENT_LOG_RETENTION_DAYS", "0")
    assert UsersSettings().event_log_retention_days == 0
    monkeypatch.setenv("USERS_EVENT_LOG_RETENTION_DAYS", "-1")
    with pytest.raises(ValueError, match="event_log_retention_days"):
        UsersSettings()

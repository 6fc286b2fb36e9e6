"""``busway replay``, ``busway streams`` and ``busway dlq``: the operator's tools.

Errors are one line on stderr, ``busway: ...``, with these exit statuses: 1 when the
replay cannot be done (unknown stream or group, Redis unreachable, an unreadable event
log), 2 for bad arguments or configuration, 130 when interrupted (Ctrl-C). An empty
range is not an error: "nothing to replay", status 0. docs/operations.md is the guide.
"""

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn
from urllib.parse import urlparse

import redis
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bus import inspection
from bus.process import settings_error
from bus.replay import (
    DLQ_PREFIX,
    Entry,
    Filters,
    ReplayError,
    Summary,
    Targets,
    check_entry_id,
    id_range,
    parse_time,
    read_records,
    read_stream,
    select,
    send,
    write_records,
)
from bus.settings import BusSettings

INTERRUPTED = 130


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"busway: {message}", err=True)
    raise typer.Exit(code)


def _masked(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


def _settings() -> BusSettings:
    try:
        return BusSettings()
    except ValidationError as exc:
        lines = settings_error(exc, "BUS_").splitlines()
        _fail(f"invalid configuration: {'; '.join(line.strip() for line in lines[1:])}", 2)


def _connect(settings: BusSettings) -> redis.Redis:
    url = _masked(settings.redis_url)
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30)
        client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        _fail(f"cannot reach Redis at REDIS_URL={url}: {exc}")
    return client


@contextmanager
def _redis(settings: BusSettings) -> Iterator[redis.Redis]:
    """A connection for one command, closed after; a Redis failure ends the command clearly."""
    client = _connect(settings)
    try:
        yield client
    except redis.RedisError as exc:
        _fail(f"Redis failed: {exc}")
    finally:
        client.close()


def _dead_letter_base(name: str) -> str:
    return name if name.startswith(DLQ_PREFIX) else f"{DLQ_PREFIX}{name}"


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        lines = lines[-1:]
    return " ".join(lines)[:500] or "no reason given"


@contextmanager
def _event_log(service: str, module: str, args: list[str]) -> Iterator[Iterator[str]]:
    """The JSON lines ``python -m <module> eventlog`` writes; ReplayError when it fails."""
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(  # noqa: S603  # our own interpreter and a module from a fixed list
            [sys.executable, "-m", module, "eventlog", *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert child.stdout is not None

        def lines() -> Iterator[str]:
            assert child.stdout is not None
            yield from child.stdout
            if child.wait():
                errors.seek(0)
                reason = _one_line(errors.read().decode(errors="replace")).removeprefix(f"{service}: ")
                raise ReplayError(f"cannot read the {service} event log: {reason}")

        try:
            yield lines()
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            child.stdout.close()


def _listing(planned: list[tuple[Entry, str]], prefix: str) -> None:
    header = f"{'POSITION':<22} {'ID':<32} {'TYPE':<24} {'CORRELATION ID':<32} {'OCCURRED AT':<32} TARGET"
    typer.echo(header)
    for entry, target in planned:
        typer.echo(
            f"{entry.position:<22} {entry.message_id or '-':<32} {entry.type or '-':<24} "
            f"{entry.correlation_id or '-':<32} {entry.occurred_at or '-':<32} {target.removeprefix(prefix)}"
        )


@dataclass(frozen=True)
class _ReplayRequest:
    """The options of one ``busway replay``, checked."""

    stream: str | None
    from_log: str | None
    from_file: Path | None
    start: str
    end: str
    since: datetime | None
    until: datetime | None
    filters: Filters
    to_stream: str | None
    to_group: str | None
    to_file: Path | None
    dry_run: bool
    rate: float | None

    @classmethod
    def of(
        cls,
        *,
        stream: str | None,
        dlq: str | None,
        from_log: str | None,
        from_file: Path | None,
        from_id: str | None,
        to_id: str | None,
        since: str | None,
        until: str | None,
        to_stream: str | None,
        to_group: str | None,
        to_file: Path | None,
        types: list[str],
        correlation_id: str | None,
        dry_run: bool,
        rate: float | None,
        event_logs: Mapping[str, str],
    ) -> "_ReplayRequest":
        """Check the options together; ReplayError (status 2) for the first that is wrong."""
        problem = None
        if sum(source is not None for source in (stream, dlq, from_log, from_file)) != 1:
            problem = "give exactly one source: --stream, --dlq, --from-log or --from-file"
        elif (from_id or to_id) and (since or until):
            problem = "give --from-id/--to-id or --since/--until, not both"
        elif (from_id or to_id) and not (stream or dlq):
            problem = "--from-id/--to-id select entries of a stream: use them with --stream or --dlq"
        elif to_file is not None and (to_stream or to_group):
            problem = "--to-file writes a file: it goes with neither --to-stream nor --to-group"
        elif rate is not None and rate <= 0:
            problem = "--rate must be above 0"
        elif from_log is not None and from_log not in event_logs:
            problem = f"unknown service {from_log!r} for --from-log; choose from {', '.join(event_logs)}"
        elif from_file is not None and not from_file.is_file():
            problem = f"no such file: {from_file}"
        if problem:
            raise ReplayError(problem, exit_code=2)
        first = check_entry_id(from_id, "--from-id") if from_id else None
        last = check_entry_id(to_id, "--to-id") if to_id else None
        start_time = parse_time(since, "--since") if since else None
        end_time = parse_time(until, "--until") if until else None
        start, end = id_range(first, last, start_time, end_time)
        source = _dead_letter_base(dlq) if dlq else stream
        # A stream's range is its entry ids; other sources' is each event's occurred_at.
        window = (None, None) if source else (start_time, end_time)
        return cls(
            stream=source,
            from_log=from_log,
            from_file=from_file,
            start=start,
            end=end,
            since=start_time,
            until=end_time,
            filters=Filters(frozenset(types), correlation_id, *window),
            to_stream=to_stream,
            to_group=to_group,
            to_file=to_file,
            dry_run=dry_run,
            rate=rate,
        )

    def log_arguments(self) -> list[str]:
        """The filters, for ``python -m <service> eventlog`` (applied in its database)."""
        args = [f"--since={self.since.isoformat()}"] if self.since else []
        args += [f"--until={self.until.isoformat()}"] if self.until else []
        args += [f"--type={name}" for name in sorted(self.filters.types)]
        if self.filters.correlation_id:
            args.append(f"--correlation-id={self.filters.correlation_id}")
        return args


def _source(
    stack: ExitStack,
    request: _ReplayRequest,
    client: redis.Redis | None,
    settings: BusSettings,
    event_logs: Mapping[str, str],
) -> Iterator[Entry]:
    if request.stream is not None:
        assert client is not None
        return read_stream(client, settings, request.stream, start=request.start, end=request.end)
    if request.from_log is not None:
        module = event_logs[request.from_log]
        lines = stack.enter_context(_event_log(request.from_log, module, request.log_arguments()))
        return read_records(lines, f"the {request.from_log} event log")
    assert request.from_file is not None
    return read_records(stack.enter_context(request.from_file.open(encoding="utf-8")), str(request.from_file))


def _plan(
    matched: list[Entry], request: _ReplayRequest, client: redis.Redis | None, settings: BusSettings
) -> list[tuple[Entry, str]]:
    """Each entry with where it goes: a full stream name, or (to a file) the stream it belongs to."""
    if client is None or request.to_file is not None:
        return [(entry, entry.stream) for entry in matched]
    targets = Targets(client, settings, request.to_stream, request.to_group)
    planned = [(entry, targets(entry)) for entry in matched]
    for warning in targets.warnings:
        typer.echo(f"busway: warning: {warning}", err=True)
    return planned


def _deliver(
    planned: list[tuple[Entry, str]], request: _ReplayRequest, client: redis.Redis | None, summary: Summary
) -> None:
    if request.to_file is not None:
        with request.to_file.open("w", encoding="utf-8") as out:
            write_records(out, planned, summary)
        return
    assert client is not None
    err = Console(stderr=True)
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("replay", total=len(planned))
        send(client, planned, summary, rate=request.rate, progress=lambda n: progress.advance(task, n))


def _replay(request: _ReplayRequest, settings: BusSettings, event_logs: Mapping[str, str]) -> None:
    """Read, filter, check the targets, then list, write or send; the summary at the end."""
    summary = Summary()
    err = Console(stderr=True)
    with ExitStack() as stack:
        client = _connect(settings) if request.stream is not None or request.to_file is None else None
        if client is not None:
            stack.callback(client.close)
        try:
            entries = _source(stack, request, client, settings, event_logs)
            with ExitStack() as reading:
                if err.is_terminal:
                    reading.enter_context(err.status("reading ..."))
                matched = list(select(entries, request.filters, summary))
            if not matched:
                typer.echo(f"nothing to replay ({summary.line()})")
                return
            planned = _plan(matched, request, client, settings)
            if request.dry_run:
                _listing(planned, settings.prefix)
                typer.echo(f"dry run, nothing sent: {summary.line()}")
                return
            _deliver(planned, request, client, summary)
            typer.echo(summary.line())
        except KeyboardInterrupt:
            typer.echo(f"interrupted: {summary.line()}", err=True)
            raise typer.Exit(INTERRUPTED) from None
        except ReplayError as exc:
            _fail(f"{exc} ({summary.line()})" if summary.sent else str(exc), exc.exit_code)
        except redis.RedisError as exc:
            _fail(f"Redis failed: {exc} ({summary.line()})")
        except OSError as exc:
            _fail(f"{exc} ({summary.line()})")


def register(app: typer.Typer, event_logs: Mapping[str, str]) -> None:
    """Add ``replay``, ``streams`` and ``dlq`` to ``app``.

    ``event_logs``: service name -> module whose ``python -m <module> eventlog`` exports
    that service's event log (``--from-log``).
    """
    services = ", ".join(event_logs)

    @app.command()
    def replay(
        stream: Annotated[str | None, typer.Option(help="Source: a stream, e.g. events.auth.")] = None,
        dlq: Annotated[str | None, typer.Option(help="Source: the dead letters of a stream (events.auth).")] = None,
        from_log: Annotated[str | None, typer.Option(help=f"Source: a service's event log ({services}).")] = None,
        from_file: Annotated[Path | None, typer.Option(help="Source: an event log exported as JSON lines.")] = None,
        from_id: Annotated[str | None, typer.Option(help="First stream entry id (inclusive).")] = None,
        to_id: Annotated[str | None, typer.Option(help="Last stream entry id (inclusive).")] = None,
        since: Annotated[str | None, typer.Option(help="From this time on (ISO-8601, UTC unless given).")] = None,
        until: Annotated[str | None, typer.Option(help="Up to this time (ISO-8601, inclusive).")] = None,
        to_stream: Annotated[str | None, typer.Option(help="Target stream (default: each entry's own).")] = None,
        to_group: Annotated[str | None, typer.Option(help="Deliver to this consumer group only.")] = None,
        to_file: Annotated[Path | None, typer.Option(help="Write the entries to this file (JSON lines).")] = None,
        types: Annotated[list[str] | None, typer.Option("--type", help="Only this event type (repeatable).")] = None,
        correlation_id: Annotated[str | None, typer.Option(help="Only entries with this correlation id.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be sent; send nothing.")] = False,
        rate: Annotated[float | None, typer.Option(help="At most this many entries a second.")] = None,
    ) -> None:
        """Send messages again: from a stream, dead letters or an event log; to a stream or one group."""
        try:
            request = _ReplayRequest.of(
                stream=stream,
                dlq=dlq,
                from_log=from_log,
                from_file=from_file,
                from_id=from_id,
                to_id=to_id,
                since=since,
                until=until,
                to_stream=to_stream,
                to_group=to_group,
                to_file=to_file,
                types=types or [],
                correlation_id=correlation_id,
                dry_run=dry_run,
                rate=rate,
                event_logs=event_logs,
            )
        except ReplayError as exc:
            _fail(str(exc), exc.exit_code)
        _replay(request, _settings(), event_logs)

    @app.command()
    def streams(
        as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    ) -> None:
        """Every stream under BUS_PREFIX: length, groups, consumers, pending entries and their age."""
        settings = _settings()
        with _redis(settings) as client:
            infos = inspection.list_streams(client, settings)
        if as_json:
            typer.echo(json.dumps([info.as_json() for info in infos], indent=2))
            return
        if not infos:
            typer.echo(f"no streams under BUS_PREFIX={settings.prefix!r}")
            return
        table = Table("stream", "length", "group", "consumers", "pending", "lag", "oldest pending")
        for info in infos:
            if not info.groups:
                table.add_row(info.stream, str(info.length), "-", "-", "-", "-", "-")
            for group in info.groups:
                age = group.oldest_pending_age_s
                table.add_row(
                    info.stream,
                    str(info.length),
                    group.name,
                    str(len(group.consumers)),
                    str(group.pending),
                    "?" if group.lag is None else str(group.lag),
                    "-" if age is None else f"{age:.0f}s ago ({group.oldest_pending_id})",
                )
        _print_table(table)

    dlq_app = typer.Typer(help="Dead-letter streams: list them, show their entries, purge them.")

    @dlq_app.callback(invoke_without_command=True)
    def dlq(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    ) -> None:
        """List the dead-letter streams and how many entries each holds.

        Replay them with ``busway replay --dlq <stream>``.
        """
        if ctx.invoked_subcommand is not None:
            return
        settings = _settings()
        with _redis(settings) as client:
            found = inspection.dead_letter_streams(client, settings)
        if as_json:
            typer.echo(json.dumps([vars(stream) for stream in found], indent=2))
            return
        if not found:
            typer.echo(f"no dead-letter streams under BUS_PREFIX={settings.prefix!r}")
            return
        table = Table("stream", "entries", "source", "oldest", "newest")
        for item in found:
            table.add_row(item.stream, str(item.entries), item.source, item.oldest or "-", item.newest or "-")
        _print_table(table)

    @dlq_app.command("show")
    def dlq_show(
        stream: Annotated[str, typer.Argument(help="dlq.events.auth (or events.auth)")],
        count: Annotated[int, typer.Option(min=1, max=100_000, help="How many entries, oldest first.")] = 20,
        as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    ) -> None:
        """Show dead letters: error, attempts, group, correlation id, the original type and time."""
        settings = _settings()
        base = _dead_letter_base(stream)
        with _redis(settings) as client:
            if client.type(settings.name(base)) != b"stream":
                _fail(f"no dead-letter stream named {base!r}")
            letters = inspection.dead_letters(client, settings, base, count=count)
        if as_json:
            typer.echo(json.dumps([vars(letter) for letter in letters], indent=2))
            return
        table = Table("entry", "dead-lettered at", "group", "attempts", "type", "message id", "correlation id", "error")
        for letter in letters:
            table.add_row(
                letter.entry_id,
                letter.dead_lettered_at,
                letter.group,
                "?" if letter.attempts is None else str(letter.attempts),
                letter.type or "?",
                letter.message_id or "?",
                letter.correlation_id,
                letter.error,
            )
        _print_table(table)

    @dlq_app.command("purge")
    def dlq_purge(
        stream: Annotated[str, typer.Argument(help="dlq.events.auth (or events.auth)")],
        to_id: Annotated[str | None, typer.Option(help="Only the entries up to this id (inclusive).")] = None,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    ) -> None:
        """Delete dead letters (after replaying them, or when they are not worth it)."""
        if to_id is not None:
            try:
                check_entry_id(to_id, "--to-id")
            except ReplayError as exc:
                _fail(str(exc), exc.exit_code)
        settings = _settings()
        base = _dead_letter_base(stream)
        with _redis(settings) as client:
            if client.type(settings.name(base)) != b"stream":
                _fail(f"no dead-letter stream named {base!r}")
            size = int(client.xlen(settings.name(base)))
            what = f"the entries of {base} up to {to_id}" if to_id else f"all {size} entries of {base}"
            if not yes and not typer.confirm(f"Delete {what}?", default=False):
                _fail("nothing deleted")
            deleted = inspection.purge(client, settings, base, to_id=to_id)
        typer.echo(f"deleted {deleted} entries from {base}")

    app.add_typer(dlq_app, name="dlq")


def _print_table(table: Table) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=240)  # piped or logged: do not wrap at 80 columns
    console.print(table)

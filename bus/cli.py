"""``busway``: the command line. Runs services as processes; imports none of them."""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import redis
import typer
from dotenv import dotenv_values
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from bus.operator_commands import register as register_operator_commands
from bus.settings import BusSettings

MODULES = {
    "users": "handlers.users",
    "auth": "handlers.auth",
    "activity": "handlers.activity",
    "mailer": "handlers.mailer",
    "gateway": "gateway",
}
HANDLERS = ("users", "auth", "activity")
"""The services with a database to migrate (the mailer keeps its little state in Redis)."""
EVENT_LOGS = ("users", "auth")
"""The services whose outbox is their event log (``busway replay --from-log``)."""
COLOURS = {
    "redis": "\033[35m",
    "users": "\033[36m",
    "auth": "\033[33m",
    "activity": "\033[34m",
    "mailer": "\033[37m",
    "gateway": "\033[32m",
}
RESET = "\033[0m"

METRICS_PORTS = {
    "USERS_METRICS_PORT": "9101",
    "AUTH_METRICS_PORT": "9102",
    "ACTIVITY_METRICS_PORT": "9103",
    "MAILER_METRICS_PORT": "9104",
}
"""Where ``busway up``'s handlers serve /metrics unless the environment or .env says otherwise."""

app = typer.Typer(help="busway: a bus-first service system.", no_args_is_help=True, add_completion=False)


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _check_service(name: str) -> str:
    if name not in MODULES:
        raise typer.BadParameter(f"unknown service {name!r}; choose from {', '.join(MODULES)}")
    return name


@app.command()
def run(
    service: Annotated[str, typer.Argument(help="users, auth, activity, mailer or gateway", callback=_check_service)],
) -> None:
    """Run one service in the foreground."""
    os.execvpe(sys.executable, [sys.executable, "-m", MODULES[service], "serve"], _child_env())


@app.command()
def migrate(
    services: Annotated[list[str] | None, typer.Argument(help="users, auth, activity (default: all)")] = None,
) -> None:
    """Apply each service's database migrations (its *_DATABASE_URL)."""
    for name in services or list(HANDLERS):
        if name not in HANDLERS:
            raise typer.BadParameter(f"{name!r} has no database; choose from {', '.join(HANDLERS)}")
        typer.echo(f"migrating {name} ...")
        result = subprocess.run([sys.executable, "-m", MODULES[name], "migrate"], env=_child_env(), check=False)
        if result.returncode:
            raise typer.Exit(result.returncode)


def metrics_port_defaults(env_file: Path = Path(".env")) -> dict[str, str]:
    """The METRICS_PORTS that neither the environment nor ``env_file`` sets."""
    configured = {**dotenv_values(env_file), **os.environ} if env_file.is_file() else dict(os.environ)
    return {name: port for name, port in METRICS_PORTS.items() if name not in configured}


def _redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def _dev_redis_command(url: str, folder: Path) -> list[str] | None:
    parsed = urlparse(url)
    server = shutil.which("redis-server")
    if server is None or parsed.hostname not in {"localhost", "127.0.0.1", "::1"}:
        return None
    return [
        server,
        "--port", str(parsed.port or 6379),
        "--bind", "127.0.0.1",
        "--dir", str(folder.resolve()),
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip


async def _pump(name: str, stream: asyncio.StreamReader, width: int) -> None:
    colour = COLOURS.get(name, "") if sys.stdout.isatty() else ""
    prefix = f"{colour}{name:<{width}} |{RESET if colour else ''} "
    async for line in stream:
        sys.stdout.write(prefix + line.decode(errors="replace"))
        sys.stdout.flush()


async def _wait_for_redis(argv: list[str], timeout: float = 10.0) -> None:
    url = f"redis://127.0.0.1:{argv[argv.index('--port') + 1]}"
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(_redis_answers, url):
        if asyncio.get_running_loop().time() > deadline:
            typer.echo("busway: the development Redis did not start", err=True)
            return
        await asyncio.sleep(0.1)


async def _supervise(commands: dict[str, list[str]], grace: float) -> int:
    width = max(len(name) for name in commands)
    children: dict[str, asyncio.subprocess.Process] = {}
    pumps = []
    for name, argv in commands.items():
        child = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=_child_env(),
            start_new_session=True,
        )  # fmt: skip
        children[name] = child
        assert child.stdout is not None
        pumps.append(asyncio.create_task(_pump(name, child.stdout, width)))
        if name == "redis":
            await _wait_for_redis(argv)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waits = {asyncio.create_task(child.wait()): name for name, child in children.items()}
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
    status = 0
    for task in done:
        if task in waits:
            status = 1
            typer.echo(f"busway: {waits[task]} exited with {task.result()}; stopping the others", err=True)
    # Stop in reverse start order: the gateway first, Redis last.
    for name in reversed(list(children)):
        child = children[name]
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.wait(), timeout=grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
    await asyncio.gather(*pumps, return_exceptions=True)
    stopper.cancel()
    return status


@app.command()
def up(
    grace: Annotated[float, typer.Option(min=0.1, max=120, help="Seconds each process gets to stop.")] = 10.0,
) -> None:
    """Run Redis (if needed), the users, auth, activity and mailer services and the gateway, with one log.

    Ctrl-C stops them all. Settings come from the environment and ./.env.
    """
    var = Path("var")
    var.mkdir(exist_ok=True)
    bus = BusSettings()
    commands: dict[str, list[str]] = {}
    if not _redis_answers(bus.redis_url):
        dev_redis = _dev_redis_command(bus.redis_url, var)
        if dev_redis is None:
            typer.echo(
                f"busway: nothing answers at REDIS_URL={bus.redis_url} and no redis-server is on PATH.\n"
                "Start one (for example `docker compose up -d redis`, or install redis-server) "
                "or set REDIS_URL.",
                err=True,
            )
            raise typer.Exit(1)
        typer.echo(f"busway: starting a development Redis in {var}/ for {bus.redis_url}")
        commands["redis"] = dev_redis
    for name in ("users", "auth", "activity", "mailer", "gateway"):
        commands[name] = [sys.executable, "-m", MODULES[name], "serve"]
    # The handlers' /metrics, each on its own port (the children inherit the environment).
    os.environ.update(metrics_port_defaults())
    raise typer.Exit(asyncio.run(_supervise(commands, grace)))


@app.command("grant-admin")
def grant_admin(
    email: Annotated[str, typer.Argument(help="The account's email address.")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Take the admin role away instead.")] = False,
) -> None:
    """Grant the admin role to an account (AUTH_DATABASE_URL); it shows from its next login or refresh."""
    command = "revoke-admin" if revoke else "grant-admin"
    result = subprocess.run([sys.executable, "-m", MODULES["auth"], command, email], env=_child_env(), check=False)
    if result.returncode:
        raise typer.Exit(result.returncode)


@app.command("rotate-keys")
def rotate_keys(
    retire: Annotated[
        str | None, typer.Option(help="Delete this key id instead, once the tokens it signed have expired.")
    ] = None,
) -> None:
    """Add a new signing key to the auth keys folder (AUTH_SIGNING_KEYS_DIR, default var/auth-keys).

    The new key signs from the running auth service's next look at the folder
    (AUTH_KEYS_RELOAD_INTERVAL); the older keys keep verifying until retired.
    """
    argv = [sys.executable, "-m", MODULES["auth"], "rotate-key"]
    if retire is not None:
        argv += ["--retire", retire]
    result = subprocess.run(argv, env=_child_env(), check=False)
    if result.returncode:
        raise typer.Exit(result.returncode)


register_operator_commands(app, {name: MODULES[name] for name in EVENT_LOGS})


def main() -> None:
    """Console-script entry point."""
    app()


# ---- import-legacy: the monolith's users, through each service's own import command ------

IMPORT_ORDER = ("users", "auth")
"""Profiles first: a credential (what lets someone log in) never exists without its profile."""


@dataclass
class _Row:
    """What each service said about one legacy row."""

    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def _import_step(service: str, argv: list[str], on_row: Callable[[dict[str, Any]], None], log: Path) -> int:
    """Run ``python -m handlers.<service> import-legacy ARGV``; its report comes over a pipe, its logs to ``log``."""
    read_fd, write_fd = os.pipe()
    with log.open("ab") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", MODULES[service], "import-legacy", *argv, "--report-fd", str(write_fd)],
            pass_fds=(write_fd,),
            stdout=log_file,
            stderr=log_file,
            env=_child_env(),
        )
        os.close(write_fd)
        with os.fdopen(read_fd, encoding="utf-8") as report:
            for line in report:
                with contextlib.suppress(json.JSONDecodeError):
                    on_row(json.loads(line))
        return child.wait()


def _fail_step(service: str, status: int, log: Path) -> None:
    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
    detail = f": {tail[-1]}" if tail else ""
    typer.echo(f"busway: importing into {service} failed (exit {status}){detail}", err=True)


@app.command("import-legacy")
def import_legacy(
    sqlite: Annotated[Path, typer.Option("--sqlite", help="The monolith's SQLite database (opened read-only).")],
    mapping: Annotated[
        Path | None,
        typer.Option(help='JSON naming the legacy table and columns, e.g. {"table": "accounts", "password": "hash"}.'),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be imported; write nothing.")] = False,
) -> None:
    """Copy the monolith's users (profiles, emails, created dates, bcrypt hashes) into users and auth.

    Safe to run again: users already imported are skipped, new ones (registered on the
    monolith since) are added. Settings: USERS_DATABASE_URL, AUTH_DATABASE_URL.
    """
    if not sqlite.is_file():
        raise typer.BadParameter(f"no such file: {sqlite}", param_hint="--sqlite")
    console = Console(stderr=True)
    common = [str(sqlite.resolve()), *(["--mapping", str(mapping.resolve())] if mapping else [])]
    correlation_id = uuid.uuid4().hex
    rows: dict[str, _Row] = {}
    with tempfile.TemporaryDirectory(prefix="busway-import-") as folder:
        log = Path(folder) / "services.log"

        def record(service: str) -> Callable[[dict[str, Any]], None]:
            def on_row(line: dict[str, Any]) -> None:
                rows.setdefault(str(line["legacy_id"]), _Row()).outcomes[service] = (line["outcome"], line["reason"])

            return on_row

        # 1. Ask both services first: a user is written only where both sides can take it.
        for service in IMPORT_ORDER:
            status = _import_step(service, [*common, "--check"], record(service), log)
            if status:
                _fail_step(service, status, log)
                raise typer.Exit(1)
        plan = [
            legacy_id
            for legacy_id, row in rows.items()
            if all(row.outcomes.get(s, ("", None))[0] in {"new", "present"} for s in IMPORT_ORDER)
            and any(row.outcomes[s][0] == "new" for s in IMPORT_ORDER)
        ]
        checked = {legacy_id: dict(row.outcomes) for legacy_id, row in rows.items()}
        # 2. Write: users, then auth; each row one transaction per service, converging on re-runs.
        done: dict[str, dict[str, tuple[str, str | None]]] = {}
        failed: str | None = None
        if plan and not dry_run:
            only = Path(folder) / "only.txt"
            only.write_text("\n".join(plan) + "\n")
            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as progress:
                for service in IMPORT_ORDER:
                    task = progress.add_task(f"importing into {service}", total=len(plan))

                    def on_row(line: dict[str, Any], service: str = service, task: TaskID = task) -> None:
                        done.setdefault(str(line["legacy_id"]), {})[service] = (line["outcome"], line["reason"])
                        progress.advance(task)

                    extra = ["--only", str(only), "--correlation-id", correlation_id]
                    status = _import_step(service, [*common, *extra], on_row, log)
                    if status:
                        _fail_step(service, status, log)
                        failed = service
                        break
    _summarise(console, checked, plan, done, dry_run=dry_run, failed=failed)
    incomplete = [
        i
        for i in plan
        if not dry_run and any(done.get(i, {}).get(s, ("",))[0] not in {"imported", "present"} for s in IMPORT_ORDER)
    ]
    if failed or incomplete:
        raise typer.Exit(1)


def _summarise(
    console: Console,
    checked: dict[str, dict[str, tuple[str, str | None]]],
    plan: list[str],
    done: dict[str, dict[str, tuple[str, str | None]]],
    *,
    dry_run: bool,
    failed: str | None,
) -> None:
    """The summary: imported, skipped, invalid (with reasons), and anything left half way."""
    planned = set(plan)
    skipped = [
        i for i, o in checked.items() if i not in planned and all(o.get(s, ("",))[0] == "present" for s in IMPORT_ORDER)
    ]
    invalid: list[tuple[str, str]] = []
    for legacy_id, outcomes in checked.items():
        if legacy_id in planned or legacy_id in skipped:
            continue
        reasons = sorted(
            {reason or outcome for outcome, reason in outcomes.values() if outcome in {"invalid", "conflict"}}
        )
        invalid.append((legacy_id, ", ".join(reasons) or "refused"))
    imported = [
        i for i in plan if all(done.get(i, {}).get(s, ("",))[0] in {"imported", "present"} for s in IMPORT_ORDER)
    ]
    incomplete = [] if dry_run else [i for i in plan if i not in imported]
    table = Table(title="import-legacy" + (" (dry run: nothing written)" if dry_run else ""))
    table.add_column("outcome")
    table.add_column("users", justify="right")
    table.add_row("would import" if dry_run else "imported", str(len(plan) if dry_run else len(imported)))
    table.add_row("skipped (already imported)", str(len(skipped)))
    table.add_row("invalid", str(len(invalid)))
    if incomplete:
        table.add_row("incomplete", str(len(incomplete)))
    console.print(table)
    for legacy_id, reason in sorted(invalid, key=lambda item: _legacy_order(item[0])):
        console.print(f"  invalid: legacy id {legacy_id}: {reason}")
    for legacy_id in incomplete:
        outcomes = done.get(legacy_id, {})
        state = "; ".join(
            f"{s}: {' '.join(filter(None, outcomes.get(s, ('not reached', None))))}" for s in IMPORT_ORDER
        )
        console.print(f"  incomplete: legacy id {legacy_id} ({state}); run the import again")
    if failed:
        console.print(f"[red]stopped: the {failed} import failed; run the import again to finish[/red]")
    # The one machine-readable line, on stdout, for scripts.
    typer.echo(
        json.dumps(
            {
                "imported": 0 if dry_run else len(imported),
                "would_import": len(plan) if dry_run else 0,
                "skipped": len(skipped),
                "invalid": [{"legacy_id": i, "reason": r} for i, r in invalid],
                "incomplete": incomplete,
            }
        )
    )


def _legacy_order(legacy_id: str) -> tuple[int, int | str]:
    return (0, int(legacy_id)) if legacy_id.isdigit() else (1, legacy_id)

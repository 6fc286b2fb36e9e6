"""``busway``: the command line. Runs services as processes; imports none of them."""

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import redis
import typer
from dotenv import dotenv_values

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


def main() -> None:
    """Console-script entry point."""
    app()

"""The entry point every busway process shares: settings, logging, then its command.

``python -m handlers.users [serve|migrate]`` and the like all go through ``main``, so a
bad setting is reported the same way everywhere: which variable, what is wrong, no trace.
"""

import asyncio
import gc
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from pydantic import ValidationError

from bus.broker import instance_id
from bus.logs import configure_logging
from bus.settings import BusSettings

S = TypeVar("S")


def settings_error(exc: ValidationError, env_prefix: str) -> str:
    """A readable report of invalid settings, naming the environment variables."""
    lines = ["Invalid configuration:"]
    # The shared bus settings are validated on their own (a default factory), so their
    # errors carry BusSettings' title and field names without the service's prefix.
    if exc.title == BusSettings.__name__:
        env_prefix = "BUS_"
    for err in exc.errors():
        name = "_".join(str(p) for p in err["loc"]).upper()
        if not name:  # a check across several settings
            lines.append(f"  {err['msg']}")
            continue
        variable = name if name.startswith(("BUS_", "REDIS_", "BUSWAY_", "LOG_")) else f"{env_prefix}{name}"
        lines.append(f"  {variable}: {err['msg']}")
    return "\n".join(lines)


def run_process(
    service: str,
    env_prefix: str,
    load: Callable[[], S],
    bus_of: Callable[[S], BusSettings],
    commands: Mapping[str, Callable[[S], None]],
    argv: Sequence[str] | None = None,
    *,
    with_args: Mapping[str, Callable[[S, list[str]], int]] | None = None,
) -> int:
    """Load settings, set up logging, run the command named in ``argv`` (default: serve).

    ``with_args``: commands that take the rest of ``argv`` and return the exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    name = args[0] if args else "serve"
    takes_args = with_args or {}
    if name not in takes_args and (name not in commands or len(args) > 1):
        print(f"usage: python -m <{service} module> [{'|'.join([*commands, *takes_args])}]", file=sys.stderr)
        return 2
    try:
        settings = load()
    except ValidationError as exc:
        print(settings_error(exc, env_prefix), file=sys.stderr)
        return 2
    bus = bus_of(settings)
    configure_logging(service, bus.log_format, bus.log_level, instance_id(service))
    if name in takes_args:
        return takes_args[name](settings, args[1:])
    commands[name](settings)
    return 0


def freeze_heap() -> None:
    """Collect once, then keep every object alive now out of the garbage collector's scans.

    A started process holds hundreds of thousands of long-lived objects (modules, the
    Litestar app, pydantic and SQLAlchemy models), and each full collection walked them
    all: pauses of tens of milliseconds, which were most of busway's p99 under load
    (docs/performance.md). Frozen, a collection walks only what was made after the start.
    Called once a process has started, before it takes work.
    """
    gc.collect()
    gc.freeze()


def run_async(main: Callable[[], "asyncio.Future[None] | object"]) -> None:
    """Run a coroutine function on uvloop where available."""
    try:
        import uvloop  # noqa: PLC0415

        uvloop.run(main())  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(main())  # type: ignore[arg-type]

"""``python -m handlers.users [serve|migrate|import-legacy FILE ...|eventlog [filters]]``."""

import functools
import sys

from bus import wire
from bus.process import run_async, run_process
from bus.runtime import serve
from db.eventlog import export_command
from db.legacy_users import parse_import_arguments, run_import
from db.migrations import upgrade
from handlers.users import SERVICE
from handlers.users.legacy_import import import_profiles
from handlers.users.main import MIGRATIONS, create_app
from handlers.users.models import Outbox
from handlers.users.settings import UsersSettings


def _serve(settings: UsersSettings) -> None:
    run_async(lambda: serve(create_app(settings)))


def _migrate(settings: UsersSettings) -> None:
    upgrade(MIGRATIONS, settings.database_url)


def _import_legacy(settings: UsersSettings, args: list[str]) -> int:
    options = parse_import_arguments(args, prog="python -m handlers.users import-legacy")
    status = 0

    async def main() -> None:
        nonlocal status
        status = await run_import(options, settings.database_url, import_profiles)

    run_async(main)
    return status


def _eventlog(settings: UsersSettings, args: list[str]) -> int:
    encode = functools.partial(wire.encode, signer=settings.bus.signer(SERVICE))
    return export_command(SERVICE, settings.database_url, Outbox, args, encode)


if __name__ == "__main__":
    sys.exit(
        run_process(
            SERVICE,
            "USERS_",
            UsersSettings,
            lambda s: s.bus,
            {"serve": _serve, "migrate": _migrate},
            with_args={"eventlog": _eventlog, "import-legacy": _import_legacy},
        )
    )

"""``python -m handlers.users [serve|migrate|eventlog [filters]]``."""

import sys

from bus.process import run_async, run_process
from bus.runtime import serve
from db.eventlog import export_command
from db.migrations import upgrade
from handlers.users import SERVICE
from handlers.users.main import MIGRATIONS, create_app
from handlers.users.models import Outbox
from handlers.users.settings import UsersSettings


def _serve(settings: UsersSettings) -> None:
    run_async(lambda: serve(create_app(settings)))


def _migrate(settings: UsersSettings) -> None:
    upgrade(MIGRATIONS, settings.database_url)


def _eventlog(settings: UsersSettings, args: list[str]) -> int:
    return export_command(SERVICE, settings.database_url, Outbox, args)


if __name__ == "__main__":
    sys.exit(
        run_process(
            SERVICE,
            "USERS_",
            UsersSettings,
            lambda s: s.bus,
            {"serve": _serve, "migrate": _migrate},
            with_args={"eventlog": _eventlog},
        )
    )

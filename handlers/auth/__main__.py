"""``python -m handlers.auth [serve|migrate|eventlog [filters]]``."""

import sys

from bus.process import run_async, run_process
from bus.runtime import serve
from db.eventlog import export_command
from db.migrations import upgrade
from handlers.auth import SERVICE
from handlers.auth.main import MIGRATIONS, create_app
from handlers.auth.models import Outbox
from handlers.auth.settings import AuthSettings


def _serve(settings: AuthSettings) -> None:
    run_async(lambda: serve(create_app(settings)))


def _migrate(settings: AuthSettings) -> None:
    upgrade(MIGRATIONS, settings.database_url)


def _eventlog(settings: AuthSettings, args: list[str]) -> int:
    return export_command(SERVICE, settings.database_url, Outbox, args)


if __name__ == "__main__":
    sys.exit(
        run_process(
            SERVICE,
            "AUTH_",
            AuthSettings,
            lambda s: s.bus,
            {"serve": _serve, "migrate": _migrate},
            with_args={"eventlog": _eventlog},
        )
    )

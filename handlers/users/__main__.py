"""``python -m handlers.users [serve|migrate]``."""

import sys

from bus.process import run_async, run_process
from bus.runtime import serve
from db.migrations import upgrade
from handlers.users import SERVICE
from handlers.users.main import MIGRATIONS, create_app
from handlers.users.settings import UsersSettings


def _serve(settings: UsersSettings) -> None:
    run_async(lambda: serve(create_app(settings)))


def _migrate(settings: UsersSettings) -> None:
    upgrade(MIGRATIONS, settings.database_url)


if __name__ == "__main__":
    sys.exit(run_process(SERVICE, "USERS_", UsersSettings, lambda s: s.bus, {"serve": _serve, "migrate": _migrate}))

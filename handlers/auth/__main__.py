"""``python -m handlers.auth [serve|migrate]``."""

import sys

from bus.process import run_async, run_process
from bus.runtime import serve
from db.migrations import upgrade
from handlers.auth import SERVICE
from handlers.auth.main import MIGRATIONS, create_app
from handlers.auth.settings import AuthSettings


def _serve(settings: AuthSettings) -> None:
    run_async(lambda: serve(create_app(settings)))


def _migrate(settings: AuthSettings) -> None:
    upgrade(MIGRATIONS, settings.database_url)


if __name__ == "__main__":
    sys.exit(run_process(SERVICE, "AUTH_", AuthSettings, lambda s: s.bus, {"serve": _serve, "migrate": _migrate}))

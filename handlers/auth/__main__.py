"""``python -m handlers.auth [serve|migrate|import-legacy FILE ...]``."""

import sys

from bus.process import run_async, run_process
from bus.runtime import serve
from db.legacy_users import parse_import_arguments, run_import
from db.migrations import upgrade
from handlers.auth import SERVICE
from handlers.auth.legacy_import import import_credentials
from handlers.auth.main import MIGRATIONS, create_app
from handlers.auth.settings import AuthSettings


def _serve(settings: AuthSettings) -> None:
    run_async(lambda: serve(create_app(settings)))


def _migrate(settings: AuthSettings) -> None:
    upgrade(MIGRATIONS, settings.database_url)


def _import_legacy(settings: AuthSettings, argv: list[str]) -> None:
    options = parse_import_arguments(argv, prog="python -m handlers.auth import-legacy")
    status = 0

    async def main() -> None:
        nonlocal status
        status = await run_import(options, settings.database_url, import_credentials)

    run_async(main)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    if sys.argv[1:2] == ["import-legacy"]:
        # The one command with arguments of its own: parsed by the command, not run_process.
        rest = sys.argv[2:]
        commands = {"import-legacy": lambda s: _import_legacy(s, rest)}
        sys.exit(run_process(SERVICE, "AUTH_", AuthSettings, lambda s: s.bus, commands, argv=["import-legacy"]))
    sys.exit(run_process(SERVICE, "AUTH_", AuthSettings, lambda s: s.bus, {"serve": _serve, "migrate": _migrate}))

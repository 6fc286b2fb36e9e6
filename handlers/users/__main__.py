"""``python -m handlers.users [serve|migrate|import-legacy FILE ...]``."""

import sys

from bus.process import run_async, run_process
from bus.runtime import serve
from db.legacy_users import parse_import_arguments, run_import
from db.migrations import upgrade
from handlers.users import SERVICE
from handlers.users.legacy_import import import_profiles
from handlers.users.main import MIGRATIONS, create_app
from handlers.users.settings import UsersSettings


def _serve(settings: UsersSettings) -> None:
    run_async(lambda: serve(create_app(settings)))


def _migrate(settings: UsersSettings) -> None:
    upgrade(MIGRATIONS, settings.database_url)


def _import_legacy(settings: UsersSettings, argv: list[str]) -> None:
    options = parse_import_arguments(argv, prog="python -m handlers.users import-legacy")
    status = 0

    async def main() -> None:
        nonlocal status
        status = await run_import(options, settings.database_url, import_profiles)

    run_async(main)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    if sys.argv[1:2] == ["import-legacy"]:
        # The one command with arguments of its own: parsed by the command, not run_process.
        rest = sys.argv[2:]
        commands = {"import-legacy": lambda s: _import_legacy(s, rest)}
        sys.exit(run_process(SERVICE, "USERS_", UsersSettings, lambda s: s.bus, commands, argv=["import-legacy"]))
    sys.exit(run_process(SERVICE, "USERS_", UsersSettings, lambda s: s.bus, {"serve": _serve, "migrate": _migrate}))

"""``python -m handlers.auth [serve|migrate|import-legacy FILE ...|grant-admin EMAIL|revoke-admin EMAIL]``."""

import asyncio
import sys
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from bus.process import run_async, run_process
from bus.runtime import serve
from db.engine import create_engine, session_factory
from db.legacy_users import parse_import_arguments, run_import
from db.migrations import upgrade
from handlers.auth import SERVICE
from handlers.auth.legacy_import import import_credentials
from handlers.auth.main import MIGRATIONS, create_app
from handlers.auth.service import set_admin
from handlers.auth.settings import AuthSettings
from schemas.errors import ReplyError


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


async def _set_admin(settings: AuthSettings, email: str, *, admin: bool) -> str:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        return await set_admin(session_factory(engine), email, admin=admin)
    finally:
        await engine.dispose()


def _role_command(*, admin: bool) -> tuple[str, Callable[[AuthSettings, str], None]]:
    def run(settings: AuthSettings, email: str) -> None:
        try:
            user_id = asyncio.run(_set_admin(settings, email, admin=admin))
        except ReplyError as exc:
            print(f"error: {exc.reply.message}", file=sys.stderr)
            raise SystemExit(1) from None
        except (SQLAlchemyError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"error: the auth database failed ({reason}); is it migrated (busway migrate auth)?", file=sys.stderr)
            raise SystemExit(1) from None
        done = "granted the admin role to" if admin else "revoked the admin role of"
        print(f"{done} {email} (user {user_id}); it takes effect at the account's next login or refresh")

    return "EMAIL", run


if __name__ == "__main__":
    if sys.argv[1:2] == ["import-legacy"]:
        # Arguments of its own, parsed by the command, not run_process.
        rest = sys.argv[2:]
        commands = {"import-legacy": lambda s: _import_legacy(s, rest)}
        sys.exit(run_process(SERVICE, "AUTH_", AuthSettings, lambda s: s.bus, commands, argv=["import-legacy"]))
    sys.exit(
        run_process(
            SERVICE,
            "AUTH_",
            AuthSettings,
            lambda s: s.bus,
            {"serve": _serve, "migrate": _migrate},
            with_arguments={"grant-admin": _role_command(admin=True), "revoke-admin": _role_command(admin=False)},
        )
    )

"""``python -m handlers.auth [COMMAND]``: the auth service's entry point.

Commands: serve (default), migrate, eventlog [filters], import-legacy FILE ..., grant-admin EMAIL,
revoke-admin EMAIL, rotate-key [--retire KID].
"""

import asyncio
import functools
import sys
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from bus import wire
from bus.process import run_async, run_process
from bus.runtime import serve
from db.engine import create_engine, session_factory
from db.eventlog import export_command
from db.legacy_users import parse_import_arguments, run_import
from db.migrations import upgrade
from handlers.auth import SERVICE
from handlers.auth.keys import KeyRing, RetireRefused, retire_key, write_new_key
from handlers.auth.legacy_import import import_credentials
from handlers.auth.main import MIGRATIONS, create_app
from handlers.auth.models import Outbox
from handlers.auth.service import set_admin
from handlers.auth.settings import AuthSettings
from schemas.errors import ReplyError


def _serve(settings: AuthSettings) -> None:
    run_async(lambda: serve(create_app(settings)))


def _migrate(settings: AuthSettings) -> None:
    upgrade(MIGRATIONS, settings.database_url)


def _import_legacy(settings: AuthSettings, args: list[str]) -> int:
    options = parse_import_arguments(args, prog="python -m handlers.auth import-legacy")
    status = 0

    async def main() -> None:
        nonlocal status
        status = await run_import(options, settings.database_url, import_credentials)

    run_async(main)
    return status


async def _set_admin(settings: AuthSettings, email: str, *, admin: bool) -> str:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        return await set_admin(session_factory(engine), email, admin=admin)
    finally:
        await engine.dispose()


def _role_command(*, admin: bool) -> Callable[[AuthSettings, list[str]], int]:
    command = "grant-admin" if admin else "revoke-admin"

    def run(settings: AuthSettings, args: list[str]) -> int:
        if len(args) != 1:
            print(f"usage: python -m handlers.auth {command} EMAIL", file=sys.stderr)
            return 2
        [email] = args
        try:
            user_id = asyncio.run(_set_admin(settings, email, admin=admin))
        except ReplyError as exc:
            print(f"error: {exc.reply.message}", file=sys.stderr)
            return 1
        except (SQLAlchemyError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"error: the auth database failed ({reason}); is it migrated (busway migrate auth)?", file=sys.stderr)
            return 1
        done = "granted the admin role to" if admin else "revoked the admin role of"
        print(f"{done} {email} (user {user_id}); it takes effect at the account's next login or refresh")
        return 0

    return run


def _eventlog(settings: AuthSettings, args: list[str]) -> int:
    encode = functools.partial(wire.encode, signer=settings.bus.signer(SERVICE))
    return export_command(SERVICE, settings.database_url, Outbox, args, encode)


def _rotate_key(settings: AuthSettings, args: list[str]) -> int:
    """Add a signing key to the folder (it signs from now on), or retire an old one (``--retire KID``)."""
    if args and (len(args) != 2 or args[0] != "--retire" or not args[1].strip()):
        print("usage: python -m handlers.auth rotate-key [--retire KID]", file=sys.stderr)
        return 2
    retire = args[1].strip() if args else None
    if settings.signing_key is not None:
        print(
            "rotate-key: AUTH_SIGNING_KEY is set; rotation works on AUTH_SIGNING_KEYS_DIR (unset the key)",
            file=sys.stderr,
        )
        return 1
    folder = settings.keys_dir
    try:
        if retire is not None:
            path = retire_key(folder, retire)
            print(f"retired {retire}: deleted {path}")
            return 0
        path = write_new_key(folder)
        kid = KeyRing.load(None, folder, generate=False).current.kid
    except (RetireRefused, ValueError, OSError) as exc:
        print(f"rotate-key: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {path} (kid {kid}); the auth service signs with it within "
        f"{settings.keys_reload_interval:g} s, tokens of the older keys stay valid until they expire"
    )
    return 0


if __name__ == "__main__":
    sys.exit(
        run_process(
            SERVICE,
            "AUTH_",
            AuthSettings,
            lambda s: s.bus,
            {"serve": _serve, "migrate": _migrate},
            with_args={
                "eventlog": _eventlog,
                "import-legacy": _import_legacy,
                "grant-admin": _role_command(admin=True),
                "revoke-admin": _role_command(admin=False),
                "rotate-key": _rotate_key,
            },
        )
    )

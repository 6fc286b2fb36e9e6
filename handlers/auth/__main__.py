"""``python -m handlers.auth [serve|migrate|rotate-key [--retire KID]]``."""

import sys
from collections.abc import Callable

from bus.process import run_async, run_process
from bus.runtime import serve
from db.migrations import upgrade
from handlers.auth import SERVICE
from handlers.auth.keys import KeyRing, RetireRefused, retire_key, write_new_key
from handlers.auth.main import MIGRATIONS, create_app
from handlers.auth.settings import AuthSettings


def _serve(settings: AuthSettings) -> None:
    run_async(lambda: serve(create_app(settings)))


def _migrate(settings: AuthSettings) -> None:
    upgrade(MIGRATIONS, settings.database_url)


def _rotate(retire: str | None) -> Callable[[AuthSettings], None]:
    def rotate(settings: AuthSettings) -> None:
        """Add a signing key to the folder (it signs from now on), or retire an old one."""
        if settings.signing_key is not None:
            sys.exit("rotate-key: AUTH_SIGNING_KEY is set; rotation works on AUTH_SIGNING_KEYS_DIR (unset the key)")
        folder = settings.keys_dir
        try:
            if retire is not None:
                path = retire_key(folder, retire)
                print(f"retired {retire}: deleted {path}")
                return
            path = write_new_key(folder)
            kid = KeyRing.load(None, folder, generate=False).current.kid
        except (RetireRefused, ValueError, OSError) as exc:
            sys.exit(f"rotate-key: {exc}")
        print(
            f"wrote {path} (kid {kid}); the auth service signs with it within "
            f"{settings.keys_reload_interval:g} s, tokens of the older keys stay valid until they expire"
        )

    return rotate


def main(argv: list[str]) -> int:
    """Run the command in ``argv``; ``rotate-key`` takes ``--retire KID``."""
    retire = None
    if argv[:1] == ["rotate-key"] and len(argv) > 1:
        if len(argv) != 3 or argv[1] != "--retire" or not argv[2].strip():
            print("usage: python -m handlers.auth rotate-key [--retire KID]", file=sys.stderr)
            return 2
        retire, argv = argv[2].strip(), argv[:1]
    commands = {"serve": _serve, "migrate": _migrate, "rotate-key": _rotate(retire)}
    return run_process(SERVICE, "AUTH_", AuthSettings, lambda s: s.bus, commands, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

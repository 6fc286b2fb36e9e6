"""``python -m handlers.activity [serve|migrate|reset]``."""

import asyncio
import sys

from sqlalchemy.exc import SQLAlchemyError

from bus.process import run_async, run_process
from bus.runtime import serve
from db.migrations import upgrade
from handlers.activity import SERVICE
from handlers.activity.main import MIGRATIONS, create_app, reset
from handlers.activity.settings import ActivitySettings


def _serve(settings: ActivitySettings) -> None:
    run_async(lambda: serve(create_app(settings)))


def _migrate(settings: ActivitySettings) -> None:
    upgrade(MIGRATIONS, settings.database_url)


def _reset(settings: ActivitySettings) -> None:
    try:
        entries, handled = asyncio.run(reset(settings))
    except (SQLAlchemyError, OSError) as exc:
        print(f"reset failed: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        raise SystemExit(1) from None
    # Replayed events are recorded again: `busway replay` them to the activity group.
    print(f"deleted {entries} activity entries and {handled} inbox records")


if __name__ == "__main__":
    sys.exit(
        run_process(
            SERVICE,
            "ACTIVITY_",
            ActivitySettings,
            lambda s: s.bus,
            {"serve": _serve, "migrate": _migrate, "reset": _reset},
        )
    )

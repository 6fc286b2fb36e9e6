"""``python -m handlers.mailer [serve]``."""

import sys

from bus.process import run_async, run_process
from bus.runtime import serve
from handlers.mailer import SERVICE
from handlers.mailer.main import create_app
from handlers.mailer.settings import MailerSettings


def _serve(settings: MailerSettings) -> None:
    run_async(lambda: serve(create_app(settings)))


if __name__ == "__main__":
    sys.exit(run_process(SERVICE, "MAILER_", MailerSettings, lambda s: s.bus, {"serve": _serve}))

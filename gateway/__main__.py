"""``python -m gateway``: serve the HTTP API with uvicorn."""

import sys

import uvicorn

from bus.process import run_process
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.state import SERVICE


def _serve(settings: GatewaySettings) -> None:
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="auto",
        http="auto",
    )


if __name__ == "__main__":
    sys.exit(run_process(SERVICE, "GATEWAY_", GatewaySettings, lambda s: s.bus, {"serve": _serve}))

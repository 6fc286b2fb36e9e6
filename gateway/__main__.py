"""``python -m gateway``: serve the HTTP API with uvicorn."""

import sys

import uvicorn

from bus.process import freeze_heap, run_process
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.state import SERVICE


def _serve(settings: GatewaySettings) -> None:
    app = create_app(settings)
    app.on_startup.append(freeze_heap)  # once connected: the process is what it will be from now on
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="auto",
        http="auto",
    )


if __name__ == "__main__":
    sys.exit(run_process(SERVICE, "GATEWAY_", GatewaySettings, lambda s: s.bus, {"serve": _serve}))

"""X-Request-ID: taken from the request when it is sane, else made; bound as correlation id."""

import re
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from loguru import logger

from bus.correlation import correlated, new_id
from gateway.metrics import UNMATCHED, GatewayMetrics
from gateway.state import SERVICE

HEADER = "x-request-id"
_HEADER = HEADER.encode()
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_middleware(app: ASGIApp, metrics: GatewayMetrics | None = None) -> ASGIApp:
    """Wrap ``app``: every response carries X-Request-ID; every log line the same id.

    One log line per request, and with ``metrics`` one count and duration per route.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == _HEADER), "")
        request_id = given if _VALID.match(given) else new_id()
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Ours replaces any the app set (a proxied monolith's); header names arrive lower-cased or not.
                headers = [header for header in message.get("headers", ()) if header[0].lower() != _HEADER]
                headers.append((_HEADER, request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        with correlated(request_id, service=SERVICE):
            try:
                await app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                # Litestar's router puts the matched route's template in the scope.
                route = scope.get("path_template") or UNMATCHED
                logger.info(
                    "{} {} {}",
                    scope["method"],
                    scope["path"],
                    status,
                    method=scope["method"],
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
                if metrics is not None:
                    metrics.http_request(scope["method"], route, status, elapsed)

    return middleware

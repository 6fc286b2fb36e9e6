"""X-Request-ID: taken from the request when it is sane, else made; bound as correlation id."""

import re
import time

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from loguru import logger

from bus.correlation import correlated, new_id
from gateway.state import SERVICE

HEADER = "x-request-id"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Wrap ``app``: every response carries X-Request-ID; every log line the same id."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == HEADER.encode()), "")
        request_id = given if _VALID.match(given) else new_id()
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)["X-Request-ID"] = request_id
            await send(message)

        with correlated(request_id, service=SERVICE):
            try:
                await app(scope, receive, send_with_id)
            finally:
                logger.info(
                    "{} {} {}",
                    scope["method"],
                    scope["path"],
                    status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )

    return middleware

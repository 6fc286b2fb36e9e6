"""GET /asyncapi.json: the AsyncAPI 3.0 document of the bus, built from schemas/."""

import json
from functools import cache

from litestar import Response, get
from litestar.enums import MediaType

from schemas.asyncapi import asyncapi_document


@cache
def _document() -> bytes:
    # Built once per process, on first request: the contracts do not change while it runs.
    return json.dumps(asyncapi_document(), indent=2, ensure_ascii=False).encode()


@get(
    "/asyncapi.json",
    summary="The AsyncAPI 3.0 document of the bus: every command, reply and event stream",
    description="The same document as docs/asyncapi.json; docs/events.md describes it for people.",
    tags=["contracts"],
)
async def asyncapi() -> Response[bytes]:
    """The AsyncAPI document, as JSON."""
    return Response(_document(), media_type=MediaType.JSON)


ROUTES = [asyncapi]

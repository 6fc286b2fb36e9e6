"""GET /asyncapi.json serves the AsyncAPI document of the bus, the same as docs/asyncapi.json."""

import json
from pathlib import Path

import pytest

from tests.harness import System

pytestmark = pytest.mark.e2e

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


async def test_the_gateway_serves_the_asyncapi_document(system: System) -> None:
    response = await system.http.get("/asyncapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    served = response.json()
    assert served["asyncapi"] == "3.0.0"
    assert served == json.loads(DOCUMENT.read_text(encoding="utf-8"))
    schema = (await system.http.get("/schema/openapi.json")).json()
    assert "/asyncapi.json" in schema["paths"]

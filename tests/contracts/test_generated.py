"""What is generated from schemas/ is current, the snapshot guards the contracts, and the
AsyncAPI document is valid AsyncAPI 3.0.

asyncapi-3.0.0.schema.json beside this file is the official AsyncAPI 3.0.0 JSON schema
(``schemas/3.0.0-without-$id.json`` of the npm package @asyncapi/specs 6.11.1, Apache-2.0),
kept here so the check runs offline.
"""

import ast
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from schemas.catalog import commands, contracts, events
from schemas.compatibility import REFRESH, breaking, compare
from schemas.generate import ASYNCAPI_JSON, EVENTS_MD, SNAPSHOT, SUBSCRIBER, generate, main, read_snapshot, stale

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI_SCHEMA = Path(__file__).with_name("asyncapi-3.0.0.schema.json")


def test_the_generated_docs_are_current() -> None:
    generated = generate(ROOT)
    out_of_date = stale(ROOT, {path: generated[path] for path in (EVENTS_MD, ASYNCAPI_JSON)})
    if out_of_date:
        names = ", ".join(str(path) for path in out_of_date)
        pytest.fail(
            f"{names} differ from what schemas/ generates now: run `{REFRESH}` and commit the result", pytrace=False
        )


def test_the_contracts_match_their_snapshot() -> None:
    changes = compare(read_snapshot(ROOT), contracts())
    incompatible = breaking(changes)
    if incompatible:
        pytest.fail(
            "\n".join(
                [
                    f"The contracts changed incompatibly since {SNAPSHOT} was taken:",
                    *(f"- {change}" for change in incompatible),
                    "Consumers and the event log still hold the old shape; see docs/events.md#versioning.",
                ]
            ),
            pytrace=False,
        )
    if changes:
        pytest.fail(
            "\n".join(
                [
                    f"The contracts changed compatibly; record it in {SNAPSHOT} with `{REFRESH}`:",
                    *(f"- {change}" for change in changes),
                ]
            ),
            pytrace=False,
        )


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _pointer(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_the_asyncapi_document_is_valid_asyncapi_3() -> None:
    document = json.loads((ROOT / ASYNCAPI_JSON).read_text(encoding="utf-8"))
    schema = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message[:200]}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(document)
    ]
    assert errors == []
    unresolved = []
    for ref in _refs(document):
        try:
            _pointer(document, ref)
        except (KeyError, IndexError):
            unresolved.append(ref)
    assert unresolved == []


def test_the_asyncapi_document_covers_every_stream() -> None:
    document = json.loads((ROOT / ASYNCAPI_JSON).read_text(encoding="utf-8"))
    channels, operations = document["channels"], document["operations"]
    for name, (_, version, stream) in events().items():
        message = _pointer(document, channels[stream]["messages"][name]["$ref"])
        assert message["payload"]["properties"]["version"]["const"] == version
        assert message["payload"]["properties"]["payload"] == {"$ref": f"#/components/schemas/{name}"}
        assert f"dlq.{stream}" in channels
    for stream, route in commands().items():
        assert channels[stream]["address"] == "{prefix}" + stream
        operation = operations[stream]
        assert operation["action"] == "receive"
        replies = [ref["$ref"].rsplit("/", 1)[-1] for ref in operation["reply"]["messages"]]
        assert replies == [route.reply.__name__, "busway.Error"]
    assert channels["inbox"]["address"] == "{prefix}inbox.{instance}"


def test_the_example_subscriber_uses_redis_py_and_the_standard_library_only() -> None:
    tree = ast.parse((ROOT / SUBSCRIBER).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"redis"}
    assert (ROOT / SUBSCRIBER).read_text(encoding="utf-8").rstrip("\n") in (ROOT / EVENTS_MD).read_text(
        encoding="utf-8"
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of what generation reads, to write into."""
    (tmp_path / SUBSCRIBER).parent.mkdir(parents=True)
    shutil.copy(ROOT / SUBSCRIBER, tmp_path / SUBSCRIBER)
    return tmp_path


def test_the_generator_refuses_an_incompatible_change_unless_told(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = contracts()
    snapshot["events"]["UserUpdated"]["schema"]["properties"]["reason"] = {"type": "string"}
    (root / SNAPSHOT).parent.mkdir(parents=True)
    (root / SNAPSHOT).write_text(json.dumps(snapshot), encoding="utf-8")

    assert main(["--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "refusing to refresh schemas/contracts.snapshot.json" in err
    assert "INCOMPATIBLE: event UserUpdated, field `reason`: the field was removed" in err
    assert "UserUpdatedV2" in err
    assert not (root / EVENTS_MD).exists()
    assert json.loads((root / SNAPSHOT).read_text(encoding="utf-8")) == snapshot

    assert main(["--root", str(root), "--accept-breaking"]) == 0
    assert read_snapshot(root) == contracts()
    assert (root / EVENTS_MD).read_text(encoding="utf-8") == generate(ROOT)[EVENTS_MD]
    assert main(["--root", str(root), "--check"]) == 0


def test_the_generator_check_names_what_is_out_of_date(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(root), "--only", "asyncapi"]) == 0
    assert [path.name for path in root.rglob("*.json")] == ["asyncapi.json"]
    assert main(["--root", str(root)]) == 0
    (root / EVENTS_MD).write_text("edited by hand\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["--root", str(root), "--check"]) == 1
    assert capsys.readouterr().err == "docs/events.md is out of date: run `uv run just contracts`\n"


def test_the_generator_reports_a_missing_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: docs/examples/subscriber.py not found under")

"""Write what is generated from the contracts: the snapshot, docs/events.md, docs/asyncapi.json.

    python -m schemas.generate                    # all three (``uv run just contracts``)
    python -m schemas.generate --accept-breaking  # ... even when a change is incompatible
    python -m schemas.generate --only asyncapi    # docs/asyncapi.json alone (``uv run just asyncapi``)
    python -m schemas.generate --check            # write nothing; exit 1 when anything is out of date

Refreshing the snapshot is refused when the contracts changed incompatibly since it was
taken (see schemas.compatibility), unless ``--accept-breaking`` says it is deliberate.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from schemas.asyncapi import asyncapi_document
from schemas.catalog import CatalogError, contracts
from schemas.compatibility import Change, breaking, compare
from schemas.markdown import render

SNAPSHOT: Final = Path("schemas/contracts.snapshot.json")
EVENTS_MD: Final = Path("docs/events.md")
ASYNCAPI_JSON: Final = Path("docs/asyncapi.json")
SUBSCRIBER: Final = Path("docs/examples/subscriber.py")
TARGETS: Final = {"snapshot": SNAPSHOT, "events": EVENTS_MD, "asyncapi": ASYNCAPI_JSON}


class GenerationError(Exception):
    """Something generation needs is missing or malformed (the message says what)."""


def to_json(value: Any) -> str:
    """The text of a generated JSON file: indented, UTF-8, one newline at the end."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def read_snapshot(root: Path) -> dict[str, Any]:
    """The committed contracts snapshot; empty when there is none yet."""
    path = root / SNAPSHOT
    if not path.exists():
        return {}
    try:
        snapshot: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        msg = f"{SNAPSHOT} is not valid JSON ({exc}); restore it from git"
        raise GenerationError(msg) from None
    return snapshot


def generate(root: Path) -> dict[Path, str]:
    """Every generated file's path (relative to ``root``) and its up-to-date text."""
    subscriber = root / SUBSCRIBER
    if not subscriber.is_file():
        msg = f"{SUBSCRIBER} not found under {root}: run from the repository root"
        raise GenerationError(msg)
    return {
        SNAPSHOT: to_json(contracts()),
        EVENTS_MD: render(subscriber.read_text(encoding="utf-8"), SUBSCRIBER.as_posix()),
        ASYNCAPI_JSON: to_json(asyncapi_document()),
    }


def stale(root: Path, generated: dict[Path, str]) -> list[Path]:
    """The generated files whose committed text differs from ``generated``."""
    return [
        path
        for path, text in generated.items()
        if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text
    ]


def _report(changes: Sequence[Change]) -> None:
    for change in changes:
        print(f"  {change}", file=sys.stderr if change.breaking else sys.stdout)


def run(root: Path, *, only: str | None, check: bool, accept_breaking: bool) -> int:
    """Regenerate (or with ``check`` verify) the generated files; the exit status."""
    generated = generate(root)
    if only is not None:
        generated = {TARGETS[only]: generated[TARGETS[only]]}
    changes = compare(read_snapshot(root), contracts()) if SNAPSHOT in generated else []
    incompatible = breaking(changes)
    if check:
        out_of_date = stale(root, generated)
        for path in out_of_date:
            print(f"{path} is out of date: run `uv run just contracts`", file=sys.stderr)
        _report(incompatible)
        return 1 if out_of_date or incompatible else 0
    if incompatible and not accept_breaking:
        print(f"refusing to refresh {SNAPSHOT}: the contracts changed incompatibly", file=sys.stderr)
        _report(incompatible)
        print(
            "Make these changes compatibly (see docs/events.md#versioning), or pass --accept-breaking "
            "if breaking every consumer is deliberate. Nothing was written.",
            file=sys.stderr,
        )
        return 1
    _report(changes)
    for path in stale(root, generated):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(generated[path], encoding="utf-8")
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: ``python -m schemas.generate``."""
    parser = argparse.ArgumentParser(
        prog="python -m schemas.generate",
        description="Regenerate the contracts snapshot, docs/events.md and docs/asyncapi.json from schemas/.",
    )
    parser.add_argument("--only", choices=sorted(TARGETS), help="write one of them alone")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when anything is out of date")
    parser.add_argument(
        "--accept-breaking", action="store_true", help="refresh the snapshot even after an incompatible change"
    )
    parser.add_argument("--root", type=Path, default=Path(), help="the repository root (default: here)")
    args = parser.parse_args(argv)
    try:
        return run(args.root, only=args.only, check=args.check, accept_breaking=args.accept_breaking)
    except (CatalogError, GenerationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The correlation id of the work in progress, kept per asyncio task."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from loguru import logger

_correlation_id: ContextVar[str | None] = ContextVar("busway_correlation_id", default=None)


def new_id() -> str:
    """A fresh id for a message, a request or a correlation."""
    return uuid.uuid4().hex


def current_correlation_id() -> str | None:
    """The id bound by the enclosing :func:`correlated` block, if any."""
    return _correlation_id.get()


@contextmanager
def correlated(correlation_id: str, **fields: object) -> Iterator[str]:
    """Bind ``correlation_id`` (and ``fields``) for the code inside and its log lines."""
    token = _correlation_id.set(correlation_id)
    try:
        with logger.contextualize(correlation_id=correlation_id, **fields):
            yield correlation_id
    finally:
        _correlation_id.reset(token)

"""Typed errors: what a handler replies instead of a result when it cannot do the work."""

from enum import StrEnum
from typing import Any

from pydantic import Field

from schemas.base import Contract


class ErrorCode(StrEnum):
    """Every error a caller can receive over the bus; the gateway maps each to HTTP."""

    INVALID_PAYLOAD = "invalid_payload"
    EMAIL_TAKEN = "email_taken"
    INVALID_CREDENTIALS = "invalid_credentials"
    WRONG_PASSWORD = "wrong_password"
    INVALID_RESET_TOKEN = "invalid_reset_token"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    EXPIRED = "expired"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class ErrorDetail(Contract):
    """One problem with one field of a payload."""

    loc: tuple[str | int, ...] = ()
    msg: str
    type: str = "value_error"


class ErrorReply(Contract):
    """A handler's answer when the command failed; never carries a stack trace."""

    code: ErrorCode
    message: str
    details: tuple[ErrorDetail, ...] = ()
    extra: dict[str, Any] = Field(default_factory=dict)


class ReplyError(Exception):
    """Raised where a command fails in a way the caller must hear about.

    A handler raises it (or a subclass); the bus turns it into an :class:`ErrorReply`;
    the requester's client raises it again on the other side.
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        details: tuple[ErrorDetail, ...] = (),
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.reply = ErrorReply(code=code or self.code, message=message, details=details, extra=extra or {})

    @classmethod
    def from_reply(cls, reply: ErrorReply) -> "ReplyError":
        """The exception a requester raises for a received error reply."""
        return cls(reply.message, code=reply.code, details=reply.details, extra=reply.extra)

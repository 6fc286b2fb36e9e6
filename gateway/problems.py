"""Errors as RFC 9457 problem details, each with the request's correlation id.

Nothing else leaves the gateway on failure: no stack trace, no internal message.
"""

from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from loguru import logger
from pydantic import ValidationError as PydanticValidationError

from bus.correlation import current_correlation_id
from schemas.errors import ErrorCode, ReplyError

PROBLEM_JSON = "application/problem+json"

STATUS_OF: dict[ErrorCode, int] = {
    ErrorCode.INVALID_PAYLOAD: 422,
    ErrorCode.EMAIL_TAKEN: 409,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.WRONG_PASSWORD: 403,
    ErrorCode.INVALID_RESET_TOKEN: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.EXPIRED: 504,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


def problem(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": f"/problems/{(code or HTTPStatus(status).phrase.lower()).replace(' ', '-').replace('_', '-')}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "correlation_id": current_correlation_id(),
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def on_reply_error(request: Request[Any, Any, Any], exc: ReplyError) -> Response[dict[str, Any]]:
    """A service's typed error, as HTTP."""
    reply = exc.reply
    status = STATUS_OF.get(reply.code, 500)
    # A refusal by the gateway's own breaker says how long the circuit stays open.
    headers = {"Retry-After": str(getattr(exc, "retry_after", 1))} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    errors = [{"field": ".".join(str(p) for p in d.loc), "message": d.msg, "type": d.type} for d in reply.details]
    return problem(request, status, reply.message, code=reply.code.value, errors=errors, headers=headers, **reply.extra)


def on_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """A request that does not match its schema: 422 with one entry per field."""
    errors = [
        {"field": item.get("key") or "", "message": item.get("message", ""), "source": item.get("source", "body")}
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    if not errors:
        return problem(request, 400, str(exc.detail) or "Malformed request.", code="bad-request")
    return problem(request, 422, "The request is not valid.", code="invalid-request", errors=errors)


def on_pydantic_error(request: Request[Any, Any, Any], exc: PydanticValidationError) -> Response[dict[str, Any]]:
    """A path or query value that cannot make a valid command: 422."""
    errors = [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors()
    ]
    return problem(request, 422, "The request is not valid.", code="invalid-request", errors=errors)


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Litestar's own errors (404, 405, 401 from auth) as problems."""
    return problem(request, exc.status_code, str(exc.detail), headers=exc.headers)


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything else: logged in full here, a plain 500 out there."""
    logger.opt(exception=exc).error("unhandled error on {} {}", request.method, request.url.path)
    return problem(request, 500, "The gateway failed to handle the request.", code="internal")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ReplyError: on_reply_error,
    ValidationException: on_validation_error,
    PydanticValidationError: on_pydantic_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}

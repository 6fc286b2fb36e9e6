"""Structured logs with loguru: one sink, stdlib logging routed through it.

Text lines for development, flat JSON lines (one object per line) for production. Every
line carries ``service`` and ``instance``; the ``correlation_id`` (and the other fields)
bound with ``bus.correlation.correlated`` appear on every line of the work they belong to,
added to each line as it is written (a log call does not pass those names itself).
"""

import logging
import sys
import traceback
from typing import Any

import msgspec
from loguru import logger

from bus.correlation import log_fields

# str() for anything a caller bound that JSON cannot hold: a log line is never lost to it.
_encoder = msgspec.json.Encoder(enc_hook=str)
_TEXT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[service]}</cyan> [{extra[correlation_id]}] {message}{extra[fields]}"
)


class InterceptHandler(logging.Handler):
    """Send stdlib records (FastStream, uvicorn, SQLAlchemy, Litestar) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        """Forward one record with its level and origin."""
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).bind(logger_name=record.name).log(level, record.getMessage())


def _json_sink(message: Any) -> None:
    record = message.record
    line: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
    }
    line.update({k: v for k, v in record["extra"].items() if k != "fields" and v is not None})
    if record["exception"] is not None:
        exc = record["exception"]
        line["exception"] = f"{getattr(exc.type, '__name__', exc.type)}: {exc.value}"
        # The whole trace in one field: a JSON line stays one line, and nothing is lost.
        line["traceback"] = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback)).rstrip()
    sys.stdout.write(_encoder.encode(line).decode() + "\n")
    sys.stdout.flush()


def _text_fields(record: Any) -> str:
    extra = {
        k: v
        for k, v in record["extra"].items()
        if k not in {"service", "instance", "correlation_id", "fields"} and v is not None
    }
    record["extra"]["fields"] = "".join(f" {k}={v}" for k, v in extra.items())
    return _TEXT + "\n{exception}"


def configure_logging(service: str, fmt: str = "text", level: str = "INFO", instance: str | None = None) -> None:
    """Make loguru the only sink for this process, tagged with ``service`` and ``instance``."""
    logger.remove()
    defaults: dict[str, object] = {"service": service, "correlation_id": "-", "fields": ""}
    if instance is not None:
        defaults["instance"] = instance

    def with_log_fields(record: Any) -> None:
        # The defaults, then the fields of the enclosing ``correlated`` blocks, then what the
        # line bound or passed itself: each wins over the one before. Only lines that are
        # written pay for it: a line below the level never gets here.
        record["extra"] = {**defaults, **log_fields(), **record["extra"]}

    logger.configure(extra={}, patcher=with_log_fields)
    if fmt == "json":
        logger.add(_json_sink, level=level, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stdout, level=level, format=_text_fields, backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.INFO, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar", "faststream", "sqlalchemy"):
        std = logging.getLogger(name)
        std.handlers = [InterceptHandler()]
        std.propagate = False
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def stdlib_logger(service: str) -> logging.Logger:
    """A stdlib logger for FastStream, routed through loguru."""
    std = logging.getLogger(f"busway.{service}")
    if not std.handlers:
        std.handlers = [InterceptHandler()]
        std.propagate = False
    std.setLevel(logging.WARNING)
    return std

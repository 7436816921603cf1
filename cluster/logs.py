"""Structured logs: one JSON object per line, for log shippers (CloudWatch Logs, Loki, jq).

Every line has time, level, logger and message; lines that record an event (a connection opened
or closed, a login refused, a leader change, an alarm) add `event` and that event's fields.
`--log-format text` gives the classic one-line text form for reading by eye.
"""

from __future__ import annotations

import datetime
import logging
import typing

import orjson

__all__ = ["JsonFormatter", "configure_logging", "log_event"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, typing.Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def log_event(
    logger: logging.Logger,
    event: str,
    message: str,
    level: int = logging.INFO,
    **fields: typing.Any,
) -> None:
    """Log `message` for people and `event` with `fields` for machines, on one line."""
    logger.log(level, message, extra={"fields": {"event": event, **fields}})

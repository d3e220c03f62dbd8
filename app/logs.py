"""Log records carry the request id; lines are plain text or JSON (MSGSYNC_LOG_FORMAT)."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS

__all__ = ["RequestIdFilter", "log_config", "request_id"]

# Set by the front door (app.edge.frontdoor) for the request being answered. uvicorn
# runs each request in a task of its own, so the value is the request's alone; "-" outside
# any request (start-up, the listener, the ack batcher's own work).
request_id: ContextVar[str] = ContextVar("msgsync_request_id", default="-")

_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# The fields of a JSON line; python-json-logger renames them below and adds the time.
_JSON = "%(levelname)s %(name)s %(message)s %(request_id)s"


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record that passes a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def log_config(log_format: Literal["text", "json"], level: str = "INFO") -> dict[str, Any]:
    """A logging.config.dictConfig for the service and uvicorn's own loggers alike, so that
    an operator's log pipeline gets one format from one stream."""
    if log_format == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": _JSON,
            "rename_fields": {"levelname": "level", "name": "logger"},
            # ISO 8601 in UTC, under "time".
            "timestamp": "time",
            # uvicorn adds the message again with terminal colours: not for machines.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        }
    else:
        formatter = {"format": _TEXT}
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "msgsync",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    # uvicorn's loggers get the same handler and do not propagate, so no line is written
    # twice; the others reach it through the root logger, which passes warnings and worse
    # from libraries, and everything the service (app.*) and its migrations log.
    uvicorn = {"handlers": ["msgsync"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"msgsync": formatter},
        "handlers": {"msgsync": handler},
        "root": {"handlers": ["msgsync"], "level": "WARNING"},
        "loggers": {
            "uvicorn": uvicorn,
            # Passes its records to "uvicorn" above, as uvicorn's own configuration does.
            "uvicorn.error": {"level": level},
            "uvicorn.access": uvicorn,
            "app": {"level": level},
            "alembic.runtime.migration": {"level": level},
        },
    }

"""Logging configuration shared by the CLI and every server worker: readable text, or JSON lines.

Secrets never reach a log: the access line (ops/access_log.py) names the key, never its secret, and no
header is ever logged.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the fields log pipelines expect."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def logging_config(level: str = "INFO", log_format: str = "text") -> dict[str, Any]:
    """A dictConfig for modeldex's loggers and the server's own (granian), all on stderr."""
    formatter = {"()": JsonFormatter} if log_format == "json" else {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "modeldex": {"handlers": ["stderr"], "level": level, "propagate": False},
            "_granian": {"handlers": ["stderr"], "level": level, "propagate": False},
            "granian.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }

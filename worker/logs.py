"""Logging: plain text for people, JSON lines for machines (`LABELQ_LOG_FORMAT=json`).

Batch lines carry a batch id, the queue, counts and timings; request lines (DEBUG) carry the request id,
outcome and timings. The text of a message is never logged unless `LABELQ_LOG_TEXTS=true`.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from worker.settings import Settings

JSON_FIELDS = "{asctime}{levelname}{name}{message}"


def configure_logging(settings: Settings, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(JSON_FIELDS, style="{", rename_fields={"levelname": "level", "asctime": "time"})
        )
    else:
        handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/%(name)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

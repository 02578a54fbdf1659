"""Logging: plain text for people, JSON lines for machines (`LABELQ_LOG_FORMAT=json`).

Batch lines carry a batch id, the queue, counts and timings; request lines (DEBUG) carry the request id,
outcome and timings; with tracing on (worker/tracing.py), a line logged inside a span carries `trace_id` and
`span_id`. The text of a message is never logged unless `LABELQ_LOG_TEXTS=true`.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from worker.settings import Settings
from worker.tracing import TraceIdFilter

JSON_FIELDS = "{asctime}{levelname}{name}{message}"


def configure_logging(settings: Settings, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(JSON_FIELDS, style="{", rename_fields={"levelname": "level", "asctime": "time"})
        )
    else:
        handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/%(name)s] %(message)s"))
    handler.addFilter(TraceIdFilter())  # trace_id, span_id on lines logged inside a span (tracing on)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

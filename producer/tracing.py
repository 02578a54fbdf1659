"""The sending side's tracing (the `labelq[otel]` extra): a `traceparent` in each request's Celery message headers,
as `opentelemetry-instrumentation-celery` puts it there, so the worker's spans join the sender's trace.

On when the `OTEL_*` variables ask for traces (as the worker reads them: worker/tracing.py), or when the
application installed an OpenTelemetry SDK tracer provider itself. Off, nothing of opentelemetry is imported
after the first send's check and each send costs one `None` test.
"""

from __future__ import annotations

import os
from typing import Any

from schemas.tracing import tracing_wanted

SERVICE_NAME = "labelq-producer"  # when OTEL_SERVICE_NAME does not name the service
_tracer: Any = None
_checked_pid: int | None = None


def _tracer_once() -> Any:
    global _tracer, _checked_pid
    if _checked_pid == os.getpid():
        return _tracer
    _checked_pid = os.getpid()
    _tracer = None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        if not tracing_wanted(os.environ):
            return None
        from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            return None
        resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME_KEY: SERVICE_NAME})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("labelq.producer")
    return _tracer


def send_headers(task_id: str, queue: str) -> dict[str, str] | None:
    """The headers for one request's Celery message: a producer span `apply_async/labelq.classify` (the child of
    the current span, if any) and its W3C `traceparent`; None when tracing is off."""
    tracer = _tracer_once()
    if tracer is None:
        return None
    from opentelemetry import propagate, trace

    with tracer.start_as_current_span(
        "apply_async/labelq.classify",
        kind=trace.SpanKind.PRODUCER,
        attributes={"messaging.message.id": task_id, "messaging.destination.name": queue},
    ):
        headers: dict[str, str] = {}
        propagate.inject(headers)
        return headers

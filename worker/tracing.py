"""Tracing with OpenTelemetry (the `labelq[otel]` extra): off unless the standard `OTEL_*` variables turn it on.

On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`), or when `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; `OTEL_SDK_DISABLED=true` turns it off whatever else says. The SDK
reads the rest itself (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`,
`OTEL_EXPORTER_OTLP_*`). When off, or when the packages are missing (one warning), nothing of opentelemetry is
imported and every hook is one `if tracing.active is None` test.

What a worker traces (docs/operations.md, "Tracing"):
- `labelq.request`: one span per request, from its arrival in the queue to its ack, the child of the sender's
  span when its Celery message carries a W3C `traceparent` header (as `opentelemetry-instrumentation-celery`
  puts it there); attributes: queue wait, outcome, label set and version, scorer. Its trace id and
  `traceparent` go into the result's metadata (`schemas.result.TRACE_ID_KEY`, `TRACEPARENT_KEY`).
- `labelq.batch`: the batch it was classified in (the child of its first traced request, linked both ways to
  every request of it), with children `labelq.model_run` (model, pairs, padded tokens) and `labelq.result_write`.
- `labelq.webhook`: each delivery attempt, the child of the request's span (read from the result's metadata).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from schemas.result import TRACE_ID_KEY, TRACEPARENT_KEY
from schemas.tracing import tracing_wanted

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

TRACEPARENT_HEADER = "traceparent"  # W3C trace context, a top-level Celery message header (the instrumentation's)
TRACESTATE_HEADER = "tracestate"
SERVICE_NAME = "labelq-worker"  # when OTEL_SERVICE_NAME does not name the service
MAX_LINKS = 128  # the SDK's default span link limit: a batch links at most this many of its requests
NS = 1_000_000_000


wanted = tracing_wanted  # the OTEL_* rule producers share (schemas/tracing.py)


class Tracing:
    """The worker's tracer, with the few operations its hooks need."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = tracer
        self._trace = trace
        self._context = context
        self._propagator = TraceContextTextMapPropagator()

    # --- requests ---

    def start_request(self, headers: Mapping[str, Any], enqueued_at_s: float, queue: str) -> Span:
        """A request's span, begun when it was enqueued, the child of the sender's span if its headers carry one."""
        carrier = {k: v for k in (TRACEPARENT_HEADER, TRACESTATE_HEADER) if isinstance(v := headers.get(k), str)}
        parent = self._propagator.extract(carrier) if carrier else None
        span = self.tracer.start_span(
            "labelq.request",
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            start_time=int(enqueued_at_s * NS),
            attributes={"messaging.destination.name": queue, "messaging.system": "redis"},
        )
        return span

    def ids(self, span: Span) -> dict[str, str]:
        """What goes into the result's metadata: the trace id and the request span's `traceparent`."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        context = span.get_span_context()
        return {
            TRACE_ID_KEY: self._trace.format_trace_id(context.trace_id),
            TRACEPARENT_KEY: carrier[TRACEPARENT_HEADER],
        }

    def batch(self, queue: str, requests: Sequence[Span]) -> AbstractContextManager[Span]:
        """The batch's span, current on this thread while it runs: a child of its first request's span (`requests`
        is not empty), linked to the others (`link` links them to it)."""
        from opentelemetry.trace import Link

        # never a child of a batch it runs inside (realtime work served between a bulk batch's runs)
        parent = self._trace.set_span_in_context(requests[0], self._context.Context())
        links = [Link(span.get_span_context()) for span in requests[1:MAX_LINKS]]
        return self.tracer.start_as_current_span(
            "labelq.batch",
            context=parent,
            links=links,
            attributes={"labelq.queue": queue, "labelq.batch.messages": len(requests)},
        )

    def link(self, span: Span, to: Span) -> None:
        span.add_link(to.get_span_context())

    # --- steps inside a batch (children of the current span) ---

    def model_run(self, model: str, requests: int, pairs: int) -> AbstractContextManager[Span]:
        return self.tracer.start_as_current_span(
            "labelq.model_run",
            attributes={"labelq.model": model, "labelq.requests": requests, "labelq.pairs": pairs},
        )

    def result_write(self, results: int) -> AbstractContextManager[Span]:
        return self.tracer.start_as_current_span("labelq.result_write", attributes={"labelq.results": results})

    # --- webhooks ---

    def webhook(self, traceparent: str | None, url: str, attempt: int) -> AbstractContextManager[Span]:
        parent = self._propagator.extract({TRACEPARENT_HEADER: traceparent}) if traceparent else None
        return self.tracer.start_as_current_span(
            "labelq.webhook",
            context=parent,
            kind=self._trace.SpanKind.CLIENT,
            attributes={"url.full": url, "labelq.webhook.attempt": attempt},
        )

    # --- logs ---

    def current_ids(self) -> tuple[str, str] | None:
        context = self._trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return self._trace.format_trace_id(context.trace_id), self._trace.format_span_id(context.span_id)


active: Tracing | None = None  # this process's tracing, once `configure` found it wanted
_configured_pid: int | None = None


def configure(service_name: str = SERVICE_NAME, environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """Turn tracing on in this process when the `OTEL_*` variables ask for it (once per process: a forked child
    configures its own, the exporter's thread does not survive a fork). A tracer provider already installed
    (a test's, an application's) is used as it is."""
    global active, _configured_pid
    if _configured_pid == os.getpid():
        return active
    _configured_pid = os.getpid()
    active = None
    if not wanted(environ):
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        log.warning("OTEL_* asks for traces but opentelemetry is not installed: pip install 'labelq[otel]'")
        return None
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = _provider(service_name, environ)
        if provider is None:
            return None
        trace.set_tracer_provider(provider)
    active = Tracing(provider.get_tracer("labelq"))
    return active


def _provider(service_name: str, environ: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create({} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME_KEY: service_name})
    provider = TracerProvider(resource=resource)
    exporter: SpanExporter
    for name in (n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")):
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL"))
            if protocol not in (None, "http/protobuf"):
                log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: labelq exports traces over http/protobuf", protocol)
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("traces not exported: pip install 'labelq[otel]' (opentelemetry-exporter-otlp-proto-http)")
                return None
            exporter = OTLPSpanExporter()
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not one labelq knows (otlp, console): ignored", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class TraceIdFilter(logging.Filter):
    """Adds `trace_id` and `span_id` to a log record made inside a span (JSON log lines carry them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        tracing = active
        ids = tracing.current_ids() if tracing is not None else None
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


def model_run(model: str, requests: int, pairs: int) -> AbstractContextManager[Span | None]:
    """A model run's span inside the current batch; nothing when tracing is off."""
    return nullcontext() if active is None else active.model_run(model, requests, pairs)


def ran(span: Span | None, plan: Any) -> None:
    """What a run's plan says (`worker.engine.batching.RunPlan`: runs, padded tokens), when the classifier has one."""
    if span is not None and plan is not None:
        span.set_attribute("labelq.model_runs", len(plan.runs))
        span.set_attribute("labelq.padded_tokens", plan.padded_tokens)


def result_write(results: int) -> AbstractContextManager[Span | None]:
    """The result write's span inside the current batch; nothing when tracing is off."""
    return nullcontext() if active is None else active.result_write(results)


def webhook(body: str, url: str, attempt: int) -> AbstractContextManager[Span | None]:
    """A webhook delivery attempt's span, the child of the request's span named in the result's metadata (`body`
    is the result JSON); nothing when tracing is off."""
    if active is None:
        return nullcontext()
    try:
        metadata = json.loads(body).get("metadata")
        traceparent = metadata.get(TRACEPARENT_KEY) if isinstance(metadata, dict) else None
    except (ValueError, AttributeError):
        traceparent = None
    return active.webhook(traceparent if isinstance(traceparent, str) else None, url, attempt)


def attempted(span: Span | None, outcome: str, status: int | None, error: str | None) -> None:
    """A delivery attempt's outcome (delivered, retry, give_up) and HTTP status on its span."""
    if span is None:
        return
    span.set_attribute("labelq.webhook.outcome", outcome)
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if error is not None:
        span.set_attribute("error.type", error.split(":", 1)[0][:100])

"""Tracing (worker/tracing.py): off by default and free; on, spans with the parents and links docs/operations.md
describes, read from the SDK's in-memory exporter and, end to end, from an OTLP/HTTP receiver in the test."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from producer import Client
from schemas import ClassificationResult, ParsedRequest, parse_request, parse_result
from schemas.result import TRACE_ID_KEY, TRACEPARENT_KEY
from schemas.transport import QUEUE_REALTIME, TASK_CLASSIFY
from tests.conftest import WorkerFactory
from tests.webhook_receiver import Receiver
from tests.worker.delivery.test_webhooks_e2e import wait_until
from worker import tracing
from worker.engine.engine import Engine
from worker.settings import load_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SENDER_TRACE = "0af7651916cd43dd8448eb211c80319c"
SENDER_SPAN = "b7ad6b7169203331"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_the_standard_variables_turn_it_on(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on


@pytest.mark.parametrize("on", [False, True])
def test_without_the_packages_it_is_off_and_the_worker_imports(on: bool) -> None:
    """opentelemetry made unimportable: the worker's modules import and tracing is off (asked for: one warning)."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None;"
        "from worker import tracing; import worker.process.loop, worker.delivery.webhook_jobs, worker.logs;"
        "assert tracing.configure() is None and tracing.active is None"
    )
    env = {"PATH": "/usr/bin:/bin", **({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"} if on else {})}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert ("pip install 'labelq[otel]'" in out.stderr) is on


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into the SDK's in-memory exporter (the global provider left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "active", tracing.Tracing(provider.get_tracer("test")))
    yield exporter
    provider.shutdown()


def request(text: str, request_id: str) -> ParsedRequest:
    parsed = parse_request(json.dumps({"id": request_id, "text": text, "labels": ["refund", "praise"]}))
    assert isinstance(parsed, ParsedRequest)
    return parsed


def test_a_batch_is_the_child_of_its_first_request_with_model_run_and_write(spans: InMemorySpanExporter) -> None:
    active = tracing.active
    assert active is not None
    traced = active.start_request({"traceparent": f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"}, time.time() - 0.5, "q")
    untraced = active.start_request({}, time.time(), "q")  # a request with no sender's trace: a trace of its own
    engine = Engine(load_settings(enable_fake_model=True, model="fake"))
    with active.batch("q", [traced, untraced]) as batch:
        active.link(traced, batch)
        active.link(untraced, batch)
        engine.answer([request("a refund please", "r1"), request("great", "r2")])
        with tracing.result_write(2):
            pass
    traced.end()
    untraced.end()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        by_name.setdefault(span.name, []).append(span)
    [req, other] = by_name["labelq.request"]
    [batch_span] = by_name["labelq.batch"]
    [run] = by_name["labelq.model_run"]
    [write] = by_name["labelq.result_write"]
    assert f"{req.context.trace_id:032x}" == SENDER_TRACE and req.parent and f"{req.parent.span_id:016x}" == SENDER_SPAN
    assert other.context.trace_id != req.context.trace_id and other.parent is None
    assert batch_span.parent and batch_span.parent.span_id == req.context.span_id
    assert [link.context.span_id for link in batch_span.links] == [other.context.span_id]
    assert [link.context.span_id for link in other.links] == [batch_span.context.span_id]  # and back
    assert run.parent and run.parent.span_id == batch_span.context.span_id
    assert run.attributes and run.attributes["labelq.model"] == "fake" and run.attributes["labelq.pairs"] == 4
    assert write.parent and write.parent.span_id == batch_span.context.span_id
    ids = active.ids(traced)
    assert ids[TRACE_ID_KEY] == SENDER_TRACE and ids[TRACEPARENT_KEY].startswith(f"00-{SENDER_TRACE}-")


class OtlpReceiver:
    """An OTLP/HTTP collector in the test: counts the POSTs to /v1/traces and keeps their spans."""

    def __init__(self) -> None:
        self.posts = 0
        self.spans: list[Any] = []  # (service name, span) in arrival order
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    message = ExportTraceServiceRequest.FromString(body)
                    with receiver.lock:
                        receiver.posts += 1
                        for resource in message.resource_spans:
                            attrs = {a.key: a.value.string_value for a in resource.resource.attributes}
                            for scope in resource.scope_spans:
                                receiver.spans += [(attrs.get("service.name"), span) for span in scope.spans]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, name: str) -> list[Any]:
        with self.lock:
            return [span for _, span in self.spans if span.name == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_one_trace_from_an_instrumented_celery_sender_to_the_webhook(
    start_worker: WorkerFactory, client: Client, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's target: a plain Celery app instrumented with opentelemetry-instrumentation-celery sends; one
    trace holds its span, labelq's request span, the batch, its model run and write, and the webhook attempt."""
    from celery import Celery
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    collector = OtlpReceiver()
    webhooks = Receiver(SECRET)
    hook_server, hook_url = webhooks.serve()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # spans leave the worker within 0.1 s
    settings: dict[str, Any] = {"webhook_secrets": {"default": SECRET}, "webhook_private_hosts": ["127.0.0.1"]}
    start_worker(enable_fake_model=True, model="fake", **settings)
    start_worker(role="webhooks", **settings)

    sender = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(sender))
    app = Celery("plain", broker=redis_url, set_as_current=True)

    @app.task(name=TASK_CLASSIFY)  # declared, never run here: the instrumentation looks the task up by name
    def classify(request: dict[str, Any]) -> None: ...

    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        body = {"id": "traced-1", "text": "a refund please", "labels": ["refund", "praise"], "reply_to": hook_url}
        classify.apply_async(args=[body], queue=QUEUE_REALTIME)
        assert wait_until(lambda: webhooks.deliveries, 30), "no webhook delivered"
        assert wait_until(lambda: collector.named("labelq.webhook") and collector.named("labelq.result_write"), 30)
    finally:
        instrumentor.uninstrument()
        app.close()
        hook_server.shutdown()
        hook_server.server_close()
        collector.close()
    [published] = sender.get_finished_spans()
    trace_id = published.context.trace_id.to_bytes(16, "big")
    [req] = collector.named("labelq.request")
    [batch] = collector.named("labelq.batch")
    [run] = collector.named("labelq.model_run")
    [write] = collector.named("labelq.result_write")
    [hook] = collector.named("labelq.webhook")
    assert {s.trace_id for s in (req, batch, run, write, hook)} == {trace_id}
    assert req.parent_span_id == published.context.span_id.to_bytes(8, "big")
    assert batch.parent_span_id == req.span_id
    assert run.parent_span_id == batch.span_id and write.parent_span_id == batch.span_id
    assert hook.parent_span_id == req.span_id
    attrs = {a.key: a.value for a in hook.attributes}
    assert attrs["http.response.status_code"].int_value == 200
    assert attrs["labelq.webhook.outcome"].string_value == "delivered"
    assert {a.key: a.value.string_value for a in req.attributes}["labelq.outcome"] == "ok"
    assert collector.posts >= 1
    services = {service for service, _ in collector.spans}
    assert services == {"labelq-worker", "labelq-webhook-worker"}
    result = parse_result(webhooks.deliveries[0].body)
    assert isinstance(result, ClassificationResult)
    assert result.trace_id == f"{published.context.trace_id:032x}"
    stored = client.get("traced-1")
    assert stored is not None and stored.trace_id == result.trace_id


def test_a_json_log_line_inside_a_span_carries_its_trace_id(spans: InMemorySpanExporter) -> None:
    import logging

    from pythonjsonlogger.json import JsonFormatter

    from worker.logs import JSON_FIELDS

    active = tracing.active
    assert active is not None
    formatter = JsonFormatter(JSON_FIELDS, style="{")
    record = logging.LogRecord("labelq", logging.INFO, __file__, 1, "batch %s", ("b1",), None)
    span = active.start_request({"traceparent": f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"}, time.time(), "q")
    with active.batch("q", [span]):
        assert tracing.TraceIdFilter().filter(record)
    span.end()
    line = json.loads(formatter.format(record))
    assert line["trace_id"] == SENDER_TRACE and len(line["span_id"]) == 16
    outside = logging.LogRecord("labelq", logging.INFO, __file__, 1, "idle", (), None)
    assert tracing.TraceIdFilter().filter(outside) and "trace_id" not in json.loads(formatter.format(outside))


def test_client_submit_puts_its_span_into_the_message_and_the_worker_continues_it(
    start_worker: WorkerFactory, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer side (producer/tracing.py): Client.submit sends a traceparent header; the result's trace id is
    the producer span's, a child of the caller's current span."""
    import os

    from producer import tracing as producer_tracing

    collector = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    try:
        start_worker(enable_fake_model=True, model="fake")
        sender = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(sender))
        monkeypatch.setattr(producer_tracing, "_tracer", provider.get_tracer("test"))
        monkeypatch.setattr(producer_tracing, "_checked_pid", os.getpid())
        with provider.get_tracer("app").start_as_current_span("caller") as caller:
            client.submit({"id": "from-client", "text": "a refund please", "labels": ["refund", "praise"]})
        result = client.wait("from-client", 30)
        assert result is not None and result.trace_id == f"{caller.get_span_context().trace_id:032x}"
        sent = {span.name: span for span in sender.get_finished_spans()}["apply_async/labelq.classify"]
        assert sent.parent and sent.parent.span_id == caller.get_span_context().span_id
        assert wait_until(lambda: collector.named("labelq.request"), 30)
        [req] = collector.named("labelq.request")
        assert req.parent_span_id == sent.context.span_id.to_bytes(8, "big")
    finally:
        collector.close()

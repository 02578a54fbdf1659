"""The only module that configures Celery: `create_app(settings)`.

The worker consumes labelq's request queues with its own batching step (worker/process/consumer.py) in pool `solo`:
one process, one warm model session; run one process per core (`labelq worker --processes N`, or several
`celery -A worker.celery_app worker` commands, or `docker compose up --scale worker=N`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from schemas.transport import QUEUE_WEBHOOKS, QUEUES
from worker.constants import (
    CELERY_DEFAULT_QUEUE,
    KOMBU_UNACKED_INDEX_KEY,
    KOMBU_UNACKED_KEY,
    KOMBU_UNACKED_MUTEX_KEY,
    QUEUE_TASKS,
    Role,
)
from worker.errors import ConfigError, ModelError
from worker.settings import Settings

CELERY_CONSUMER = "celery.worker.consumer:Consumer"  # Celery's default `worker_consumer`


def route_followups(name: str, *_: object, **__: object) -> dict[str, str] | None:
    """Celery router: tasks that are not labelq's go to Celery's default queue (a signature's own queue wins)."""
    return None if name.startswith("labelq.") else {"queue": CELERY_DEFAULT_QUEUE}


def _queues(role: Role) -> list[str]:
    return [QUEUE_TASKS, *QUEUES.values()] if role == "classify" else [QUEUE_WEBHOOKS]


def create_app(settings: Settings, role: Role = "classify") -> Celery:
    """`classify`: the batching worker (pool solo, the model in-process). `webhooks`: the delivery worker
    (pool threads, `LABELQ_WEBHOOK_CONCURRENCY` deliveries at once, its own scheduler step)."""
    from worker.process.consumer import BatchConsumerStep
    from worker.process.tasks import WebhookSchedulerStep, register_correction_task, register_webhook_task

    app = Celery("labelq", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_acks_late=True,  # Celery's own tasks (webhook delivery) ack after they ran
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_pool="solo" if role == "classify" else "threads",  # classify: the model runs in this process
        worker_concurrency=1 if role == "classify" else settings.webhook_concurrency,
        task_default_queue=QUEUE_TASKS if role == "classify" else QUEUE_WEBHOOKS,
        # every queue the role serves, so Celery's tools know them (`celery purge` without -Q purges them too)
        task_queues=[Queue(name, Exchange(name), name) for name in _queues(role)],
        # labelq's request queues go to the batching step, never to Celery's consumer (-Q, add_consumer)
        worker_consumer="worker.process.task_consumer:LabelqConsumer" if role == "classify" else CELERY_CONSUMER,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # keep trying through a Redis restart
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": settings.unacked_restore_interval_s,
            "unacked_restore_throttle": 1,  # every interval really sweeps
            # kombu's default lock is 300 s: a worker SIGKILLed inside a sweep would block redelivery that long
            "unacked_mutex_expire": settings.unacked_mutex_expire_s,
            # labelq's own keys: its sweep restores only labelq's webhook tasks, never another app's
            "unacked_key": KOMBU_UNACKED_KEY,
            "unacked_index_key": KOMBU_UNACKED_INDEX_KEY,
            "unacked_mutex_key": KOMBU_UNACKED_MUTEX_KEY,
            **settings.redis_transport_options,  # Sentinel's master_name, for one
        },
        # what a classification's callbacks, chains and chord callbacks send goes where a standard Celery worker
        # listens (unless their signature names a queue): labelq's own queues are labelq's
        task_routes=(route_followups,),
        result_backend=settings.celery_result_backend(),
        result_backend_transport_options=settings.redis_transport_options,  # Sentinel's master_name, for one
        result_expires=settings.result_expires_s,
        worker_hijack_root_logger=False,
        worker_send_task_events=settings.celery_events,
        task_track_started=settings.task_track_started,
        result_extended=settings.result_extended,
        imports=settings.celery_imports,
    )
    app.labelq_settings = settings  # read by BatchConsumerStep.start
    if role == "classify":
        signals.celeryd_init.connect(_worker_flags(app), weak=False)
        signals.import_modules.connect(_imports_checked(app), weak=False)
    register_webhook_task(app, settings)
    if role == "classify":
        register_correction_task(app, settings)
    app.steps["consumer"].add(BatchConsumerStep if role == "classify" else WebhookSchedulerStep)
    return app


def _worker_flags(app: Celery) -> Any:
    """Celery's worker flags, read before the worker starts (worker/process/flags.py): refused in one line (exit
    2), or honoured: the settings take the recycling limits, and a command asked for N processes (or recycling),
    or given several Redis servers, becomes their supervisor instead of a worker."""

    def on_init(sender: Any = None, instance: Any = None, options: Any = None, **_: Any) -> None:
        if instance is None or instance.app is not app:
            return
        from worker.connections import RedisRefused, check_access
        from worker.engine.engine import check_model
        from worker.process.flags import EXIT_MODEL, is_supervised_child, read_flags, refuse

        settings = app.labelq_settings
        try:
            flags = read_flags(dict(options or {}), settings.max_tasks_per_child, settings.max_memory_per_child)
            if not is_supervised_child():  # its supervisor checked
                check_model(settings)
                for url in settings.redis_urls():  # each server of a fleet: one line naming it, before any start
                    check_access(settings.for_server(url))
        except ConfigError as exc:
            refuse(str(exc))
            return
        except RedisRefused as exc:  # a wrong password: exit 3, not Celery's retries forever
            refuse(str(exc), exc.exit_code)
            return
        except ModelError as exc:
            refuse(f"model: {exc}", EXIT_MODEL)
            return
        app.labelq_settings = settings.model_copy(
            update={
                "max_tasks_per_child": flags.max_tasks_per_child,
                "max_memory_per_child": flags.max_memory_per_child_kb,
            }
        )
        # several Redis servers (LABELQ_REDIS_SHARDS): a Celery worker serves one, so this command supervises one
        # child per server (N each with -c N), as `labelq worker` does, instead of serving only the first
        fleet = len(settings.redis_urls()) > 1
        if (flags.supervised or fleet) and not is_supervised_child():
            from worker.process.launcher import supervise_celery

            level = (options or {}).get("loglevel") or "INFO"  # the CLI hands over a number
            loglevel = logging.getLevelName(level) if isinstance(level, int) else str(level)
            code = supervise_celery(
                app.labelq_settings, flags, hostname=instance.hostname, loglevel=loglevel, argv=sys.argv[1:]
            )
            raise SystemExit(code)

    return on_init


def _imports_checked(app: Celery) -> Any:
    """Before Celery imports LABELQ_CELERY_IMPORTS (it does so before any other worker hook): a module that
    cannot be imported is one line and exit 2, not Celery's traceback."""

    def on_import(sender: Any = None, **_: Any) -> None:
        if sender is not app:
            return
        from worker.process.flags import refuse

        try:
            check_imports(tuple(app.conf.imports or ()))
        except ConfigError as exc:
            refuse(str(exc))

    return on_import


def check_imports(modules: tuple[str, ...]) -> None:
    """LABELQ_CELERY_IMPORTS: each module importable, else a `ConfigError` naming it (Celery would stop with a
    traceback while starting)."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(
                f"LABELQ_CELERY_IMPORTS: {name} cannot be imported ({type(exc).__name__}: {exc}); fix the name or "
                "the worker's PYTHONPATH"
            ) from None

"""Thin Celery tasks and the webhook scheduler step. The work itself lives in worker/delivery/webhook_jobs.py
(webhook delivery) and worker/stream/corrections.py (moderators' corrections)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery import Celery, bootsteps

from schemas import CorrectionReceipt
from schemas.transport import QUEUE_WEBHOOKS, TASK_CORRECT, TASK_DELIVER_WEBHOOK
from worker import metrics
from worker.connections import connect
from worker.delivery.egress import EgressPolicy
from worker.delivery.webhook_jobs import Scheduler, WebhookDeliverer
from worker.delivery.webhooks import RetryPolicy, WebhookHttp
from worker.settings import Settings
from worker.stream.corrections import CorrectionStore, record_correction
from worker.stream.labelsets import LabelSetStore

log = logging.getLogger(__name__)
SCHEDULER_TICK_S = 0.1  # how often due webhook jobs are claimed and dispatched


class _Deliverers:
    """One WebhookDeliverer per process, built on first use (after fork), shared by the pool's threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._deliverer: WebhookDeliverer | None = None

    def get(self) -> WebhookDeliverer:
        with self._lock:
            if self._deliverer is None:
                s = self.settings
                self._deliverer = WebhookDeliverer(
                    connect(s),
                    WebhookHttp(),
                    egress=EgressPolicy.from_settings(s),
                    retry=RetryPolicy.from_settings(s),
                    secrets={name: secret.get_secret_value() for name, secret in s.webhook_secrets.items()},
                    timeout_s=s.webhook_timeout_s,
                    result_ttl_s=s.result_ttl_s,
                    per_receiver=s.webhook_per_receiver_concurrency,
                )
            return self._deliverer


def register_webhook_task(app: Celery, settings: Settings) -> None:
    deliverers = _Deliverers(settings)

    @app.task(name=TASK_DELIVER_WEBHOOK, ignore_result=True, acks_late=False)  # type: ignore[untyped-decorator]
    def deliver_webhook(claimed_job: str) -> str:
        """Attempt one claimed webhook job (the claim, not the message ack, guarantees it is not lost)."""
        attempt = deliverers.get().run(claimed_job)
        metrics.WEBHOOK_ATTEMPTS.labels(attempt.outcome).inc()
        log.info("webhook attempt: %s %s", attempt.outcome, attempt.status or attempt.error)
        return attempt.outcome


class WebhookSchedulerStep(bootsteps.StartStopStep):
    """Every tick: put back jobs whose claim expired, claim the due ones, send one delivery task each."""

    requires = ("celery.worker.consumer:Connection",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer: Any = None
        self._scheduler: Scheduler | None = None

    def start(self, c: Any) -> None:
        settings: Settings = c.app.labelq_settings
        self._scheduler = Scheduler(connect(settings))
        self._claim_s = 3 * settings.webhook_timeout_s + 30
        self._limit = 2 * settings.webhook_concurrency
        self._app = c.app
        self._timer = c.timer.call_repeatedly(SCHEDULER_TICK_S, self.tick)

    def tick(self) -> None:
        assert self._scheduler is not None
        now = time.time()
        try:
            self._scheduler.reclaim_expired(now)
            for job in self._scheduler.claim_due(now, self._limit, self._claim_s):
                self._app.send_task(TASK_DELIVER_WEBHOOK, args=[job], queue=QUEUE_WEBHOOKS)
        except redis.RedisError:  # Redis away: claimed jobs come back when their claim expires
            log.warning("webhook scheduler tick failed", exc_info=True)

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def register_correction_task(app: Celery, settings: Settings) -> None:
    """`labelq.correct(correction)`: a moderator's verdict kept for refits (worker/stream/corrections.py); the
    task's result is the CorrectionReceipt or the ErrorResult, as JSON (never a task failure)."""
    stores: list[CorrectionStore] = []

    @app.task(name=TASK_CORRECT, acks_late=True)  # type: ignore[untyped-decorator]
    def correct(*args: Any, **kwargs: Any) -> dict[str, Any]:
        """One argument, the correction (or its fields as keyword arguments); anything else is answered with
        `invalid_message`, never a task failure."""
        if not stores:
            client = connect(settings)
            stores.append(CorrectionStore(client, LabelSetStore(client, settings.limits()), settings.corrections_max))
        if len(args) == 1 and not kwargs:
            message: Any = args[0]
        elif not args and kwargs:
            message = kwargs
        else:
            message = None  # not one correction: refused below
        outcome = record_correction(stores[0], message)
        which = outcome.request_id if isinstance(outcome, CorrectionReceipt) else outcome.id
        log.info("correction of %s: %s", which, outcome.status)
        return outcome.model_dump(mode="json")

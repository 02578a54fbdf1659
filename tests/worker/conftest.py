"""What the worker tests that act as a plain Celery client share."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from celery import Celery


@pytest.fixture
def celery_app(redis_url: str) -> Iterator[Celery]:
    """A plain Celery client app on the test Redis (broker and result backend), closed after the test."""
    app = Celery("user", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    yield app
    close(app)


def close(app: Celery) -> None:
    """A Celery client's connections, its result consumer's subscription included (app.close leaves it open).
    Results the test held are collected first, while their Redis still answers their unsubscribe."""
    gc.collect()
    app.backend.result_consumer.stop()
    app.close()

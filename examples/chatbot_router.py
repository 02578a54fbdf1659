"""A chatbot router on plain Celery: labelq classifies the user's message, the router's own ordinary tasks act on
the intent. Nothing here imports labelq: `labelq.classify` is a task name on the labelq workers' queue.

    export REDIS_URL=redis://127.0.0.1:6379/0
    labelq worker                                                # labelq's workers (LABELQ_REDIS_URL, same Redis)
    celery -A examples.chatbot_router worker -P solo            # the router's own, standard worker
    python examples/chatbot_router.py "I was charged twice for my subscription"

`route(text)` is a chain, `classify | route_intent`; `triage(texts)` a chord whose header is classifications and
whose callback summarises them; an invalid request's `link_error` reaches `record_failure` (one argument, sent
as a task) or `report_failure` (request, exc, traceback: called in labelq's worker when LABELQ_CELERY_IMPORTS
names this module). labelq's workers
send what follows a classification to Celery's default queue (`celery`), where this worker listens; a signature
that names its own queue (`.set(queue=...)`) goes there instead.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery, chain, chord
from celery.result import AsyncResult

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
INTENTS = ["billing", "bug report", "account access", "praise"]
TEAMS = {"billing": "payments desk", "bug report": "engineering", "account access": "support", "praise": "marketing"}

app = Celery("router", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")


def classify(text: str, **request: Any) -> Any:
    """The labelq task as a signature: a request object, sent to labelq's realtime queue."""
    request = {"text": text, "labels": INTENTS, **request}
    return app.signature("labelq.classify", args=[request], queue="labelq.realtime")


@app.task(name="router.route_intent")
def route_intent(result: dict[str, Any]) -> dict[str, str]:
    """The router's own task: gets labelq's result (the ClassificationResult as a dict) and picks a team."""
    return {"intent": result["top"], "team": TEAMS[result["top"]], "request": result["id"]}


@app.task(name="router.summarise")
def summarise(results: list[dict[str, Any]]) -> dict[str, int]:
    """A chord's callback: every classification of the header, in order."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result["top"]] = counts.get(result["top"], 0) + 1
    return counts


@app.task(name="router.record_failure")
def record_failure(task_id: str) -> str:
    """A `link_error`: Celery passes the failed task's id to an errback the classifying worker does not know."""
    app.backend.client.rpush("router:failures", task_id)
    return task_id


@app.task(name="router.report_failure")
def report_failure(request: Any, exc: Exception, traceback: Any) -> None:
    """The errback form Celery's docs recommend: called in the worker that ran the failed task. labelq's worker
    calls it so when it can import this module (LABELQ_CELERY_IMPORTS='["examples.chatbot_router"]')."""
    app.backend.client.rpush("router:reports", f"{request.id} {type(exc).__name__}")


def route(text: str) -> AsyncResult:
    return chain(classify(text), route_intent.s())()


def triage(texts: list[str]) -> AsyncResult:
    return chord([classify(text) for text in texts])(summarise.s())


if __name__ == "__main__":
    print(route(" ".join(sys.argv[1:]) or "I was charged twice for my subscription").get(timeout=30))

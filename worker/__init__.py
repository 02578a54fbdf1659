"""The worker side of labelq. The folders draw the architecture; each layer imports only what is below it
(checked by `lint-imports`, contracts in pyproject.toml, explained in docs/architecture.md):

    celery_app.py   `celery -A worker.celery_app worker`: the app built from the environment (the entry point)
    process/        the process layer: Celery's app and its plug-ins, the batch loop that runs the model off
                    Celery's event loop, starting and recycling processes (worker/process/__init__.py)
    ops/            operators' tools: the dead-letter tool, evaluation, model management
    stream/         claiming from Redis, decoding envelopes, batching, a batch's story, publishing, label sets
    delivery/       webhooks: one attempt, egress policy, scheduled jobs         } independent of
    engine/         models, onnxruntime, classifiers, scoring, shortlist, cache  } each other
    the floor       settings.py, connections.py (Redis clients, Sentinel too), errors.py, constants.py,
                    metrics.py, logs.py, deadletters.py: any layer may import them; they import no layer

Only the process layer imports Celery; the engine imports no Redis, Celery or HTTP. Import the modules you need
(e.g. `worker.engine.engine.Engine`, `worker.settings.load_settings`, `worker.process.app.create_app`); no package here
imports anything heavy on its own.
"""

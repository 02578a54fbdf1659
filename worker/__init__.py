"""The worker side of labelq. The folders draw the architecture; each layer imports only what is below it
(checked by `lint-imports`, contracts in pyproject.toml, explained in docs/architecture.md):

    process layer   app.py (the only module configuring Celery), celery_app.py (`celery -A worker.celery_app`),
                    consumer.py (the stream's Celery consumer step), celery_outcomes.py (events, callbacks,
                    chains, chords), tasks.py (the webhook task and scheduler step), launcher.py and runtime.py
                    (starting processes, what a process holds)
    ops/            operators' tools: the dead-letter tool, evaluation, model management
    stream/         claiming from Redis, decoding envelopes, batching, a batch's story, publishing, label sets
    delivery/       webhooks: one attempt, egress policy, scheduled jobs         } independent of
    engine/         models, onnxruntime, classifiers, scoring, shortlist, cache  } each other
    the floor       settings.py, connections.py (Redis clients, Sentinel too), errors.py, constants.py,
                    metrics.py, logs.py, deadletters.py: any layer may import them; they import no layer

Only the process layer imports Celery; the engine imports no Redis, Celery or HTTP. Import the modules you need
(e.g. `worker.engine.engine.Engine`, `worker.settings.load_settings`, `worker.app.create_app`); no package here
imports anything heavy on its own.
"""

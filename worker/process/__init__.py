"""The process layer: what makes the stream a Celery worker, and runs and stops worker processes.

    app.py            `create_app(settings, role)`: the only module that configures Celery
    consumer.py       the consumer bootstep: starts the batch loop, sweeps, announces readiness, stops warmly
    loop.py           the batch loop: a thread of its own that claims, batches, runs the model, writes and acks,
                      so Celery's event loop stays free (ping, inspect, heartbeats, revoke, shutdown)
    task_consumer.py  Celery's task consumer kept off labelq's request queues; `inspect active_queues`
    outcomes.py       what Celery does around a task (events, result backend elsewhere, callbacks, chords)
    stats.py          what `inspect stats`, heartbeats and `inspect active` count for classifications
    tasks.py          the webhook delivery task and its scheduler step
    flags.py          Celery's worker flags (-c, -P, --max-tasks-per-child, ...) read, honoured or refused
    main.py           one Celery worker in this process (`labelq worker`, each supervised child)
    launcher.py       N workers as supervised children (replaced when they die, recycled when they ask); N for
                      each server of a fleet (LABELQ_REDIS_SHARDS)
    runtime.py        what a process holds: settings, the warm engine, Redis, the pipeline, batch policies
    servers.py        a fleet's Redis servers on the metrics endpoint (up, queue depths, in flight, by server)

Contract: the layers below (ops, stream, delivery, engine) never import Celery or this package; this package
alone decides threads, signals and process lifetimes. A classification is settled (outcome written, then acked)
only on the batch loop's thread; Celery's event loop only asks it to start, pause, serve or stop.
"""

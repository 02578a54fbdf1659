"""Operators' tools over the other parts, called by the `labelq` command: the dead-letter tool (`dlq`: list,
show, replay, purge), evaluation on labelled data (`evaluation`), and model management (`management`: pull,
manifests, quantisation).

May import: the stream, delivery, the engine, `schemas` and the floor. Never the process layer or Celery.
"""

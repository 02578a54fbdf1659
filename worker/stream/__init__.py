"""The stream: requests taken off Redis queues, answered in batches, outcomes written back before the ack.

Owns: claiming messages so that a crash loses none (`redis_queue`), reading kombu's envelope (`envelopes`),
decoding Celery task messages without Celery (`messages`), when a batch flushes (`batcher`), a batch's story
from received messages to outcomes (`pipeline`), writing results, webhook jobs, dead letters and delivery
counters (`publishing`), and the stored label sets requests may name (`labelsets`).

May import: `schemas`, the engine (to classify), delivery (publishing schedules webhook jobs) and the floor.
Never Celery (the process layer's `consumer.py` plugs the stream into Celery), ops or the process layer.
"""

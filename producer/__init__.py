"""The producer side: a client that submits requests and reads results. Depends only on `schemas`."""

from producer.client import Client, UnreadableResult, queue_name

__all__ = ["Client", "UnreadableResult", "queue_name"]

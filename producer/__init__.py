"""The producer side: a client that submits requests and reads results. Depends only on `schemas`."""

from producer.client import Client, queue_name

__all__ = ["Client", "queue_name"]

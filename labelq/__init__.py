"""labelq: zero-shot text classification as a streaming service on message queues.

The `labelq` command lives in `labelq.cli`; the wire contract in `schemas`, the worker side in `worker`,
the client side in `producer`.
"""

__version__ = "0.1.0"

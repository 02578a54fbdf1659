"""The producer side: a client that submits requests and reads results. Depends only on `schemas`."""

from producer.client import AccessDenied, Client, SubmitError, UnreadableResult, WrongKeyType, queue_name

__all__ = ["AccessDenied", "Client", "SubmitError", "UnreadableResult", "WrongKeyType", "queue_name"]

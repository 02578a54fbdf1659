"""The producer side: a client that submits requests and reads results. Depends only on `schemas`."""

from producer.client import AccessDenied, ServerClient, SubmitError, UnreadableResult, WrongKeyType, queue_name
from producer.fleet import Client

__all__ = ["AccessDenied", "Client", "ServerClient", "SubmitError", "UnreadableResult", "WrongKeyType", "queue_name"]

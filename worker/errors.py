"""The exception tree. What the caller does is decided by the branch, not by the message.

LabelqError
├── RequestRejected        a request cannot be served: publish an ErrorResult, ack, move on
│   └── ModelNotFound      the request names a model this worker does not have (code unknown_model)
├── ModelError             the model itself is unusable: fail loudly at start-up, never per message
│   ├── ModelLayoutError   a model directory lacks a file or holds an inconsistent config
│   └── ModelFetchError    a model could not be downloaded (no network, no such repo)
├── ConfigError            the settings cannot work on this machine: the worker refuses to start
└── InputError             a file a user gave cannot be read: the message says where (file:line)
"""

from __future__ import annotations

from schemas import ErrorCode


class LabelqError(Exception):
    """Base of every labelq exception."""


class RequestRejected(LabelqError):
    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message


class ModelNotFound(RequestRejected):
    def __init__(self, name: str, installed: list[str]) -> None:
        super().__init__(
            ErrorCode.UNKNOWN_MODEL,
            f"model {name!r} is not installed on this worker (installed: {', '.join(installed) or 'none'})",
            field="model",
        )
        self.name = name


class ModelError(LabelqError):
    """The model cannot be loaded or run."""


class ModelLayoutError(ModelError):
    """A model directory does not hold what the Hugging Face layout promises."""


class ModelFetchError(ModelError):
    """A model could not be downloaded from its hub."""


class InputError(LabelqError):
    """A file or value a user gave cannot be used; the message names the file and line."""


class ConfigError(LabelqError):
    """Settings that are valid one by one but cannot work together on this device (checked at start-up)."""

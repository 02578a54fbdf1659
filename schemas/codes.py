"""Stable error codes of the wire contract.

A code never changes meaning once published; consumers branch on it. `ErrorResult.field` names the
offending field (dotted path, list indices as numbers) when one is to blame.
"""

from __future__ import annotations

from enum import StrEnum


def exception_name(code: ErrorCode) -> str:
    """The exception type a Celery result backend reports for an error result: the code in CamelCase
    (`invalid_reply_to` -> `InvalidReplyTo`); its one argument is the ErrorResult."""
    return "".join(part.capitalize() for part in code.value.split("_"))


class ErrorCode(StrEnum):
    # the message as a whole
    INVALID_MESSAGE = "invalid_message"  # not a labelq task message (content type, envelope, task name, arguments)
    INVALID_UTF8 = "invalid_utf8"  # the bytes are not UTF-8
    INVALID_JSON = "invalid_json"  # not JSON, or JSON that is not an object
    UNKNOWN_FIELD = "unknown_field"  # a field the schema does not define
    MISSING_FIELD = "missing_field"  # a required field is absent
    WRONG_TYPE = "wrong_type"  # a field has the wrong JSON type or format
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    # text
    EMPTY_TEXT = "empty_text"  # empty or whitespace only
    TEXT_TOO_LONG = "text_too_long"  # over the worker's max_text_chars (when it rejects rather than truncates)
    # labels
    NO_LABELS = "no_labels"  # neither labels nor a label_set
    LABEL_SET_CONFLICT = "label_set_conflict"  # both labels and a label_set
    EMPTY_LABEL = "empty_label"  # a label name, description, hypothesis or example: empty or whitespace only
    LABEL_TOO_LONG = "label_too_long"
    DUPLICATE_LABELS = "duplicate_labels"
    TOO_MANY_LABELS = "too_many_labels"
    TOO_MANY_EXAMPLES = "too_many_examples"
    # the rest of the request
    INVALID_TEMPLATE = "invalid_template"  # no `{}`, or not a valid format string
    THRESHOLD_OUT_OF_RANGE = "threshold_out_of_range"  # outside [0, 1]
    UNKNOWN_THRESHOLD_LABEL = "unknown_threshold_label"  # a per-label threshold for a label not in `labels`
    INVALID_SHORTLIST = "invalid_shortlist"  # a negative shortlist size
    INVALID_REPLY_TO = "invalid_reply_to"
    INVALID_ID = "invalid_id"
    METADATA_TOO_LARGE = "metadata_too_large"
    REQUEST_TOO_COSTLY = "request_too_costly"  # more model work than one batch may hold (labels x examples)
    # found by the worker, not the schema
    UNKNOWN_LABEL_SET = "unknown_label_set"  # the named label set is not stored
    INVALID_LABEL_SET = "invalid_label_set"  # the named label set is stored but cannot be used (e.g. a corrupt head)
    UNKNOWN_MODEL = "unknown_model"  # the named model is not installed on the worker
    # a correction (schemas/corrections.py)
    UNKNOWN_REQUEST = "unknown_request"  # no result under that id: never sent, or older than its result's TTL
    UNKNOWN_LABEL = "unknown_label"  # a corrected label is not one of the label set's
    NOT_TAUGHT = "not_taught"  # the request's labels came from no label set, or from one without a learned head
    WEBHOOK_REFUSED = "webhook_refused"  # the webhook URL may not be delivered to (private address, allowlist)
    EXPIRED = "expired"  # the request's deadline passed before it was classified
    INTERNAL_ERROR = "internal_error"  # a bug or a failed model run; the message says which

"""The boundary: raw bytes in, a `ParsedRequest` or an `ErrorResult` out. Never raises on bad input."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.codes import ErrorCode
from schemas.limits import RequestLimits
from schemas.request import ID_PATTERN, ClassifyRequest
from schemas.result import ErrorDetail, ErrorResult, single_error

# pydantic's built-in error types, by the stable code they become
_BUILTIN_CODES: dict[str, ErrorCode] = {
    "extra_forbidden": ErrorCode.UNKNOWN_FIELD,
    "missing": ErrorCode.MISSING_FIELD,
    "json_invalid": ErrorCode.INVALID_JSON,
    "json_type": ErrorCode.INVALID_JSON,
    "model_type": ErrorCode.WRONG_TYPE,
    "literal_error": ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
    "string_pattern_mismatch": ErrorCode.WRONG_TYPE,
}
# union members and other validator names pydantic puts into an error's location
_LOC_TAG = re.compile(r"^(function-[a-z-]+\[.*\]|[a-z]+\[.*\]|str|int|float|bool|none|dict|list|tuple|Label)$")


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    request: ClassifyRequest
    truncated: bool = False  # the text was cut to the receiver's max_text_chars


def parse_request(raw: bytes | str, limits: RequestLimits | None = None) -> ParsedRequest | ErrorResult:
    """Validate one wire message. Bad input becomes an `ErrorResult` with a stable code and field."""
    limits = limits or RequestLimits()
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return single_error(
                None, ErrorCode.INVALID_UTF8, f"message is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            )
    else:
        text = raw
    try:
        request = ClassifyRequest.model_validate_json(text, context=limits)
    except ValidationError as exc:
        return error_from_validation(exc, _peek_id(text))
    return _within_limits(request, limits)


def validate_request(data: Any, limits: RequestLimits | None = None) -> ParsedRequest | ErrorResult:
    """Like `parse_request`, for a message already decoded from JSON (a Celery task's argument): validated as
    it is, not written out and parsed again (a 77-label request: 77 -> 33 us). The outcome is the same as
    `parse_request` of its JSON (tests/schemas/test_schemas.py holds the two side by side); a rejected request is
    parsed as JSON again for its error, whose messages then speak of JSON types ("an object", "an array").
    One thing it does not see: a lone surrogate, which a JSON decoder turns a `\\ud800` escape into, is
    invalid UTF-8 to `parse_request` but a valid string here. The caller that has the raw JSON checks for
    such escapes (worker/stream/messages.py sends those requests to `parse_request`)."""
    limits = limits or RequestLimits()
    try:
        request = ClassifyRequest.model_validate(data, context=limits)
    except ValidationError:
        return parse_request(json.dumps(data, ensure_ascii=False), limits)
    return _within_limits(request, limits)


def _within_limits(request: ClassifyRequest, limits: RequestLimits) -> ParsedRequest:
    if len(request.text) > limits.max_text_chars:  # only reached when text_overflow == "truncate"
        return ParsedRequest(request.model_copy(update={"text": request.text[: limits.max_text_chars]}), truncated=True)
    return ParsedRequest(request)


def error_from_validation(exc: ValidationError, request_id: str | None) -> ErrorResult:
    details = tuple(
        ErrorDetail(code=_code(err["type"], err["loc"]), field=_field(err["loc"]), message=err["msg"])
        for err in exc.errors(include_url=False, include_input=False)
    )
    first = details[0]
    return ErrorResult(id=request_id, code=first.code, field=first.field, message=first.message, errors=details)


def _code(error_type: str, loc: tuple[int | str, ...]) -> ErrorCode:
    if error_type == "string_pattern_mismatch" and loc[:1] == ("id",):
        return ErrorCode.INVALID_ID
    if not loc and error_type in ("model_type", "model_attributes_type", "dict_type"):
        return ErrorCode.INVALID_JSON  # the message is JSON, but not an object
    try:
        return ErrorCode(error_type)  # our own PydanticCustomError types are the codes themselves
    except ValueError:
        return _BUILTIN_CODES.get(error_type, ErrorCode.WRONG_TYPE)


def _field(loc: tuple[int | str, ...]) -> str | None:
    parts = [str(part) for part in loc if not (isinstance(part, str) and _LOC_TAG.fullmatch(part))]
    return ".".join(parts) or None


def _peek_id(text: str | bytes) -> str | None:
    return peek_field(text, "id", ID_PATTERN)


def peek_field(message: str | bytes | Any, name: str, pattern: str) -> str | None:
    """A string field of a message that failed validation (its JSON, or the JSON already decoded), if it is
    still readable and matches `pattern`."""
    if isinstance(message, str | bytes):
        try:
            data = json.loads(message)
        except (ValueError, RecursionError):
            return None
    else:
        data = message
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) and re.fullmatch(pattern, value) else None

"""A moderator's verdict on a result, sent back to labelq (`Client.correct`, `labelq feedback`, or the Celery task
`labelq.correct` from any client): which of the label set's labels apply to the request's text.

    {"request_id": "mod-42", "labels": ["offensive"], "text": "the text that was classified"}

`labels` may be empty (none applies); a single-label set takes exactly one. The text comes with the correction
(a result does not carry its text, and a moderation tool shows the text it asks about). The worker answers with a
`CorrectionReceipt` or an `ErrorResult` (`unknown_request`, `unknown_label`, `not_taught`, ...), never by failing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.limits import DEFAULT_MAX_LABEL_TEXT_CHARS, DEFAULT_MAX_LABELS, DEFAULT_MAX_TEXT_CHARS
from schemas.request import ID_PATTERN


class Correction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    request_id: str = Field(pattern=ID_PATTERN, description="The id of the result being corrected")
    labels: tuple[str, ...] = Field(
        max_length=DEFAULT_MAX_LABELS, description="The labels that apply (none: an empty list)"
    )
    text: str = Field(min_length=1, max_length=DEFAULT_MAX_TEXT_CHARS, description="The text that was classified")
    moderator: str | None = Field(None, max_length=DEFAULT_MAX_LABEL_TEXT_CHARS, description="Who corrected it")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty or whitespace only: the text that was classified")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _a_list(cls, value: object) -> object:
        if isinstance(value, str):  # "offensive" would be read as its letters
            raise ValueError("a list of label names (one label: a list of one)")
        return value


class CorrectionReceipt(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["ok"] = "ok"
    request_id: str
    label_set: str
    label_set_version: int
    corrections: int = Field(description="Corrections the set holds now (the newest `LABELQ_CORRECTIONS_MAX`)")

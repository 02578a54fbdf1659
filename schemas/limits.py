"""Size limits a receiver enforces while it parses a request (passed as the pydantic validation context)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MAX_LABELS = 100
DEFAULT_MAX_TEXT_CHARS = 20_000
DEFAULT_MAX_LABEL_CHARS = 300
DEFAULT_MAX_EXAMPLES_PER_LABEL = 64
DEFAULT_MAX_METADATA_BYTES = 4_096
DEFAULT_MAX_LABEL_TEXT_CHARS = 1_000  # a description, a hypothesis, a template, one example


class RequestLimits(BaseModel):
    """What a receiver accepts. The worker builds one from its settings; producers may use the defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_labels: int = Field(DEFAULT_MAX_LABELS, ge=1)
    max_text_chars: int = Field(DEFAULT_MAX_TEXT_CHARS, ge=1)
    # "reject": an over-long text is an error; "truncate": it is cut to max_text_chars and the result says so
    text_overflow: Literal["reject", "truncate"] = "reject"
    max_label_chars: int = Field(DEFAULT_MAX_LABEL_CHARS, ge=1)
    max_examples_per_label: int = Field(DEFAULT_MAX_EXAMPLES_PER_LABEL, ge=0)
    # a label's description and hypothesis, each of its examples, and the hypothesis template
    max_label_text_chars: int = Field(DEFAULT_MAX_LABEL_TEXT_CHARS, ge=1)
    max_metadata_bytes: int = Field(DEFAULT_MAX_METADATA_BYTES, ge=0)
    # when not empty, a result queue must start with one of these (one tenant a prefix, say)
    reply_queue_prefixes: tuple[str, ...] = ()

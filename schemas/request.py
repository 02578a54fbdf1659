"""`ClassifyRequest`: what a producer sends. Version 1 of the wire contract."""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

from schemas.codes import ErrorCode
from schemas.limits import RequestLimits

SCHEMA_VERSION: Literal[1] = 1
DEFAULT_TEMPLATE = "This example is {}."  # the Hugging Face zero-shot-classification pipeline's default
DEFAULT_THRESHOLD = 0.5
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:_.\-]{0,199}$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,199}$"
# What a result queue may never be: a key that Redis clients of this broker already use, whose contents a pushed
# result would corrupt or block: labelq's own queues and keys, Celery's queues and result keys (`celery`,
# `celery-task-meta-*`, `celeryev.*`), kombu's unacked hash, index and sweep lock (`unacked`, `unacked_index`,
# `unacked_mutex`), bindings (`_kombu.*`) and broadcast reply queues (`*.reply.celery.pidbox`). Compared without
# case. Operators narrow further with `RequestLimits.reply_queue_prefixes` (LABELQ_REPLY_QUEUE_PREFIXES).
RESERVED_QUEUE_PREFIXES = ("labelq", "celery", "unacked", "_kombu")
RESERVED_QUEUE_PARTS = ("pidbox",)
LABEL_SET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
SECRET_NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # what pydantic would read as epoch time
MetadataValue = str | int | float | bool | None


def reply_queue_problem(name: str, allowed_prefixes: tuple[str, ...] = ()) -> str | None:
    """Why `name` may not be a result queue, or None when it may: a plain name, not one the broker's own users
    hold, and (when the receiver restricts them) under one of `allowed_prefixes`."""
    if not re.fullmatch(QUEUE_NAME_PATTERN, name):  # fullmatch: `$` alone lets a final "\n" through
        return (
            "reply_to must be a queue name (a letter or digit, then letters, digits, ':_.-'; at most 200) or an "
            "http(s) URL"
        )
    folded = name.lower()
    if folded.startswith(RESERVED_QUEUE_PREFIXES) or any(part in folded for part in RESERVED_QUEUE_PARTS):
        return f"queue name {name!r} is reserved: labelq, Celery and kombu keep their own keys there"
    if allowed_prefixes and not name.startswith(allowed_prefixes):
        return f"queue name {name!r} is outside the allowed prefixes {', '.join(allowed_prefixes)}"
    return None


def template_problem(template: str, max_chars: int) -> str | None:
    """Why `template` is no hypothesis template, or None: it holds `{}` exactly once and no other brace (plain
    substitution: no format specs, so no template can ask for a hundred-megabyte hypothesis), within the limit."""
    if len(template) > max_chars:
        return f"template is longer than {max_chars} characters"
    rest = template.replace("{}", "", 1)
    if template.count("{}") != 1 or "{" in rest or "}" in rest:
        return "template must contain {} exactly once and no other brace"
    return None


def fill_template(template: str, text: str) -> str:
    """The hypothesis: the template with `{}` replaced by the label's text (plain substitution)."""
    return template.replace("{}", text, 1)


def _limits(info: ValidationInfo) -> RequestLimits:
    context = info.context
    if isinstance(context, RequestLimits):
        return context
    return RequestLimits()


def _error(code: ErrorCode, message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(code.value, message, ctx or None)


def expand_label_shorthand(value: Any) -> Any:
    """A list of labels where a bare string stands for `{"name": string}` (before validation)."""
    if isinstance(value, list | tuple):
        return tuple({"name": item} if isinstance(item, str) else item for item in value)
    return value


def _check_unit_interval(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise _error(ErrorCode.THRESHOLD_OUT_OF_RANGE, "threshold {value} is outside [0, 1]", value=value)
    return value


class Label(BaseModel):
    """A candidate label. On the wire, a bare string is shorthand for `{"name": "..."}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="The label as it is returned; also the hypothesis text unless a description is given")
    description: str | None = Field(
        None, description="Natural-language wording put into the hypothesis (or embedded) instead of the name"
    )
    hypothesis: str | None = Field(
        None, description="A whole hypothesis sentence for this label, used as it is instead of the template"
    )
    threshold: StrictFloat | None = Field(None, description="Accept the label at or above this score; in [0, 1]")
    examples: tuple[str, ...] = Field(
        (), description="A few example texts of this label (used by embedding models; NLI models ignore them)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        # runs for every label of every request (77 on a banking77 request): one context lookup, no more
        limit = _limits(info).max_label_chars
        if len(value) > limit:
            raise _error(ErrorCode.LABEL_TOO_LONG, "label is longer than {limit} characters", limit=limit)
        if not value or value.isspace():
            raise _error(ErrorCode.EMPTY_LABEL, "a label name is empty")
        return value

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: float | None) -> float | None:
        return None if value is None else _check_unit_interval(value)

    @field_validator("description", "hypothesis")
    @classmethod
    def _label_text(cls, value: str | None, info: ValidationInfo) -> str | None:
        limit = _limits(info).max_label_text_chars
        if value is not None and len(value) > limit:
            message = "a label's {field} is longer than {limit} characters"
            raise _error(ErrorCode.LABEL_TOO_LONG, message, field=info.field_name, limit=limit)
        if value is not None and (not value or value.isspace()):  # a blank one would be the hypothesis
            message = "a label's {field} is empty or whitespace only; give its words or leave it out"
            raise _error(ErrorCode.EMPTY_LABEL, message, field=info.field_name)
        return value

    @field_validator("examples")
    @classmethod
    def _examples(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        limits = _limits(info)
        if len(value) > limits.max_examples_per_label:
            message = "a label carries more than {limit} examples"
            raise _error(ErrorCode.TOO_MANY_EXAMPLES, message, limit=limits.max_examples_per_label)
        if any(len(example) > limits.max_label_text_chars for example in value):
            message = "a label's example is longer than {limit} characters"
            raise _error(ErrorCode.LABEL_TOO_LONG, message, limit=limits.max_label_text_chars)
        if any(not example or example.isspace() for example in value):
            message = "a label's example is empty or whitespace only; give its text or drop it"
            raise _error(ErrorCode.EMPTY_LABEL, message)
        return value

    @property
    def bare(self) -> bool:
        """Only a name: the wire's bare-string shorthand says all of it."""
        return self.description is None and self.hypothesis is None and self.threshold is None and not self.examples

    def threshold_or(self, default: float) -> float:
        """This label's threshold, else `default` (the request's global one, or DEFAULT_THRESHOLD)."""
        return default if self.threshold is None else self.threshold

    def hypothesis_for(self, template: str) -> str:
        """The hypothesis of this label: its own sentence, else the template filled with its text."""
        return self.hypothesis if self.hypothesis else fill_template(template, self.hypothesis_text)

    @property
    def hypothesis_text(self) -> str:
        """What is put into the hypothesis template: the description when there is one, else the name."""
        return self.description if self.description else self.name


# Validated labels that are only a name, by (name, max_label_chars). A stream's requests mostly repeat one label
# list, and each name otherwise costs a Python validator call per request (77 on a banking77 request: two thirds
# of parsing it, 145 -> 51 us). Labels are frozen, so requests can share them.
_BARE_LABELS: dict[tuple[str, int], Label] = {}
_BARE_LABELS_MAX = 8192
# Whole validated label lists of bare names, by (names, max_label_chars): a repeated list costs one dict lookup
# instead of a lookup, a uniqueness check and a remembering pass per name (a 77-label request parses in 21 us
# instead of 65), and its requests share one tuple, so a worker's batch works once per distinct list.
_BARE_LISTS: dict[tuple[tuple[str, ...], int], tuple[Label, ...]] = {}
_BARE_LISTS_MAX = 1024


def _bounded_put(cache: dict[Any, Any], limit: int, key: Any, value: Any) -> None:
    if len(cache) >= limit:
        cache.clear()  # a stream of ever-new names: start again rather than grow
    cache[key] = value


def _known_bare_list(value: Any, limit: int) -> tuple[Label, ...] | None:
    """The validated labels of a list of bare names seen before under this name limit, else None."""
    if not isinstance(value, list | tuple):
        return None
    try:
        return _BARE_LISTS.get((tuple(value), limit))
    except TypeError:  # unhashable items (label objects): not a list of bare names
        return None


def _expand_bare_names(value: Any, limit: int) -> Any:
    """The shorthand: a bare string is `{"name": string}`, or the validated bare label remembered for it."""
    if not isinstance(value, list | tuple):
        return value
    return [(_BARE_LABELS.get((item, limit)) or {"name": item}) if isinstance(item, str) else item for item in value]


def _remember_bare_labels(value: Any, labels: tuple[Label, ...], limit: int) -> None:
    """Share what `value` (the wire's list) validated to: each bare label, and the whole list if all are."""
    for label in labels:
        if (label.name, limit) not in _BARE_LABELS and label.bare:
            _bounded_put(_BARE_LABELS, _BARE_LABELS_MAX, (label.name, limit), label)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        _bounded_put(_BARE_LISTS, _BARE_LISTS_MAX, (tuple(value), limit), labels)


def _check_request_labels(labels: tuple[Label, ...], info: ValidationInfo, max_labels: int) -> None:
    """What a request's labels must satisfy beyond each label's own validity: given or named, not both; few enough."""
    named_set = info.data.get("label_set")
    if named_set and labels:
        raise _error(ErrorCode.LABEL_SET_CONFLICT, "give labels or a label_set, not both")
    if not labels and not named_set:
        raise _error(ErrorCode.NO_LABELS, "no candidate labels (and no label_set)")
    if len(labels) > max_labels:
        raise _error(
            ErrorCode.TOO_MANY_LABELS, "{count} labels; the limit is {limit}", count=len(labels), limit=max_labels
        )


def _request_schema_extra(schema: dict[str, Any]) -> None:
    """The JSON Schema says what the validator accepts: a label is a string (shorthand) or a label object."""
    schema["$id"] = "https://labelq.dev/schemas/classify_request.v1.json"
    labels = schema["properties"]["labels"]
    labels["items"] = {"anyOf": [{"type": "string"}, labels["items"]]}


class ClassifyRequest(BaseModel):
    """One text to classify against candidate labels."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra=lambda schema: _request_schema_extra(schema),
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    id: Annotated[str, Field(pattern=ID_PATTERN)] = Field(
        default_factory=lambda: uuid.uuid4().hex, description="The producer's id, echoed in the result"
    )
    text: str = Field(description="The text to classify (the NLI premise)")
    label_set: Annotated[str, Field(pattern=LABEL_SET_NAME_PATTERN)] | None = Field(
        None, description="The name of a label set stored on the workers, instead of `labels` (its latest version)"
    )
    labels: tuple[Label, ...] = Field(
        (),
        validate_default=True,  # an absent `labels` is checked too: it needs a label_set
        description="Candidate labels: strings or label objects, unique by name (or give `label_set`)",
    )
    hypothesis_template: str | None = Field(
        None, description=f"Contains `{{}}`; default: the model's own, {DEFAULT_TEMPLATE!r} for NLI models"
    )
    multi_label: StrictBool = Field(False, description="Score labels independently instead of one softmax over all")
    shortlist: StrictInt | None = Field(
        None,
        description="NLI models: score only the k labels the worker's embedding model ranks highest for this text "
        "(when there are more than k); 0 scores every label; default: the worker's LABELQ_SHORTLIST_K",
        json_schema_extra={"minimum": 0},
    )
    thresholds: StrictFloat | dict[str, StrictFloat] | None = Field(
        None, description=f"One threshold for all labels or a per-label map; default {DEFAULT_THRESHOLD}"
    )
    reply_to: str | None = Field(None, description="A result queue name, or an http(s) webhook URL")
    webhook_secret: Annotated[str, Field(pattern=SECRET_NAME_PATTERN)] | None = Field(
        None,
        description="With a webhook reply_to: the NAME of a signing secret configured on the worker "
        "(default: 'default'); secrets themselves never travel in messages",
    )
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, description="Small, echoed back in the result")
    model: Annotated[str, Field(pattern=MODEL_NAME_PATTERN)] | None = Field(
        None, description="A model installed on the worker; default: the worker's default model"
    )
    deadline: AwareDatetime | None = Field(None, description="Not worth answering after this instant")
    submitted_at: AwareDatetime | None = Field(None, description="When the producer sent it (for queue-wait metrics)")

    @field_validator("deadline", "submitted_at", mode="before")
    @classmethod
    def _instant(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads a number, or a string of one, as seconds or milliseconds since 1970 (0 is long expired):
        # the contract is an ISO 8601 instant
        if (isinstance(value, int | float) and not isinstance(value, bool)) or (
            isinstance(value, str) and _NUMBER.fullmatch(value.strip())
        ):
            message = "{field} is a number; give an ISO 8601 instant with a time zone, e.g. 2026-11-28T10:00:05Z"
            raise _error(ErrorCode.WRONG_TYPE, message, field=info.field_name)
        return value

    @field_validator("text")
    @classmethod
    def _text(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise _error(ErrorCode.EMPTY_TEXT, "text is empty or whitespace only")
        limits = _limits(info)
        if limits.text_overflow == "reject" and len(value) > limits.max_text_chars:
            raise _error(
                ErrorCode.TEXT_TOO_LONG,
                "text has {length} characters; the limit is {limit}",
                length=len(value),
                limit=limits.max_text_chars,
            )
        return value

    @field_validator("labels", mode="wrap")
    @classmethod
    def _labels(cls, value: Any, validate: ValidatorFunctionWrapHandler, info: ValidationInfo) -> tuple[Label, ...]:
        limits = _limits(info)
        name_limit = limits.max_label_chars
        known = _known_bare_list(value, name_limit)  # a list of names seen before: valid and unique
        labels: tuple[Label, ...] = known if known is not None else validate(_expand_bare_names(value, name_limit))
        _check_request_labels(labels, info, limits.max_labels)
        if known is None:
            seen: set[str] = set()
            for label in labels:
                if label.name in seen:
                    raise _error(ErrorCode.DUPLICATE_LABELS, "label '{label}' appears more than once", label=label.name)
                seen.add(label.name)
            _remember_bare_labels(value, labels, name_limit)
        return labels

    @field_validator("shortlist")
    @classmethod
    def _shortlist(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            message = "shortlist must be 0 (off) or a number of labels, got {value}"
            raise _error(ErrorCode.INVALID_SHORTLIST, message, value=value)
        return value

    @field_validator("hypothesis_template")
    @classmethod
    def _template(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        problem = template_problem(value, _limits(info).max_label_text_chars)
        if problem is not None:
            raise _error(ErrorCode.INVALID_TEMPLATE, "{problem}", problem=problem)
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds(
        cls, value: float | dict[str, float] | None, info: ValidationInfo
    ) -> float | dict[str, float] | None:
        if isinstance(value, dict):
            names = {label.name for label in info.data.get("labels", ())}
            for key, threshold in value.items():
                if "labels" in info.data and not info.data.get("label_set") and key not in names:
                    raise _error(
                        ErrorCode.UNKNOWN_THRESHOLD_LABEL, "threshold for '{label}', which is not a label", label=key
                    )
                _check_unit_interval(threshold)
        elif value is not None:
            _check_unit_interval(value)
        return value

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if value.startswith(("http://", "https://")):
            if len(value) > 2048 or re.search(r"\s", value) or not re.match(r"^https?://[^/?#@\s]+", value):
                raise _error(ErrorCode.INVALID_REPLY_TO, "reply_to is not a valid http(s) URL")
            return value
        problem = reply_queue_problem(value, _limits(info).reply_queue_prefixes)
        if problem is not None:
            raise _error(ErrorCode.INVALID_REPLY_TO, "{problem}", problem=problem)
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, MetadataValue], info: ValidationInfo) -> dict[str, MetadataValue]:
        if not value:  # most requests carry none
            return value
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):  # JSON has no NaN or Infinity
                raise _error(
                    ErrorCode.WRONG_TYPE, "metadata {key} is {item}, which JSON cannot carry", key=key, item=item
                )
        limit = _limits(info).max_metadata_bytes
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > limit:
            raise _error(
                ErrorCode.METADATA_TOO_LARGE,
                "metadata is {size} bytes as JSON; the limit is {limit}",
                size=size,
                limit=limit,
            )
        return value

    def to_wire(self) -> dict[str, Any]:
        """The message body a producer sends: JSON-ready, absent fields left out (`multi_label` too unless the
        producer set it, so a named label set's default holds), and each label that is only a name as that bare
        string (the shorthand). A 77-label banking77 request is 2 KB instead of 4 KB with
        `"examples": []` on every label, and a worker parses it in a quarter of the time (51 vs 207 us: bare
        names are validated once and shared)."""
        unset = {"multi_label"} - self.model_fields_set  # a label set's own default applies unless the producer set it
        data = self.model_dump(mode="json", exclude_none=True, exclude={"labels", *unset})
        if self.labels:
            data["labels"] = [
                label.name if label.bare else label.model_dump(mode="json", exclude_defaults=True)
                for label in self.labels
            ]
        return data

    def thresholds_by_label(self) -> tuple[float, ...]:
        """Each label's effective threshold, aligned with `labels`: the per-label map, then the label's own,
        then the global one, then DEFAULT_THRESHOLD."""
        per_label = self.thresholds if isinstance(self.thresholds, dict) else {}
        default = float(self.thresholds) if isinstance(self.thresholds, float | int) else DEFAULT_THRESHOLD
        if not per_label and all(label.threshold is None for label in self.labels):
            return (default,) * len(self.labels)  # the common case, without a lookup per label
        return tuple(per_label.get(label.name, label.threshold_or(default)) for label in self.labels)

    @property
    def webhook_url(self) -> str | None:
        """`reply_to` when it is a webhook URL."""
        target = self.reply_to
        return target if target and target.startswith(("http://", "https://")) else None

    @property
    def reply_queue(self) -> str | None:
        """`reply_to` when it is a result queue name."""
        return self.reply_to if self.reply_to and not self.webhook_url else None

    def expired(self, now: datetime) -> bool:
        return self.deadline is not None and now >= self.deadline

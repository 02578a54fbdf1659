"""What a worker publishes for each request: a `ClassificationResult` or an `ErrorResult` (`status` tells)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass

from schemas.codes import ErrorCode
from schemas.request import SCHEMA_VERSION, MetadataValue

# Keys a worker with tracing on (docs/operations.md, "Tracing") adds to a result's `metadata`: the request's trace id
# (32 hex digits) and its span's W3C `traceparent`. Absent when tracing is off; older readers see plain metadata.
TRACE_ID_KEY = "labelq.trace_id"
TRACEPARENT_KEY = "labelq.traceparent"


# A pydantic dataclass, not a model: the worker builds one per label of every request, and a 77-label result
# validates in half the time (docs/benchmarks.md). Same fields, JSON and schema.
@dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class LabelScore:
    label: str
    score: Annotated[float, Field(description="Single-label: sums to 1 over labels; multi-label: each label in [0, 1]")]
    threshold: float
    accepted: Annotated[bool, Field(description="score >= threshold")]


class Timings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    queue_ms: float | None = Field(None, description="From submitted_at to the start of the batch, when known")
    inference_ms: float = Field(description="This request's share of its batch's model time")
    batch_ms: float = Field(description="Wall time of the whole batch the request was classified in")


class Shortlist(BaseModel):
    """Present when the labels were shortlisted before the NLI model scored them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="The embedding model that ranked the candidate labels")
    k: int = Field(description="How many labels were kept and scored")
    candidates: int = Field(description="How many candidate labels the request had")


class ClassificationResult(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={"$id": "https://labelq.dev/schemas/classification_result.v1.json"},
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    status: Literal["ok"] = "ok"
    id: str
    labels: tuple[LabelScore, ...] = Field(
        description="Every candidate label (the shortlisted ones when `shortlist` is set), highest score first"
    )
    accepted: tuple[str, ...] = Field(description="Labels at or above their threshold, highest score first")
    top: str = Field(description="The highest-scoring label")
    multi_label: bool
    truncated: bool = Field(False, description="The text was cut (character limit or the model's token limit)")
    model: str
    model_revision: str
    label_set: str | None = Field(None, description="The label set the labels came from, when the request named one")
    label_set_version: int | None = None
    scorer: Literal["zero-shot", "head"] = Field(
        "zero-shot",
        description="What scored the labels: the model zero-shot, or the label set's head learned from examples",
    )
    scorer_note: str | None = Field(
        None, description="Why the label set's head did not score this request (it was fitted on another model)"
    )
    shortlist: Shortlist | None = Field(None, description="Set when only a shortlist of the labels was scored")
    timings: Timings
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @property
    def trace_id(self) -> str | None:
        """The request's trace id when the worker traced it (`metadata["labelq.trace_id"]`), else None."""
        value = self.metadata.get(TRACE_ID_KEY)
        return value if isinstance(value, str) else None


class ErrorDetail(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: ErrorCode
    field: str | None = None
    message: str


class ErrorResult(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={"$id": "https://labelq.dev/schemas/error_result.v1.json"},
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    status: Literal["error"] = "error"
    id: str | None = Field(description="The request's id when it could be read")
    code: ErrorCode = Field(description="Stable machine-readable reason (the first problem found)")
    field: str | None = Field(None, description="Dotted path of the offending field, when one is to blame")
    message: str = Field(description="For humans")
    errors: tuple[ErrorDetail, ...] = Field((), description="Every problem found, the first one repeated")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @property
    def trace_id(self) -> str | None:
        """The request's trace id when the worker traced it (`metadata["labelq.trace_id"]`), else None."""
        value = self.metadata.get(TRACE_ID_KEY)
        return value if isinstance(value, str) else None


def single_error(
    request_id: str | None,
    code: ErrorCode,
    message: str,
    field: str | None = None,
    metadata: dict[str, MetadataValue] | None = None,
) -> ErrorResult:
    """An ErrorResult for one problem (its `errors` list holds that problem alone)."""
    detail = ErrorDetail(code=code, field=field, message=message)
    return ErrorResult(
        id=request_id, code=code, field=field, message=message, errors=(detail,), metadata=metadata or {}
    )


Result = Annotated[ClassificationResult | ErrorResult, Field(discriminator="status")]
RESULT_ADAPTER: TypeAdapter[ClassificationResult | ErrorResult] = TypeAdapter(Result)


def parse_result(raw: str | bytes) -> ClassificationResult | ErrorResult:
    """Read a published result (either kind)."""
    return RESULT_ADAPTER.validate_json(raw)

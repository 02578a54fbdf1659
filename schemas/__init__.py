"""The wire contract shared by producers and workers: requests, results, error codes, limits.

Both sides import only this package from each other; non-Python producers use the JSON Schema files in
`schemas/jsonschema/`.
"""

from schemas.codes import ErrorCode
from schemas.corrections import Correction, CorrectionReceipt
from schemas.limits import RequestLimits
from schemas.parsing import ParsedRequest, error_from_validation, parse_request, validate_request
from schemas.request import DEFAULT_TEMPLATE, DEFAULT_THRESHOLD, SCHEMA_VERSION, ClassifyRequest, Label
from schemas.result import (
    ClassificationResult,
    ErrorDetail,
    ErrorResult,
    LabelScore,
    Result,
    Shortlist,
    Timings,
    parse_result,
    single_error,
)

__all__ = [
    "DEFAULT_TEMPLATE",
    "DEFAULT_THRESHOLD",
    "SCHEMA_VERSION",
    "ClassificationResult",
    "ClassifyRequest",
    "Correction",
    "CorrectionReceipt",
    "ErrorCode",
    "ErrorDetail",
    "ErrorResult",
    "Label",
    "LabelScore",
    "ParsedRequest",
    "RequestLimits",
    "Result",
    "Shortlist",
    "Timings",
    "error_from_validation",
    "parse_request",
    "parse_result",
    "single_error",
    "validate_request",
]

"""The wire contract: every bad input is an ErrorResult with a stable code and field, never an exception."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from schemas import (
    DEFAULT_THRESHOLD,
    ClassificationResult,
    ClassifyRequest,
    ErrorCode,
    ErrorResult,
    ParsedRequest,
    RequestLimits,
    parse_request,
    parse_result,
    validate_request,
)
from schemas.jsonschema_files import DIRECTORY, MODELS, render

VALID: dict[str, Any] = {"text": "I was charged twice", "labels": ["billing", "bug"]}


def with_(**changes: Any) -> bytes:
    message = {**VALID, **changes}
    return json.dumps({k: v for k, v in message.items() if v is not ...}).encode()


BAD_INPUT = [
    # (case, raw message, expected code, expected field)
    ("empty text", with_(text=""), ErrorCode.EMPTY_TEXT, "text"),
    ("whitespace text", with_(text=" \n\t "), ErrorCode.EMPTY_TEXT, "text"),
    ("text over the limit", with_(text="x" * 101), ErrorCode.TEXT_TOO_LONG, "text"),
    ("no labels", with_(labels=[]), ErrorCode.NO_LABELS, "labels"),
    ("labels missing", with_(labels=...), ErrorCode.NO_LABELS, "labels"),
    ("labels and a label set", with_(label_set="moderation"), ErrorCode.LABEL_SET_CONFLICT, "labels"),
    ("label set name with spaces", with_(labels=..., label_set="my set"), ErrorCode.WRONG_TYPE, "label_set"),
    ("text missing", with_(text=...), ErrorCode.MISSING_FIELD, "text"),
    ("duplicate labels", with_(labels=["a", "b", "a"]), ErrorCode.DUPLICATE_LABELS, "labels"),
    ("duplicate label objects", with_(labels=["a", {"name": "a"}]), ErrorCode.DUPLICATE_LABELS, "labels"),
    ("too many labels", with_(labels=[f"l{i}" for i in range(6)]), ErrorCode.TOO_MANY_LABELS, "labels"),
    ("empty label", with_(labels=["a", " "]), ErrorCode.EMPTY_LABEL, "labels.1.name"),
    ("label too long", with_(labels=["a" * 31]), ErrorCode.LABEL_TOO_LONG, "labels.0.name"),
    (
        "too many examples",
        with_(labels=[{"name": "a", "examples": ["x"] * 4}]),
        ErrorCode.TOO_MANY_EXAMPLES,
        "labels.0.examples",
    ),
    (
        "template without {}",
        with_(hypothesis_template="This is it."),
        ErrorCode.INVALID_TEMPLATE,
        "hypothesis_template",
    ),
    (
        "template with a named field",
        with_(hypothesis_template="{x} {}"),
        ErrorCode.INVALID_TEMPLATE,
        "hypothesis_template",
    ),
    ("template with two {}", with_(hypothesis_template="{} or {}"), ErrorCode.INVALID_TEMPLATE, "hypothesis_template"),
    ("template unbalanced", with_(hypothesis_template="{} }"), ErrorCode.INVALID_TEMPLATE, "hypothesis_template"),
    ("negative shortlist", with_(shortlist=-1), ErrorCode.INVALID_SHORTLIST, "shortlist"),
    ("shortlist as a string", with_(shortlist="10"), ErrorCode.WRONG_TYPE, "shortlist"),
    ("threshold above 1", with_(thresholds=1.5), ErrorCode.THRESHOLD_OUT_OF_RANGE, "thresholds"),
    ("threshold below 0", with_(thresholds={"billing": -0.1}), ErrorCode.THRESHOLD_OUT_OF_RANGE, "thresholds"),
    (
        "label threshold out of range",
        with_(labels=[{"name": "a", "threshold": 2}]),
        ErrorCode.THRESHOLD_OUT_OF_RANGE,
        "labels.0.threshold",
    ),
    ("threshold for unknown label", with_(thresholds={"praise": 0.3}), ErrorCode.UNKNOWN_THRESHOLD_LABEL, "thresholds"),
    ("text of wrong type", with_(text=42), ErrorCode.WRONG_TYPE, "text"),
    ("labels of wrong type", with_(labels="billing,bug"), ErrorCode.WRONG_TYPE, "labels"),
    ("label of wrong type", with_(labels=["a", 7]), ErrorCode.WRONG_TYPE, "labels.1"),
    ("multi_label as a string", with_(multi_label="yes"), ErrorCode.WRONG_TYPE, "multi_label"),
    ("threshold as a string", with_(thresholds="0.5"), ErrorCode.WRONG_TYPE, "thresholds"),
    ("metadata nested", with_(metadata={"a": {"b": 1}}), ErrorCode.WRONG_TYPE, "metadata.a"),
    ("deadline without zone", with_(deadline="2030-01-01T00:00:00"), ErrorCode.WRONG_TYPE, "deadline"),
    ("deadline as 0", with_(deadline=0), ErrorCode.WRONG_TYPE, "deadline"),
    ("deadline as epoch ms", with_(deadline=99999999999), ErrorCode.WRONG_TYPE, "deadline"),
    ("deadline as a float", with_(deadline=1.8e9), ErrorCode.WRONG_TYPE, "deadline"),
    ("deadline as a number in a string", with_(deadline="0"), ErrorCode.WRONG_TYPE, "deadline"),
    ("deadline as epoch seconds in a string", with_(deadline=" 1800000000.5 "), ErrorCode.WRONG_TYPE, "deadline"),
    ("submitted_at as a number", with_(submitted_at=1_800_000_000), ErrorCode.WRONG_TYPE, "submitted_at"),
    (
        "blank description",
        with_(labels=[{"name": "a", "description": " \t"}]),
        ErrorCode.EMPTY_LABEL,
        "labels.0.description",
    ),
    ("empty hypothesis", with_(labels=[{"name": "a", "hypothesis": ""}]), ErrorCode.EMPTY_LABEL, "labels.0.hypothesis"),
    ("empty example", with_(labels=[{"name": "a", "examples": ["x", ""]}]), ErrorCode.EMPTY_LABEL, "labels.0.examples"),
    ("blank example", with_(labels=[{"name": "a", "examples": [" "]}]), ErrorCode.EMPTY_LABEL, "labels.0.examples"),
    ("unknown field", with_(colour="red"), ErrorCode.UNKNOWN_FIELD, "colour"),
    ("unknown label field", with_(labels=[{"name": "a", "weight": 2}]), ErrorCode.UNKNOWN_FIELD, "labels.0.weight"),
    ("schema version 2", with_(schema_version=2), ErrorCode.UNSUPPORTED_SCHEMA_VERSION, "schema_version"),
    ("bad id", with_(id="has spaces"), ErrorCode.INVALID_ID, "id"),
    ("reply_to with spaces", with_(reply_to="my queue"), ErrorCode.INVALID_REPLY_TO, "reply_to"),
    ("reply_to a labelq queue", with_(reply_to="labelq.realtime"), ErrorCode.INVALID_REPLY_TO, "reply_to"),
    ("reply_to a labelq key", with_(reply_to="labelq:dead"), ErrorCode.INVALID_REPLY_TO, "reply_to"),
    ("reply_to bad URL", with_(reply_to="https:///nohost"), ErrorCode.INVALID_REPLY_TO, "reply_to"),
    ("metadata too large", with_(metadata={"k": "v" * 100}), ErrorCode.METADATA_TOO_LARGE, "metadata"),
    ("model name with spaces", with_(model="a model"), ErrorCode.WRONG_TYPE, "model"),
    ("invalid UTF-8", b'{"text": "caf\xe9", "labels": ["a"]}', ErrorCode.INVALID_UTF8, None),
    ("not JSON", b"text=hello", ErrorCode.INVALID_JSON, None),
    ("truncated JSON", b'{"text": "hi", "labels": ["a"', ErrorCode.INVALID_JSON, None),
    ("JSON array", b'["hi", ["a"]]', ErrorCode.INVALID_JSON, None),
    ("JSON string", b'"hi"', ErrorCode.INVALID_JSON, None),
    ("empty bytes", b"", ErrorCode.INVALID_JSON, None),
]
SMALL = RequestLimits(
    max_labels=5, max_text_chars=100, max_label_chars=30, max_examples_per_label=3, max_metadata_bytes=64
)


@pytest.mark.parametrize(("raw", "code", "field"), [case[1:] for case in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_an_error_result(raw: bytes, code: ErrorCode, field: str | None) -> None:
    outcome = parse_request(raw, SMALL)
    assert isinstance(outcome, ErrorResult), outcome
    assert (outcome.code, outcome.field) == (code, field)
    assert outcome.message and not re.search(r"\{[a-z_]+\}", outcome.message)  # templates are filled in
    assert outcome.errors[0].code == code
    parse_result(outcome.model_dump_json())  # and it is a valid wire result


def _decoded_cases() -> list[tuple[str, Any]]:
    cases = []
    for name, raw, *_ in BAD_INPUT:
        try:
            cases.append((name, json.loads(raw)))
        except ValueError:
            continue  # not JSON: nothing decoded to validate
    more = [
        {**VALID, "thresholds": {"billing": 1, "bug": 0}},
        {**VALID, "labels": [{"name": "a", "threshold": 1}, "b"], "shortlist": 0},
        {**VALID, "id": "d-1", "deadline": "2030-01-01T00:00:00+02:00", "submitted_at": 1893456000},
        {**VALID, "metadata": {"n": 1, "f": 1.5, "b": True, "s": "x", "z": None}, "multi_label": True},
        {**VALID, "text": "x" * 101},
        {**VALID, "shortlist": 2.0},
        {**VALID, "shortlist": True},
        {**VALID, "multi_label": 1},
        {**VALID, "labels": [{"name": "a", "examples": "x"}]},
        [VALID],
        "a string",
        7,
    ]
    return cases + [(f"more {i}", case) for i, case in enumerate(more)]


@pytest.mark.parametrize("limits", [SMALL, RequestLimits(text_overflow="truncate", max_text_chars=100)])
def test_a_decoded_request_validates_exactly_as_its_json_parses(limits: RequestLimits) -> None:
    """The worker validates a Celery task's argument as decoded (`validate_request`), not as JSON: the same
    outcome, errors and their messages included, for every case here."""
    for name, data in _decoded_cases():
        if isinstance(data, dict) and "id" not in data:
            data = {**data, "id": "same-id"}  # else each side draws its own default id
        raw = json.dumps(data).encode()
        assert validate_request(data, limits) == parse_request(raw, limits), name


def test_error_result_carries_the_request_id_when_readable() -> None:
    outcome = parse_request(json.dumps({"id": "req-7", "text": "", "labels": ["a"]}), SMALL)
    assert isinstance(outcome, ErrorResult) and outcome.id == "req-7"
    assert isinstance(bad := parse_request(b"nope"), ErrorResult) and bad.id is None


def test_every_problem_is_listed() -> None:
    outcome = parse_request(json.dumps({"text": "", "labels": [], "colour": 1}), SMALL)
    assert isinstance(outcome, ErrorResult)
    assert {e.code for e in outcome.errors} == {ErrorCode.EMPTY_TEXT, ErrorCode.NO_LABELS, ErrorCode.UNKNOWN_FIELD}


def test_truncation_when_configured_is_flagged() -> None:
    limits = RequestLimits(max_text_chars=10, text_overflow="truncate")
    outcome = parse_request(with_(text="abcdefghijklmnop"), limits)
    assert isinstance(outcome, ParsedRequest)
    assert outcome.truncated and outcome.request.text == "abcdefghij"
    short = parse_request(with_(text="abc"), limits)
    assert isinstance(short, ParsedRequest) and not short.truncated


def test_label_shorthand_and_objects_parse_alike() -> None:
    outcome = parse_request(
        with_(
            labels=[
                "billing",
                {"name": "bug", "description": "a software defect", "threshold": 0.7, "examples": ["it crashes"]},
            ]
        )
    )
    assert isinstance(outcome, ParsedRequest)
    billing, bug = outcome.request.labels
    assert (billing.name, billing.hypothesis_text, billing.threshold) == ("billing", "billing", None)
    assert (bug.hypothesis_text, bug.threshold, bug.examples) == ("a software defect", 0.7, ("it crashes",))


def test_threshold_precedence() -> None:
    request = ClassifyRequest(
        text="x",
        labels=[{"name": "a", "threshold": 0.9}, {"name": "b", "threshold": 0.8}, "c", "d"],  # type: ignore[list-item]
        thresholds={"a": 0.1, "c": 0.3},
    )
    assert request.thresholds_by_label() == (0.1, 0.8, 0.3, DEFAULT_THRESHOLD)
    uniform = ClassifyRequest(text="x", labels=["a", "b"], thresholds=0.2)  # type: ignore[list-item]
    assert uniform.thresholds_by_label() == (0.2, 0.2)
    own = ClassifyRequest(text="x", labels=[{"name": "a", "threshold": 0.9}, "b"], thresholds=0.2)  # type: ignore[list-item]
    assert own.thresholds_by_label() == (0.9, 0.2)  # a label's own threshold beats the global one
    empty_map = ClassifyRequest(text="x", labels=["a"], thresholds={})  # type: ignore[list-item]
    assert empty_map.thresholds_by_label() == (DEFAULT_THRESHOLD,)


def test_valid_request_defaults() -> None:
    outcome = parse_request(with_())
    assert isinstance(outcome, ParsedRequest)
    request = outcome.request
    assert request.schema_version == 1 and len(request.id) == 32
    assert request.multi_label is False and request.hypothesis_template is None and request.metadata == {}
    with pytest.raises(ValueError):
        request.__setattr__("text", "changed")  # frozen


def test_a_label_set_stands_for_the_labels() -> None:
    outcome = parse_request(with_(labels=..., label_set="moderation", thresholds={"insult": 0.7}))
    assert isinstance(outcome, ParsedRequest)
    assert outcome.request.label_set == "moderation" and outcome.request.labels == ()


def test_webhook_and_queue_reply_to_accepted() -> None:
    for target in ("results:moderation", "https://hooks.example.com/labelq?x=1", "http://10.0.0.1:8080/h"):
        assert isinstance(parse_request(with_(reply_to=target)), ParsedRequest), target


@pytest.mark.parametrize("name", sorted(MODELS))
def test_json_schema_files_match_models(name: str) -> None:
    assert (DIRECTORY / name).read_text() == render(MODELS[name]), "run: python -m schemas.jsonschema_files"


def test_result_round_trip() -> None:
    raw = json.dumps(
        {
            "id": "r1",
            "status": "ok",
            "labels": [{"label": "a", "score": 0.9, "threshold": 0.5, "accepted": True}],
            "accepted": ["a"],
            "top": "a",
            "multi_label": False,
            "model": "m",
            "model_revision": "abc",
            "timings": {"inference_ms": 1.0, "batch_ms": 2.0},
        }
    )
    result = parse_result(raw)
    assert isinstance(result, ClassificationResult) and result.status == "ok"
    assert parse_result(result.model_dump_json()) == result


def test_json_schema_accepts_and_refuses_what_the_models_do() -> None:
    import jsonschema

    schema = json.loads((DIRECTORY / "classify_request.v1.json").read_text())
    accepted = [
        json.loads(with_()),
        {
            "text": "x",
            "labels": ["a", {"name": "b", "description": "d", "threshold": 0.2, "examples": ["e"]}],
            "thresholds": {"a": 0.3},
            "multi_label": True,
            "metadata": {"k": 1, "v": None},
            "deadline": "2030-01-01T00:00:00Z",
            "reply_to": "q:1",
            "shortlist": 10,
        },
    ]
    refused = [
        {"labels": ["a"]},
        {"text": "x", "labels": ["a"], "colour": 1},
        {"text": 5, "labels": ["a"]},
        {"text": "x", "labels": "a"},
        {"text": "x", "labels": ["a"], "multi_label": "yes"},
        {"text": "x", "labels": ["a"], "shortlist": -1},
        {"text": "x", "labels": ["a"], "shortlist": 2.5},
    ]
    for message in accepted:
        jsonschema.validate(message, schema)
        assert isinstance(parse_request(json.dumps(message)), ParsedRequest)
    for message in refused:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(message, schema)
        assert isinstance(parse_request(json.dumps(message)), ErrorResult)


def test_the_wire_form_is_compact_and_parses_back_to_the_same_request() -> None:
    request = ClassifyRequest(
        id="w-1",
        text="the app crashed",
        labels=[  # type: ignore[list-item]
            "billing",
            {"name": "bug", "description": "a software defect", "threshold": 0.7, "examples": ["it crashes"]},
            {"name": "praise", "hypothesis": "The customer is happy."},
        ],
        thresholds={"billing": 0.4},
        metadata={"tenant": "acme"},
    )
    wire = request.to_wire()
    assert wire["labels"] == [
        "billing",  # only a name: the bare-string shorthand
        {"name": "bug", "description": "a software defect", "threshold": 0.7, "examples": ["it crashes"]},
        {"name": "praise", "hypothesis": "The customer is happy."},
    ]
    assert "reply_to" not in wire and "deadline" not in wire  # absent fields stay absent
    outcome = parse_request(json.dumps(wire))
    assert isinstance(outcome, ParsedRequest) and outcome.request == request
    named = ClassifyRequest(id="w-2", text="x", label_set="intents")
    assert "labels" not in named.to_wire()
    again = parse_request(json.dumps(named.to_wire()))
    assert isinstance(again, ParsedRequest) and again.request == named


def test_repeated_label_names_and_lists_are_validated_once_per_limit_and_shared() -> None:
    long_name = "a label of forty characters, give or take"
    raw = json.dumps({"text": "x", "labels": [long_name, "short"]})
    first, second = parse_request(raw), parse_request(raw)
    assert isinstance(first, ParsedRequest) and isinstance(second, ParsedRequest)
    assert first.request.labels[0] is second.request.labels[0]  # validated once, shared (labels are frozen)
    assert first.request.labels is second.request.labels  # and the whole list: one tuple for a repeated list
    # a remembered list still gets the checks that depend on the request and the receiver's limits
    conflict = parse_request(json.dumps({"text": "x", "labels": [long_name, "short"], "label_set": "intents"}))
    assert isinstance(conflict, ErrorResult) and conflict.code == ErrorCode.LABEL_SET_CONFLICT
    too_many = parse_request(raw, RequestLimits(max_labels=1))
    assert isinstance(too_many, ErrorResult) and too_many.code == ErrorCode.TOO_MANY_LABELS
    twice = json.dumps({"text": "x", "labels": ["short", "short"]})
    for _ in range(2):  # a rejected list is never remembered as valid
        duplicate = parse_request(twice)
        assert isinstance(duplicate, ErrorResult) and duplicate.code == ErrorCode.DUPLICATE_LABELS
    stricter = parse_request(raw, RequestLimits(max_label_chars=30))  # a name remembered under another limit
    assert isinstance(stricter, ErrorResult)
    assert (stricter.code, stricter.field) == (ErrorCode.LABEL_TOO_LONG, "labels.0.name")
    rich = parse_request(json.dumps({"text": "x", "labels": [{"name": "short", "threshold": 0.9}]}))
    assert isinstance(rich, ParsedRequest) and rich.request.labels[0].threshold == 0.9  # not the bare "short"

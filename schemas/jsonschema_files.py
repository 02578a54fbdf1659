"""JSON Schema files of the wire contract, for producers and consumers in other languages.

Regenerate after changing a model: `python -m schemas.jsonschema_files` (a test fails when they drift).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.request import ClassifyRequest
from schemas.result import ClassificationResult, ErrorResult

DIRECTORY = Path(__file__).parent / "jsonschema"
MODELS: dict[str, type[BaseModel]] = {
    "classify_request.v1.json": ClassifyRequest,
    "classification_result.v1.json": ClassificationResult,
    "error_result.v1.json": ErrorResult,
}


def render(model: type[BaseModel]) -> str:
    schema: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    schema.update(model.model_json_schema(mode="validation"))
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all() -> list[Path]:
    DIRECTORY.mkdir(exist_ok=True)
    written = []
    for name, model in MODELS.items():
        path = DIRECTORY / name
        path.write_text(render(model))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all():
        print(path)

"""docker-compose.yml is valid: `docker compose config` where the client has compose, else a schema check."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"

_STRING_LIST = {"type": "array", "items": {"type": "string"}}
# The subset of the Compose specification this project uses, closed to unknown keys so typos fail.
SERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["image"]}, {"required": ["build"]}],
    "properties": {
        "image": {"type": "string"},
        "build": {"type": "string"},
        "command": {"oneOf": [{"type": "string"}, _STRING_LIST]},
        "environment": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "volumes": _STRING_LIST,
        "depends_on": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "condition": {"enum": ["service_started", "service_healthy", "service_completed_successfully"]}
                },
                "required": ["condition"],
            },
        },
        "healthcheck": {
            "type": "object",
            "additionalProperties": False,
            "required": ["test"],
            "properties": {
                "test": _STRING_LIST,
                "interval": {"type": "string"},
                "timeout": {"type": "string"},
                "start_period": {"type": "string"},
                "retries": {"type": "integer"},
            },
        },
        "stop_signal": {"type": "string"},
        "stop_grace_period": {"type": "string"},
    },
}
COMPOSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["services"],
    "properties": {
        "name": {"type": "string"},
        "services": {"type": "object", "additionalProperties": SERVICE_SCHEMA},
        "volumes": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
    },
}


def has_compose() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0  # type: ignore[list-item]


@pytest.mark.skipif(not has_compose(), reason="this docker client has no compose plugin; the schema test runs")
def test_docker_compose_config_accepts_the_file() -> None:
    done = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_compose_file_matches_the_schema_and_wires_labelq() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    jsonschema.validate(compose, COMPOSE_SCHEMA)
    services = compose["services"]
    assert set(services) == {"redis", "worker", "webhooks", "producer"}
    assert services["webhooks"]["command"][:2] == ["labelq", "webhook-worker"]
    worker, producer = services["worker"], services["producer"]
    assert worker["command"][:2] == ["labelq", "worker"]
    assert worker["environment"]["LABELQ_REDIS_URL"] == "redis://redis:6379/0"
    assert f"models:{worker['environment']['LABELQ_MODELS_DIR']}" in worker["volumes"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "labelq workers --node" in worker["healthcheck"]["test"][-1]
    assert producer["depends_on"]["worker"]["condition"] == "service_healthy"
    assert "examples/requests.jsonl" in producer["command"][-1] and (ROOT / "examples" / "requests.jsonl").is_file()
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith("/")}
    assert named <= set(compose["volumes"])
    assert (ROOT / worker["build"] / "Dockerfile").is_file()


def test_the_schema_check_catches_mistakes() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    compose["services"]["worker"]["enviroment"] = {}  # a typo
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(compose, COMPOSE_SCHEMA)


def test_example_requests_are_valid_wire_messages() -> None:
    from schemas import ParsedRequest, parse_request

    for line in (ROOT / "examples" / "requests.jsonl").read_bytes().splitlines():
        assert isinstance(parse_request(line), ParsedRequest), line

"""Every foreseeable failure of every command is one line with a documented exit code, never a traceback;
--debug shows the traceback."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from labelq.cli import main
from labelq.local_redis import free_port
from tests.conftest import MODELS

FAKE_MODEL = {"LABELQ_MODEL": "fake", "LABELQ_ENABLE_FAKE_MODEL": "1"}
NO_REDIS = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there

REDIS_COMMANDS = [
    ["submit", "hello", "--labels", "a,b"],
    ["results", "q"],
    ["workers"],
    ["labelsets", "list"],
    ["labelsets", "get", "x"],
    ["labelsets", "delete", "x"],
    ["dlq", "list"],
    ["dlq", "show", "x"],
    ["dlq", "purge", "--yes"],
    ["dlq", "replay", "--all"],
]


def run(args: list[str], **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, env={"LABELQ_REDIS_URL": NO_REDIS, **env}, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def assert_one_line(output: str) -> None:
    assert "Traceback" not in output and output.count("error:") == 1, output
    line = next(line for line in output.splitlines() if line.startswith("error:"))
    assert "s3cret" not in line


@pytest.mark.parametrize("args", REDIS_COMMANDS, ids=[" ".join(a) for a in REDIS_COMMANDS])
def test_redis_unreachable_is_one_line_and_exit_3(args: list[str]) -> None:
    code, output = run(args)
    assert code == 3, output
    assert_one_line(output)
    assert "unreachable" in output and "LABELQ_REDIS_URL" in output


def test_submit_file_and_labelsets_put_with_redis_unreachable(tmp_path: Path) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text(json.dumps({"text": "x", "labels": ["a"]}) + "\n")
    labelset = tmp_path / "set.yaml"
    labelset.write_text("labels: [a, b]\n")
    for args in (["submit-file", str(source)], ["labelsets", "put", "s", str(labelset)]):
        code, output = run(args)
        assert code == 3, output
        assert_one_line(output)


def test_a_bad_line_in_an_eval_file_names_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"text": "x", "label": "a"}) + "\n{oops\n")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["a", "b"]))
    code, output = run(["eval", str(data), "--labels-file", str(labels)])
    assert code == 2 and f"{data}:2: not JSON" in output
    assert_one_line(output)


def test_a_malformed_label_set_yaml_names_its_line(tmp_path: Path) -> None:
    labelset = tmp_path / "set.yaml"
    labelset.write_text("labels:\n  - a\n  - [b\n")
    code, output = run(["labelsets", "put", "s", str(labelset)])
    assert code == 2 and f"{labelset}: line" in output and "not valid YAML" in output
    assert_one_line(output)
    labelset.write_text("labels: 5\n")  # YAML, but not a label set
    code, output = run(["labelsets", "put", "s", str(labelset)])
    assert code == 2 and f"{labelset}: labels" in output
    assert_one_line(output)


def test_a_model_directory_with_a_corrupt_config_is_a_model_error(tmp_path: Path) -> None:
    model = tmp_path / "broken"
    shutil.copytree(MODELS / "nli-2class", model)
    (model / "config.json").write_text("{not json")
    for args in (["classify", "x", "--labels", "a,b", "--model", str(model)], ["models", "verify", str(model)]):
        code, output = run(args)
        assert code == 4 and "config.json" in output, output
        assert_one_line(output)


def test_models_pull_without_the_hub_or_a_network_is_one_line() -> None:
    code, output = run(["models", "pull", "MoritzLaurer/deberta-v3-xsmall-zeroshot-v1.1-all-33"], HF_HUB_OFFLINE="1")
    assert (code == 4 and "Hugging Face Hub" in output) or "hub extra" in output, output
    assert_one_line(output)


def test_debug_shows_the_traceback_and_keeps_the_exit_code() -> None:
    """Found by a newcomer check: with --debug a failure exited 1 (Python's uncaught exception), not its code."""
    result = CliRunner().invoke(main, ["--debug", "workers"], env={"LABELQ_REDIS_URL": NO_REDIS})
    assert "Traceback" in result.output and result.exit_code == 3, (result.exit_code, result.output)


def test_the_internal_error_line_says_how_to_run_again_with_debug() -> None:
    """Found by a newcomer check: "run again with --debug" led to `labelq worker --debug`, which click refuses;
    --debug is the group's option, so the line says where it goes."""
    from labelq.failures import describe

    message, code = describe(RuntimeError("boom"))
    assert code == 70 and "labelq --debug <command>" in message and "LABELQ_DEBUG=1" in message


def test_an_invalid_setting_is_named_as_its_environment_variable() -> None:
    """Found by a newcomer check: the line said `metrics_port`, a name the user never typed."""
    code, output = run(["worker"], LABELQ_METRICS_PORT="abc")
    assert code == 2 and "LABELQ_METRICS_PORT" in output, output
    assert_one_line(output)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_metrics_port_in_use_is_one_line_that_names_the_setting(taken_port: int) -> None:
    """Found by a newcomer check: a LABELQ_METRICS_PORT already taken was reported as an internal error (exit 70)
    asking for a bug report."""
    code, output = run(["worker"], LABELQ_METRICS_PORT=str(taken_port), **FAKE_MODEL)
    assert code == 2 and "LABELQ_METRICS_PORT" in output and str(taken_port) in output, output
    assert_one_line(output)


def test_a_metrics_port_in_use_with_several_processes_leaves_no_child_behind(taken_port: int) -> None:
    code, output = run(["worker", "--processes", "2"], LABELQ_METRICS_PORT=str(taken_port), **FAKE_MODEL)
    assert code == 2 and "LABELQ_METRICS_PORT" in output, output
    assert_one_line(output)
    assert not [p for p in psutil.Process().children() if "--in-process" in " ".join(p.cmdline())]


def test_results_leaves_an_unreadable_item_where_it_was_and_says_so_in_one_line(redis_url: str) -> None:
    import redis as redis_py

    from schemas import ErrorResult
    from schemas.codes import ErrorCode

    r = redis_py.Redis.from_url(redis_url)
    good = ErrorResult(id="r1", code=ErrorCode.EMPTY_TEXT, message="text is empty").model_dump_json()
    r.rpush("fuzzq:res", b'{"status":"weird"}', good)
    code, output = run(["results", "fuzzq:res"], LABELQ_REDIS_URL=redis_url)
    assert code == 1, output
    assert_one_line(output)
    assert "not a labelq result" in output and "fuzzq:res" in output
    assert r.lrange("fuzzq:res", 0, -1) == [b'{"status":"weird"}', good.encode()]  # nothing lost, order kept


@pytest.mark.parametrize("name", ["celery", "unacked", "labelq.realtime", "bad name"])
def test_results_refuses_a_name_no_result_queue_may_have_and_takes_nothing(redis_url: str, name: str) -> None:
    import redis as redis_py

    r = redis_py.Redis.from_url(redis_url)
    r.rpush(name, b"a pending Celery task message")
    code, output = run(["results", name], LABELQ_REDIS_URL=redis_url)
    assert code == 2, output
    assert_one_line(output)
    assert r.llen(name) == 1


def test_results_on_a_key_of_another_type_is_a_usage_error_not_a_connection_one(redis_url: str) -> None:
    import redis as redis_py

    redis_py.Redis.from_url(redis_url).set("fuzzq:string", "x")
    code, output = run(["results", "fuzzq:string"], LABELQ_REDIS_URL=redis_url)
    assert code == 2, output
    assert_one_line(output)
    assert "not a result queue" in output and "password" not in output


def test_submit_refused_by_validation_is_one_line_on_stderr(redis_url: str) -> None:
    result = CliRunner().invoke(main, ["submit", "", "--labels", "a,b"], env={"LABELQ_REDIS_URL": redis_url})
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "empty_text" in result.stderr


BAD_URLS = [
    ("notaurl", "scheme"),
    ("redis://:s3cret@127.0.0.1:99999/0", "port"),
    ("redis://:s3cret@127.0.0.1:6379/abc", "database"),  # redis-py would quietly use database 0
    ("sentinel://:s3cret@127.0.0.1:1", "master"),
]


@pytest.mark.parametrize(("url", "why"), BAD_URLS, ids=[why for _, why in BAD_URLS])
@pytest.mark.parametrize("args", [["workers"], ["results", "q"]], ids=["env", "client"])
def test_a_redis_url_that_cannot_work_is_one_line_and_exit_2(url: str, why: str, args: list[str]) -> None:
    code, output = run(args, LABELQ_REDIS_URL=url)
    assert code == 2, output
    assert_one_line(output)
    assert why in output and "internal error" not in output


def test_a_redis_url_given_as_a_flag_is_checked_too() -> None:
    code, output = run(["results", "q", "--redis-url", "redis://127.0.0.1:6379/abc"])
    assert code == 2, output
    assert_one_line(output)


def test_a_result_queue_name_refused_for_its_first_character_says_so(redis_url: str) -> None:
    code, output = run(["results", "_kombu.binding.labelq.realtime"], LABELQ_REDIS_URL=redis_url)
    assert code == 2 and "a letter or digit, then" in output, output


def test_a_key_of_another_type_that_no_command_named_is_a_usage_error_not_the_password(redis_url: str) -> None:
    """Redis's WRONGTYPE reached the generic line "check the password" (exit 3); it is a key of another type
    where labelq keeps its own, exit 2, whatever command met it."""
    import redis

    with redis.Redis.from_url(redis_url) as r:
        r.rpush("labelq:labelset:intents", "not a label set")
    result = CliRunner().invoke(main, ["labelsets", "get", "intents"], env={"LABELQ_REDIS_URL": redis_url})
    assert result.exit_code == 2, result.output
    assert_one_line(result.output)
    assert "another type" in result.output and "password" not in result.output


def test_a_listing_into_a_pipe_that_closes_early_ends_quietly(redis_url: str) -> None:
    """Found by an outside check: `labelq demo | head -3` ended in "internal error (BrokenPipeError)", exit 70;
    any command whose reader goes away ends quietly with exit 0, as `yes | head` does."""
    import os
    import subprocess
    import sys

    import redis

    letter = {"id": "x", "reason": "invalid_request", "queue": "labelq.bulk", "detail": "d" * 200, "raw": "{}"}
    with redis.Redis.from_url(redis_url) as r:
        r.rpush("labelq:dead", *[json.dumps({**letter, "id": f"dead-{i}"}) for i in range(3000)])  # > a pipe's 64 KiB
    labelq = f"{sys.executable} -m labelq.cli"
    done = subprocess.run(
        ["bash", "-c", f"{labelq} dlq list | head -1; exit ${{PIPESTATUS[0]}}"],
        env={**os.environ, "LABELQ_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == "", (done.returncode, done.stderr)
    assert done.stdout.count("\n") == 1

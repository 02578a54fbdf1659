"""The exit-code table in README.md ("Errors and exit codes") is the one every `labelq` command follows: its
numbers are labelq/failures.py's constants, and real commands, run as a user runs them, exit as it says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from labelq import failures
from labelq.local_redis import RedisServer, find_redis_server, free_port

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "fixtures" / "models"


def exit_code_table() -> dict[int, str]:
    """code -> what it means, from the README's table (the first table after the section's heading)."""
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Errors and exit codes\n(.*?)(?=^## )", readme, re.S | re.M)
    assert section, "README.md lost its 'Errors and exit codes' section"
    rows = re.findall(r"^\| *(\d+) *\| *(.+?) *\|$", section.group(1), re.M)
    assert rows, "the section has no table of codes"
    table = {int(code): meaning for code, meaning in rows}
    assert len(table) == len(rows), "a code is listed twice"
    return table


def labelq(*args: str, redis_url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    environment.pop("LABELQ_DEBUG", None)
    if redis_url:
        environment["LABELQ_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "labelq.cli", *args], env=environment, capture_output=True, text=True, timeout=120
    )


def assert_exit(done: subprocess.CompletedProcess[str], code: int) -> None:
    assert done.returncode == code, f"exit {done.returncode}, expected {code}\n{done.stdout}\n{done.stderr}"
    if code:
        assert "Traceback" not in done.stderr, done.stderr


def unreachable() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


# --- the table itself ---------------------------------------------------------------------------------------


def test_the_table_lists_every_code_once_and_matches_the_constants() -> None:
    table = exit_code_table()
    assert set(table) == {0, 1, failures.EXIT_USAGE, failures.EXIT_REDIS, failures.EXIT_MODEL, failures.EXIT_INTERNAL}
    assert (failures.EXIT_USAGE, failures.EXIT_REDIS, failures.EXIT_MODEL, failures.EXIT_INTERNAL) == (2, 3, 4, 70)
    assert "usage" in table[failures.EXIT_USAGE]
    assert "Redis" in table[failures.EXIT_REDIS]
    assert "model" in table[failures.EXIT_MODEL]
    assert "internal" in table[failures.EXIT_INTERNAL]


def test_the_failures_module_points_to_the_table_instead_of_repeating_it() -> None:
    doc = failures.__doc__ or ""
    assert "README.md" in doc and "Errors and exit codes" in doc
    assert not re.search(r"\b3 Redis\b|\b4 a model\b", doc), "the table lives in README.md only"


# --- 1: the command's own "no" ------------------------------------------------------------------------------


def test_no_ready_worker_is_1(redis_url: str) -> None:
    assert_exit(labelq("workers", redis_url=redis_url), 1)
    assert_exit(labelq("health", redis_url=redis_url), 1)


def test_an_error_result_is_1() -> None:
    done = labelq("classify", "hello world", "--labels", "a,b", LABELQ_MAX_TEXT_CHARS="5")  # answered text_too_long
    assert_exit(done, 1)
    assert "text_too_long" in done.stderr + done.stdout


def test_submit_wait_with_no_worker_is_1(redis_url: str) -> None:
    done = labelq("submit", "hello", "--labels", "a,b", "--wait", "--timeout", "0.5", redis_url=redis_url)
    assert_exit(done, 1)


# --- 2: usage or input --------------------------------------------------------------------------------------


def test_a_usage_or_input_problem_is_2(tmp_path: Path) -> None:
    assert_exit(labelq("classify", "hello", "--labels", "a,b", "--no-such-flag"), 2)  # a flag
    assert_exit(labelq("classify-file", str(tmp_path / "missing.jsonl")), 2)  # a file
    assert_exit(labelq("workers", redis_url="http://127.0.0.1:6379/0"), 2)  # a URL
    assert_exit(labelq("classify", "hello", "--labels", "a,b", LABELQ_MAX_LABELS="many"), 2)  # a setting


def test_a_redis_key_of_the_wrong_type_is_2(redis_url: str) -> None:
    import redis as redis_py

    with redis_py.Redis.from_url(redis_url) as r:
        r.set("not-a-list", "x")
    assert_exit(labelq("results", "not-a-list", redis_url=redis_url), 2)


# --- 3: Redis unreachable or refusing the password ----------------------------------------------------------


def test_redis_unreachable_is_3() -> None:
    url = unreachable()
    assert_exit(labelq("workers", redis_url=url), 3)
    assert_exit(labelq("dlq", "list", redis_url=url), 3)


def test_health_with_redis_down_is_3() -> None:
    assert_exit(labelq("health", redis_url=unreachable()), 3)


def test_a_wrong_password_is_3() -> None:
    binary = find_redis_server()
    assert binary, "no redis-server"
    server = RedisServer(binary, password="right-password").start()
    try:
        wrong = server.url.replace("right-password", "wrong-password")
        done = labelq("workers", redis_url=wrong)
        assert_exit(done, 3)
        assert "wrong-password" not in done.stderr + done.stdout  # never a secret
        # sending: refused at once, not retried as an outage for 10 retries (about 15 s) first
        started = time.monotonic()
        sent = labelq("submit", "hello", "--labels", "a,b", redis_url=wrong)
        assert_exit(sent, 3)
        assert "refused the password or user" in sent.stderr and "wrong-password" not in sent.stderr + sent.stdout
        assert time.monotonic() - started < 10, "a refused password was retried"
    finally:
        server.close()


# --- 4: a model problem -------------------------------------------------------------------------------------


def test_a_corrupt_model_is_4(tmp_path: Path) -> None:
    model = tmp_path / "models" / "test--corrupt"
    shutil.copytree(MODELS / "nli-2class", model)
    for onnx in (model / "onnx").glob("*.onnx"):
        onnx.write_bytes(b"not an onnx graph")
    done = labelq(
        "classify", "hello", "--labels", "a,b", LABELQ_MODELS_DIR=str(tmp_path / "models"), LABELQ_MODEL="test--corrupt"
    )
    assert_exit(done, 4)
    assert done.stderr.startswith("error: model:") and len(done.stderr.strip().splitlines()) == 1


def test_a_model_that_is_not_installed_is_4_for_classify_as_for_a_worker() -> None:
    """Found by an outside check: `classify` with LABELQ_MODEL naming a model not installed exited 1 (an
    unknown_model error result, no what-to-do) while a worker refused the same setting with 4."""
    done = labelq("classify", "hello", "--labels", "a,b", LABELQ_MODEL="no-such-model")
    assert_exit(done, 4)
    assert "model 'no-such-model' is not installed" in done.stderr and "LABELQ_MODEL" in done.stderr
    assert_exit(labelq("classify", "hello", "--labels", "a,b", "--model", "nobody/missing", "--json"), 4)

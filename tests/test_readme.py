"""The README's walkthrough, run as written: its Python blocks and its shell commands, against a test Redis and a
real worker (the deterministic fake model: what is under test is that each command works as shown)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import WorkerFactory

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SHOWN_URL = "redis://127.0.0.1:6379/0"
NOT_RUN_HERE = ("python3 -m venv", "export ", "labelq worker &", "labelq demo")  # the Quickstart, and the worker
# the fixture starts (as `labelq worker` does); the Quickstart's own two commands are CI's and test_streaming's


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def shell_commands() -> list[str]:
    commands = []
    for block in blocks("bash"):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command and not command.startswith(("#", *NOT_RUN_HERE)):
                commands.append(command.replace(" --follow", ""))  # the same command, without waiting forever
    inline = re.findall(r"`(labelq classify [^`]+)`", README)
    return commands + inline


def test_the_readme_shows_what_this_test_runs() -> None:
    assert len(blocks("python")) >= 2 and len(shell_commands()) >= 5


def test_every_python_block_and_command_in_the_readme_runs(start_worker: WorkerFactory, redis_url: str) -> None:
    start_worker(enable_fake_model=True, model="fake")
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url, "LABELQ_ENABLE_FAKE_MODEL": "true"}
    for block in blocks("python"):
        code = block.replace(SHOWN_URL, redis_url)
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{code}\n{result.stdout}\n{result.stderr}"
    labelq = str(Path(sys.executable).with_name("labelq"))
    for command in shell_commands():
        args = shlex.split(command)
        if args[0] == "labelq":
            args[0] = labelq
        result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"

""".ci/run's Prometheus step: apt-get only when promtool is missing and apt is usable, never fatal. Run with a
PATH of fakes (apt-get records its arguments), so nothing is installed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.deploy.promql import ROOT

STEP = re.search(r"^if ! command -v promtool .*?^fi  # prometheus$", (ROOT / ".ci" / "run").read_text(), re.S | re.M)


def fake(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def run_step(bin_dir: Path, *, uid: int = 0) -> subprocess.CompletedProcess[str]:
    assert STEP, ".ci/run lost its prometheus step"
    fake(bin_dir, "id", f"echo {uid}")
    fake(bin_dir, "env", '/usr/bin/env "$@"')
    return subprocess.run(
        ["/bin/bash", "-c", "set -euo pipefail\n" + STEP.group(0)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_it_installs_prometheus_when_promtool_is_missing(tmp_path: Path) -> None:
    fake(tmp_path, "apt-get", f'echo "$@" >> {tmp_path}/calls')
    done = run_step(tmp_path)
    assert done.returncode == 0 and not done.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["update -qq", "install -y -qq prometheus"]


def test_it_does_nothing_when_promtool_is_there(tmp_path: Path) -> None:
    fake(tmp_path, "apt-get", f'echo "$@" >> {tmp_path}/calls')
    fake(tmp_path, "promtool", "exit 0")
    done = run_step(tmp_path)
    assert done.returncode == 0 and not done.stderr
    assert not (tmp_path / "calls").exists()


def test_it_does_nothing_without_apt_get(tmp_path: Path) -> None:
    done = run_step(tmp_path)
    assert done.returncode == 0 and not done.stderr


def test_a_failing_apt_get_or_no_root_is_one_line_and_not_fatal(tmp_path: Path) -> None:
    fake(tmp_path, "apt-get", "echo 'E: Unable to locate package prometheus' >&2; exit 100")
    failed = run_step(tmp_path)
    assert failed.returncode == 0
    assert failed.stderr == ".ci/run: apt-get could not install prometheus; tests/deploy's Prometheus tests skip\n"
    not_root = run_step(tmp_path, uid=1000)  # and no sudo on PATH
    assert not_root.returncode == 0
    assert not_root.stderr == ".ci/run: apt-get needs root (or sudo -n); tests/deploy's Prometheus tests skip\n"

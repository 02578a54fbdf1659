"""The Prometheus binaries (Debian's `prometheus` package: `apt-get install -y prometheus`; .ci/run installs it
where apt is usable): a test that needs one skips with a one-line reason where it is not on PATH."""

from __future__ import annotations

import shutil

import pytest


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"no `{name}` on PATH: apt-get install -y prometheus")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return binary("promtool")


@pytest.fixture(scope="session")
def prometheus() -> str:
    return binary("prometheus")

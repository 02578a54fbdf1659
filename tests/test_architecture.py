"""The architecture's contracts (pyproject.toml, `[tool.importlinter]`): the landed tree keeps every one, and a
change that breaks one fails with that contract's name. Each case copies the packages, makes the one-line change
a careless commit would make, and runs `lint-imports` on the copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("labelq", "producer", "schemas", "worker")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_tree(target: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def test_the_landed_tree_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# (file to change, line added at its top, words of the contract that must be reported broken)
BREAKS = [
    ("worker/engine/scoring.py", "import redis", "the engine works with no Redis"),
    ("worker/engine/results.py", "from worker.stream import publishing", "the engine works with no Redis"),
    ("worker/stream/batcher.py", "import worker.process.runtime", "worker layers"),
    ("worker/delivery/egress.py", "import worker.engine.scoring", "worker layers"),
    ("worker/settings.py", "import worker.engine.models", "the floor"),
    ("schemas/limits.py", "import worker.settings", "producer -> schemas <- worker"),
    ("producer/client.py", "import worker.settings", "producer -> schemas <- worker"),
    ("worker/engine/models.py", "import onnxruntime", "only worker.engine.onnx imports onnxruntime"),
    ("worker/stream/pipeline.py", "import celery", "Celery stays in the process layer"),
    ("worker/engine/batching.py", "import worker.engine.engine", "no import cycles"),
    ("worker/engine/heads.py", "import sklearn", "serving never needs scikit-learn"),
]


@pytest.mark.parametrize(("path", "line", "contract"), BREAKS, ids=[f"{p}: {line}" for p, line, _ in BREAKS])
def test_a_broken_contract_fails_with_its_name(tmp_path: Path, path: str, line: str, contract: str) -> None:
    root = _copy_tree(tmp_path)
    source = root / path
    source.write_text(f"{line}  # noqa\n{source.read_text()}")
    result = _lint(root)
    assert result.returncode != 0
    assert any(contract in name for name in _broken(result.stdout)), result.stdout


def _broken(report: str) -> list[str]:
    """The names of the contracts `lint-imports` reports broken (its summary wraps names over lines)."""
    summary = " ".join(report.split()).split("Contracts: ")[0].split("-------------------------------------")[-1]
    verdicts = re.findall(r"\s*(.+?) (KEPT|BROKEN)(?: \(\d+ ignored imports?\))?", summary)
    return [name for name, verdict in verdicts if verdict == "BROKEN"]

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from worker.engine import Engine
from worker.settings import Settings, load_settings

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = FIXTURES / "models"
NLI_VARIANTS = ("nli-2class", "nli-2class-static", "nli-3class")


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "nli_golden.json").read_text())
    return data


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models directory holding copies of the test NLI models under Hub-style names."""
    target = tmp_path / "models"
    for variant in NLI_VARIANTS:
        shutil.copytree(MODELS / variant, target / f"test--{variant}")
    return target


@pytest.fixture
def settings(models_dir: Path) -> Settings:
    return load_settings(models_dir=models_dir, prefer_quantized=False)


@pytest.fixture(scope="session")
def minilm_engine() -> Engine:
    """The embedded default model, loaded once for the session."""
    return Engine(load_settings())

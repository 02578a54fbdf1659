"""Documentation that is generated from code stays in step with it."""

from __future__ import annotations

import re
from pathlib import Path

from schemas import ErrorCode
from worker.settings import settings_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_configuration_table_matches_settings() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    block = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", page, re.S)
    assert block, "docs/configuration.md lost its settings markers"
    assert block.group(1) == settings_table(), "run: python -m worker.settings and paste into docs/configuration.md"


def test_the_error_code_table_names_every_code() -> None:
    page = (ROOT / "docs" / "protocol.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `") and "|" in line[2:]]
    listed = {code for row in rows for code in re.findall(r"`([a-z0-9_]+)`", row.split("|")[1])}
    assert {code.value for code in ErrorCode} <= listed, {code.value for code in ErrorCode} - listed


def test_the_readme_stays_a_short_read_and_links_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for link in re.findall(r"\]\((docs/[^)#]+)\)", readme):
        assert (ROOT / link).is_file(), link


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^python3 -m venv .*$", readme, re.M)
    assert len(commands) >= 2, "README opens with the two commands"
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()

"""The documents people rely on stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from shared.contract import ErrorCode
from shared.tools.cli.readme import END, START, render_settings_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_configuration_table_matches_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == render_settings_table(), "run: fleet config --update-readme README.md"


def test_every_error_code_is_in_the_contract_table() -> None:
    contract = (ROOT / "docs" / "contract.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", contract, flags=re.M))
    missing = {code.value for code in ErrorCode} - documented
    assert not missing, f"add these codes to docs/contract.md: {sorted(missing)}"


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```\n(.+?)\n```", section, flags=re.S)
    assert len(commands) == 2
    assert commands[0].endswith("fleet up")
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()

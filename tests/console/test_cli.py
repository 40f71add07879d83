"""`fleet ui` refuses to serve off loopback without a token."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from shared.tools.cli.main import cli


def test_fleet_ui_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["ui", "--host", "0.0.0.0", "--home", str(tmp_path)], env={"FLEET_UI_TOKEN": None}
    )
    assert result.exit_code == 2
    assert "FLEET_UI_TOKEN" in result.output

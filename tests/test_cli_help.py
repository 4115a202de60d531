"""Every `sam4dcap` subcommand answers --help (their names and flags are a stable interface)."""

import subprocess
import sys

import pytest

from sam4dcap_perception.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"sam4dcap {command}" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run(["sam4dcap", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


def test_unknown_subcommand_fails_with_usage():
    out = subprocess.run([sys.executable, "-m", "sam4dcap_perception.cli", "no-such-command"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr

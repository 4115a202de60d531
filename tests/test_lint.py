"""Lint (ruff, ruff.toml) and type check of the core packages (mypy, mypy.ini) are clean.

`make lint` runs the same two commands by hand.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name):
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make setup` (requirements.txt pins it)")
    return str(path)


def test_ruff_is_clean():
    out = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"ruff check found problems:\n{out.stdout}{out.stderr}"


def test_mypy_core_is_clean():
    out = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"mypy found problems:\n{out.stdout}{out.stderr}"
    assert "no issues found" in out.stdout, out.stdout

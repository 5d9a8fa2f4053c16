"""The repository passes ``ruff check`` under its own configuration (``[tool.ruff]`` in pyproject.toml), so
"ruff check on the files you touch" means something: any finding fails here, with ruff's report."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PINNED = "0.17"  # the test extra's ruff>=0.17,<0.18: rule sets change between minors


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_repository_passes_ruff_check():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed: pip install -e '.[test]' (the test extra pins it)")
    done = ruff("check", "--output-format", "concise", ".")
    version = ruff("--version").stdout.strip()
    other_minor = "" if version.startswith(f"ruff {PINNED}.") else (
        f" This is {version}, not the pinned {PINNED}.x: its rules may differ from the ones the code was fixed for.")
    assert done.returncode == 0, (
        f"ruff check found problems: fix them, or where a rule cannot hold say why in [tool.ruff] of "
        f"pyproject.toml (a per-file ignore) or in a `# noqa: CODE  (reason)` comment.{other_minor}\n"
        f"{done.stdout}{done.stderr}")

"""The import contracts in pyproject.toml ([tool.importlinter]): every layer imports only the layers below it
(cli -> demo -> sweep -> train / report -> stats / checkpoints -> rundir -> config -> errors), and no two
modules import each other, directly or round a loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """import-linter's `lint-imports` on the noisefloor package found first on the path from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", script, "--no-cache", str(REPO / "pyproject.toml")],
                          capture_output=True, text=True, env=env, cwd=tree)


def test_the_layers_import_downward_only_and_without_circles():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_an_upward_import_or_a_circle_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "noisefloor", tmp_path / "noisefloor", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "noisefloor" / "rundir.py", "a") as upward:
        upward.write("\nfrom noisefloor.report import live\n")
    with open(tmp_path / "noisefloor" / "train" / "model.py", "a") as circle:
        circle.write("\nfrom noisefloor.train import trainer\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "noisefloor.rundir is not allowed to import noisefloor.report" in done.stdout
    assert "No cycles are allowed in noisefloor.train" in done.stdout

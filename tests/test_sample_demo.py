"""`make demo` runs to completion: the demo script, end to end, with a small number of files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.e2e
def test_demo_runs_to_completion(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "sample_project" / "demo.py"),
            "--count",
            "40",
            "--large",
            "1",
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Created 40 files" in result.stdout
    assert "Demo finished" in result.stdout
    assert "the server is stopped" in result.stdout
    files = [p for p in (workdir / "media").rglob("*") if p.is_file()]
    assert len(files) == 40
    assert (workdir / "db.sqlite3").is_file()

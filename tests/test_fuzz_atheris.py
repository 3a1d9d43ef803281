"""The fuzz targets under atheris (coverage-guided), a bounded number of inputs each, in
a child process per target: what `make fuzz` runs for a minute per target. Skipped where
atheris does not install (the hypothesis tests cover the same targets)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from appliance.testing import REPO
from tests.fuzz.run import NAMES, have_atheris

RUNS = {"importer": 150, "http": 600, "http_ext": 600}  # the others: 1,500 inputs each
pytestmark = pytest.mark.skipif(not have_atheris(), reason="atheris is not installed")


@pytest.mark.parametrize("target", NAMES)
def test_atheris_finds_no_crash(target: str, tmp_path: object) -> None:
    runs = RUNS.get(target, 1500)
    command = [sys.executable, "-m", "tests.fuzz.run", "--json", "--runs", str(runs)]
    command += ["--out", str(tmp_path), target]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    report = json.loads(result.stdout.splitlines()[-1])
    log = (tmp_path / target / "last.log").read_text(errors="replace")  # type: ignore[operator]
    assert report["crashes"] == 0, log[-3000:]
    assert result.returncode == 0, result.stderr
    assert report["inputs"] == runs  # libFuzzer's own count: every input was tried
    assert "cov:" in log and "no interesting inputs" not in log  # the code was instrumented

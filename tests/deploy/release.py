"""The two releases of the upgrade test: the previous commit, as its own playbook deployed
it, and the working tree, as a wheelhouse (what `make wheelhouse` builds)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
# what the previous commit needs to deploy itself: its source, pins, roles and playbook
PREVIOUS_ITEMS = ("pyproject.toml", "README.md", "constraints.txt", "appliance", "roles", "ansible")
WHEEL_ITEMS = ("pyproject.toml", "README.md", "appliance")  # what makes the wheel
SOURCE_DATE_EPOCH = "315532800"  # as the role and the Makefile build wheels


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, timeout=60)


def previous_commit(dest: Path) -> tuple[str, Path]:
    """(its hash, a folder with its tree): `git archive` of PREVIOUS_ITEMS into `dest`.

    The previous commit is HEAD~1; when that one's wheel would be HEAD's (a commit of docs
    or tests alone), the parent of the newest commit that changed the wheel's source, so
    that there is always new code to upgrade to."""
    sha = _git("rev-parse", "--verify", "HEAD~1^{commit}")
    assert sha.returncode == 0, f"no HEAD~1 to upgrade from (a shallow clone?): {sha.stderr}"
    commit = sha.stdout.strip()
    if _git("diff", "--quiet", commit, "HEAD", "--", *WHEEL_ITEMS).returncode == 0:
        changed = _git("rev-list", "-1", "HEAD", "--", *WHEEL_ITEMS).stdout.strip()
        parent = _git("rev-parse", "--verify", f"{changed}~1^{{commit}}")
        assert parent.returncode == 0, f"no commit before {changed}: {parent.stderr}"
        commit = parent.stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, *PREVIOUS_ITEMS],
        capture_output=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    dest.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return commit, dest


def declared_version(source: Path) -> str:
    """The version pyproject.toml gives (what `ucupdates --version` says once installed)."""
    return str(tomllib.loads((source / "pyproject.toml").read_text())["project"]["version"])


def wheelhouse(source: Path, dest: Path) -> Path:
    """`make wheelhouse` for `source`: its wheel and a wheel of each dependency at the
    versions in the working tree's constraints.txt, in `dest`."""
    done = subprocess.run(
        [
            str(VENV_PYTHON),
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "-c",
            str(REPO / "constraints.txt"),
            "--wheel-dir",
            str(dest),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dest

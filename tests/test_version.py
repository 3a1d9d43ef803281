"""The version: pyproject.toml's, read from the installed metadata in one place
(appliance/version.py), shown by `ucupdates --version` and named in CHANGELOG.md.
/health and the Control Panel show it too (test_health.py, test_admin_web.py)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest

from appliance import __version__, version
from appliance.cli.main import build_parser
from appliance.testing import REPO


def test_the_version_is_the_installed_package_version_from_pyproject() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    # a mismatch here means the virtual environment holds an older install: make setup
    assert __version__ == metadata.version("ucupdates") == declared


def test_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"ucupdates {__version__}\n"


def test_without_installed_metadata_the_version_says_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(version, "DISTRIBUTION", "ucupdates-never-installed")
    assert version.installed_version() == version.UNKNOWN == "0+unknown"


def test_the_changelog_has_a_section_for_this_version() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", text, re.M)
    assert released and released[0] == __version__, released  # the newest release first
    assert re.search(r"^## \[Unreleased\]$", text, re.M)

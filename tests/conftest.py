"""Shared fixtures: a data folder, a store on it, the sample package, the CLI."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.catalogue.sample import make_sample_package
from appliance.config import Config, load_config
from appliance.store.database import Store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(None, tmp_path / "data")


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    s = Store.open(config.db_path)
    yield s
    s.close()


@pytest.fixture(scope="session")
def sample_cab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "UCUpdates.cab"
    make_sample_package(path)
    return path


def run_cli(
    data_dir: Path, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m appliance --data-dir DATA ARGS...` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        cwd=REPO,
    )


def tree(root: Path) -> dict[str, str]:
    """Every file below `root` with its SHA-256: what an admin would find on disk."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def state(config: Config) -> tuple[object, ...]:
    """The catalogue as a user sees it: rules, files, events, store tree, staging."""
    s = Store.open(config.db_path)
    try:
        return (
            s.rules(),
            s.stored_files(),
            s.test_devices(),
            len(s.events(10_000)),
            tree(config.store_dir),
            sorted(p.name for p in config.staging_dir.iterdir())
            if config.staging_dir.exists()
            else [],
        )
    finally:
        s.close()

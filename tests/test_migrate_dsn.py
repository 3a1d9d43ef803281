"""Where `migrate-store` takes the PostgreSQL connection string from (never an argument)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from appliance.cli.exits import EX_CONFIG, EX_USAGE, Failure
from appliance.cli.migrate import _connection_string
from appliance.config import Config
from appliance.testing.stores import config_from

SECRET = "host=db.example.org dbname=ucupdates user=ucupdates password=s3cret"
PRIMARY = "host=primary.example.org dbname=ucupdates password=other"


def _args(dsn_file: Path | None = None, dsn_env: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(dsn_file=dsn_file, dsn_env=dsn_env)


def test_a_file_or_a_variable_names_the_target(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pool.dsn"
    path.write_text(f"{SECRET}\n")
    assert _connection_string(_args(dsn_file=path), config) == SECRET
    monkeypatch.setenv("POOL_DSN", SECRET)
    assert _connection_string(_args(dsn_env="POOL_DSN"), config) == SECRET


def test_the_configured_store_is_the_target_and_a_branch_nodes_is_its_primary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOL_DSN", SECRET)
    monkeypatch.setenv("PRIMARY_DSN", PRIMARY)
    pool = config_from(tmp_path, '[store]\nbackend = "postgresql"\ndsn_env = "POOL_DSN"\n')
    assert _connection_string(_args(), pool) == SECRET
    branch = config_from(
        tmp_path,
        '[store]\nbackend = "postgresql"\ndsn_env = "POOL_DSN"\nprimary_dsn_env = "PRIMARY_DSN"\n',
    )
    assert _connection_string(_args(), branch) == PRIMARY


def test_no_target_is_a_usage_error_and_an_empty_one_a_config_error(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(Failure, match="--dsn-file FILE, --dsn-env NAME") as none:
        _connection_string(_args(), config)  # the default store is SQLite
    assert none.value.status == EX_USAGE
    monkeypatch.setenv("POOL_DSN", " ")
    with pytest.raises(Failure, match="--dsn-env POOL_DSN: the connection string is empty") as e:
        _connection_string(_args(dsn_env="POOL_DSN"), config)
    assert e.value.status == EX_CONFIG
    with pytest.raises(Failure, match="--dsn-file") as missing:
        _connection_string(_args(dsn_file=tmp_path / "absent"), config)
    assert missing.value.status == EX_CONFIG

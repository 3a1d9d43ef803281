"""`[store]`: the backend and PostgreSQL's connection string (from the file, a file of its
own or the environment, never shown), and the commands that work on SQLite's file
refusing it."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.cli.exits import EX_CONFIG
from appliance.cli.main import main
from appliance.config import ConfigError, StoreBackend, StoreSettings, load_config

SECRET = "host=db.example.com dbname=ucupdates user=ucupdates password=hunter2-4711"


def config_file(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "ucupdates.toml"
    path.write_text(f'data_dir = "var"\n[store]\n{store}\n', encoding="utf-8")
    return path


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, ""))
    assert config.store == StoreSettings()
    assert config.store.backend is StoreBackend.SQLITE


def test_the_connection_string_comes_from_exactly_one_place(tmp_path: Path) -> None:
    secret_file = tmp_path / "dsn"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    from_file = load_config(
        config_file(tmp_path, f'backend = "postgresql"\ndsn_file = "{secret_file}"\npool_size = 8')
    ).store
    assert from_file.backend is StoreBackend.POSTGRESQL and from_file.pool_size == 8
    assert from_file.connection_string({}) == SECRET
    assert StoreSettings(dsn_env="UCU_DSN").connection_string({"UCU_DSN": SECRET}) == SECRET
    assert StoreSettings(dsn=SECRET).connection_string({}) == SECRET
    assert SECRET not in repr(StoreSettings(dsn=SECRET))
    with pytest.raises(ConfigError, match="exactly one") as both:
        StoreSettings(dsn=SECRET, dsn_env="UCU_DSN").connection_string({"UCU_DSN": SECRET})
    assert "hunter2" not in str(both.value)
    with pytest.raises(ConfigError, match="empty"):
        StoreSettings(dsn_env="UCU_DSN").connection_string({})


def test_a_pool_size_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="store.pool_size"):
        load_config(config_file(tmp_path, "pool_size = 0"))


@pytest.mark.parametrize("command", [["backup", "out.tar"], ["restore-backup", "x"]])
def test_sqlite_only_commands_refuse_postgresql_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    path = config_file(tmp_path, f'backend = "postgresql"\ndsn = "{SECRET}"')
    assert main(["--config", str(path), *command]) == EX_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"ucupdates: {command[0]} works on the SQLite database only")
    assert "pg_dump" in err and "docs/pool.md" in err
    assert "hunter2" not in err
    assert not (tmp_path / "var").exists()  # nothing opened or made


def test_a_command_without_a_connection_string_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, 'backend = "postgresql"\ndsn_env = "UCU_TEST_NO_SUCH_DSN"')
    assert main(["--config", str(path), "rules"]) == EX_CONFIG
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("ucupdates: store.dsn_env: the connection string is empty")

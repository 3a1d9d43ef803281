"""A branch node's `[store]` settings: the primary's connection string (from the file, a
file of its own or the environment, never shown), refused without PostgreSQL, and the
spool's place."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, StoreBackend, StoreSettings, load_config

SECRET = "host=primary.example.com dbname=ucupdates user=ucupdates password=hunter2-4711"


def config_file(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "ucupdates.toml"
    path.write_text(f'data_dir = "var"\n[store]\n{store}\n', encoding="utf-8")
    return path


def test_a_primary_makes_a_branch_node_with_its_spool_in_the_data_folder(tmp_path: Path) -> None:
    secret = tmp_path / "primary"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    config = load_config(
        config_file(
            tmp_path,
            f'backend = "postgresql"\ndsn = "host=127.0.0.1"\nprimary_dsn_file = "{secret}"',
        )
    )
    assert config.store.branch
    assert config.store.primary_connection_string({}) == SECRET
    assert config.store.spool_path(config.data_dir) == config.data_dir / "spool.db"
    assert SECRET not in repr(config.store)
    plain = StoreSettings(backend=StoreBackend.POSTGRESQL, dsn="x")
    assert not plain.branch and plain.primary_connection_string({}) is None
    from_env = StoreSettings(StoreBackend.POSTGRESQL, dsn="x", primary_dsn_env="UCU_PRIMARY")
    assert from_env.primary_connection_string({"UCU_PRIMARY": SECRET}) == SECRET
    with pytest.raises(ConfigError, match="store.primary_dsn_env: the connection string is empty"):
        from_env.primary_connection_string({})


def test_the_spool_may_be_placed_and_bounded(tmp_path: Path) -> None:
    config = load_config(
        config_file(
            tmp_path,
            'backend = "postgresql"\ndsn = "x"\nprimary_dsn = "y"\n'
            'spool = "/srv/spool.db"\nspool_limit = 1000',
        )
    )
    assert config.store.spool_path(config.data_dir) == Path("/srv/spool.db")
    assert config.store.spool_limit == 1000
    with pytest.raises(ConfigError, match="store.spool_limit"):
        load_config(config_file(tmp_path, "spool_limit = 5"))


@pytest.mark.parametrize(
    ("store", "message"),
    [
        (f'primary_dsn = "{SECRET}"', 'needs store.backend = "postgresql"'),
        (
            f'backend = "postgresql"\ndsn = "x"\nprimary_dsn = "{SECRET}"\nprimary_dsn_env = "E"',
            r"exactly one of store.primary_dsn, store.primary_dsn_file and "
            r"store.primary_dsn_env \(set: primary_dsn, primary_dsn_env\)",
        ),
    ],
)
def test_a_primary_without_postgresql_or_given_twice_is_refused_in_one_line(
    tmp_path: Path, store: str, message: str
) -> None:
    path = config_file(tmp_path, store)
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(path)
    text = str(refused.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert "hunter2" not in text

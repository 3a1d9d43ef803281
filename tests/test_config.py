"""The typed configuration: embedded defaults, a full file, and one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from appliance.config import Address, Config, ConfigError, load_config

FULL = """\
data_dir = "/srv/ucupdates"
domains = ["Contoso.com.", "fabrikam.example"]

[listeners]
dns = "0.0.0.0:53"
internal_https = "10.0.0.5:443"
internal_http = "10.0.0.5:80"
external_https = "[2001:db8::5]:4443"
admin = "127.0.0.1:9000"

[import]
max_entries = 50
max_total_bytes = 1000000
max_ratio = 10
max_xml_bytes = 4096
"""


def write(tmp_path: Path, text: str, name: str = "ucupdates.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    message = str(excinfo.value)
    assert "\n" not in message, "a config error is one line"
    assert message.startswith(f"{path}: "), "a config error names the file"
    return message


# -- defaults and a valid file ----------------------------------------------------------


def test_embedded_defaults_apply_without_a_file() -> None:
    config = load_config(None)
    assert config.data_dir == Path("var")
    assert config.domains == ("example.com",)
    listeners = config.listeners
    assert listeners.dns == Address("127.0.0.1", 5353)
    assert listeners.internal_https == Address("127.0.0.1", 8443)
    assert listeners.external_https == Address("127.0.0.1", 8444)
    assert listeners.admin == Address("127.0.0.1", 9443)
    assert listeners.internal_http == Address("127.0.0.1", 8080)  # plain HTTP, on as Lync's
    assert config.source is None
    assert config == Config()


def test_default_data_paths_sit_in_the_data_folder() -> None:
    config = load_config(None)
    assert config.db_path == Path("var/ucupdates.sqlite3")
    assert config.store_dir == Path("var/DeviceUpdateStore")
    assert config.staging_dir == Path("var/staging")
    assert config.lock_path == Path("var/import.lock")


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = load_config(path)
    assert config.listeners == Config().listeners
    assert config.domains == ("example.com",)
    assert config.imports == Config().imports
    assert config.data_dir == tmp_path / "var"
    assert config.source == path


def test_full_valid_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path)
    assert config.data_dir == Path("/srv/ucupdates")
    assert config.domains == ("contoso.com", "fabrikam.example")
    assert config.listeners.dns == Address("0.0.0.0", 53)
    assert config.listeners.internal_https == Address("10.0.0.5", 443)
    assert config.listeners.internal_http == Address("10.0.0.5", 80)
    assert config.listeners.external_https == Address("2001:db8::5", 4443)
    assert config.listeners.admin == Address("127.0.0.1", 9000)
    assert config.imports.max_entries == 50
    assert config.imports.max_total_bytes == 1_000_000
    assert config.imports.max_ratio == 10.0
    assert isinstance(config.imports.max_ratio, float)
    assert config.imports.max_xml_bytes == 4096
    assert config.source == path


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.data_dir = Path("/elsewhere")  # type: ignore[misc]


def test_partial_table_keeps_the_other_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[listeners]\ndns = "0.0.0.0:53"\n'))
    assert config.listeners.dns == Address("0.0.0.0", 53)
    assert config.listeners.admin == Address("127.0.0.1", 9443)
    assert config.listeners.internal_https == Address("127.0.0.1", 8443)


def test_dotted_keys_work_like_tables(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'listeners.admin = "127.0.0.1:9999"\n'))
    assert config.listeners.admin == Address("127.0.0.1", 9999)


# -- the data folder --------------------------------------------------------------------


def test_relative_data_dir_is_relative_to_the_config_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc" / "ucupdates"
    folder.mkdir(parents=True)
    path = write(folder, 'data_dir = "data/here"\n')
    config = load_config(path)
    assert config.data_dir == folder / "data" / "here"
    assert config.db_path == folder / "data" / "here" / "ucupdates.sqlite3"


def test_default_data_dir_with_a_file_is_var_beside_it(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'domains = ["example.org"]\n'))
    assert config.data_dir == tmp_path / "var"


def test_absolute_data_dir_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "absolute"
    config = load_config(write(tmp_path, f'data_dir = "{target}"\n'))
    assert config.data_dir == target


def test_data_dir_argument_overrides_the_file(tmp_path: Path) -> None:
    override = tmp_path / "override"
    config = load_config(write(tmp_path, 'data_dir = "from-file"\n'), data_dir=override)
    assert config.data_dir == override
    assert config.store_dir == override / "DeviceUpdateStore"


def test_data_dir_argument_overrides_the_defaults(tmp_path: Path) -> None:
    config = load_config(None, data_dir=tmp_path)
    assert config.data_dir == tmp_path
    assert config.listeners == Config().listeners


# -- listeners --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("127.0.0.1:53", Address("127.0.0.1", 53), id="ipv4"),
        pytest.param("[::1]:53", Address("::1", 53), id="ipv6-loopback"),
        pytest.param("[2001:db8::1]:443", Address("2001:db8::1", 443), id="ipv6"),
        pytest.param("[::]:0", Address("::", 0), id="ipv6-any-port-0"),
        pytest.param(
            "phone-updates.example.com:443",
            Address("phone-updates.example.com", 443),
            id="host-name",
        ),
        pytest.param("localhost:65535", Address("localhost", 65535), id="highest-port"),
    ],
)
def test_address_forms(tmp_path: Path, text: str, expected: Address) -> None:
    config = load_config(write(tmp_path, f'[listeners]\ndns = "{text}"\n'))
    assert config.listeners.dns == expected


@pytest.mark.parametrize(
    ("address", "text"),
    [
        pytest.param(Address("127.0.0.1", 53), "127.0.0.1:53", id="ipv4"),
        pytest.param(Address("::1", 53), "[::1]:53", id="ipv6-in-brackets"),
    ],
)
def test_address_is_shown_as_written(address: Address, text: str) -> None:
    assert str(address) == text
    assert Address.parse(text) == address


def test_empty_internal_http_turns_it_off(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[listeners]\ninternal_http = ""\n'))
    assert config.listeners.internal_http is None


def test_internal_http_can_be_turned_on(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[listeners]\ninternal_http = "0.0.0.0:80"\n'))
    assert config.listeners.internal_http == Address("0.0.0.0", 80)


def test_a_required_listener_cannot_be_turned_off(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, '[listeners]\ndns = ""\n'))
    assert "'listeners.dns'" in message


# -- errors: one line naming the file and the key ---------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "detail"),
    [
        pytest.param("colour = 1\n", "colour", "unknown key", id="unknown-top-level"),
        pytest.param("source = 'x.toml'\n", "source", "unknown key", id="internal-field"),
        pytest.param(
            "[listeners]\nsip = '1.2.3.4:5060'\n",
            "listeners.sip",
            "unknown key",
            id="unknown-nested",
        ),
        pytest.param(
            "[import]\nmax_files = 3\n", "import.max_files", "unknown key", id="unknown-in-import"
        ),
        pytest.param(
            "[imports]\nmax_entries = 3\n", "imports", "unknown key", id="python-name-not-the-key"
        ),
        pytest.param(
            "[import]\nmax_entries = '10'\n",
            "import.max_entries",
            "expected int",
            id="string-for-int",
        ),
        pytest.param(
            "[import]\nmax_entries = true\n",
            "import.max_entries",
            "expected int",
            id="bool-for-int",
        ),
        pytest.param(
            "[import]\nmax_entries = 1.5\n",
            "import.max_entries",
            "expected int",
            id="float-for-int",
        ),
        pytest.param(
            "[import]\nmax_ratio = false\n",
            "import.max_ratio",
            "expected a number",
            id="bool-for-float",
        ),
        pytest.param("domains = [1]\n", "domains", "expected str", id="int-for-string"),
        pytest.param(
            "domains = 'example.org'\n", "domains", "expected a list", id="string-for-list"
        ),
        pytest.param("data_dir = 5\n", "data_dir", "expected a path", id="int-for-path"),
        pytest.param("data_dir = ''\n", "data_dir", "expected a path", id="empty-path"),
        pytest.param("listeners = 5\n", "listeners", "expected a table", id="int-for-table"),
        pytest.param("[listeners]\ndns = 53\n", "listeners.dns", "host:port", id="int-for-address"),
        pytest.param(
            "[listeners]\ndns = '127.0.0.1'\n",
            "listeners.dns",
            "host:port",
            id="address-without-port",
        ),
        pytest.param(
            "[listeners]\ndns = '127.0.0.1:70000'\n", "listeners.dns", "70000", id="port-70000"
        ),
        pytest.param(
            "[listeners]\nadmin = 'host:'\n",
            "listeners.admin",
            "host:port",
            id="host-colon-no-port",
        ),
        pytest.param(
            "[listeners]\nadmin = ':9443'\n", "listeners.admin", "host:port", id="port-without-host"
        ),
        pytest.param(
            "[listeners]\nadmin = '::1:53'\n",
            "listeners.admin",
            "host:port",
            id="ipv6-without-brackets",
        ),
        pytest.param(
            "[listeners]\nadmin = 'bad_host!:53'\n",
            "listeners.admin",
            "neither an IP address nor a host name",
            id="bad-host-name",
        ),
        pytest.param(
            "[listeners]\ninternal_http = 80\n",
            "listeners.internal_http",
            "host:port",
            id="int-for-optional-address",
        ),
        pytest.param(
            "domains = ['not a domain']\n",
            "domains",
            "not a DNS domain name",
            id="domain-with-space",
        ),
        pytest.param(
            "domains = ['localhost']\n", "domains", "not a DNS domain name", id="domain-without-dot"
        ),
        pytest.param(
            "domains = ['-bad.example.com']\n",
            "domains",
            "not a DNS domain name",
            id="domain-leading-dash",
        ),
        pytest.param(
            "[import]\nmax_entries = 0\n", "import.max_entries", "greater than 0", id="zero-limit"
        ),
        pytest.param(
            "[import]\nmax_total_bytes = -1\n",
            "import.max_total_bytes",
            "greater than 0",
            id="negative-limit",
        ),
        pytest.param(
            "[import]\nmax_ratio = 0.0\n", "import.max_ratio", "greater than 0", id="zero-ratio"
        ),
    ],
)
def test_bad_value_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, key: str, detail: str
) -> None:
    message = config_error(write(tmp_path, text))
    assert f"'{key}'" in message
    assert detail in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "[listeners\ndns = \n"))
    assert "not valid TOML" in message
    assert "line 1" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    message = config_error(tmp_path / "nowhere.toml")
    assert "not found" in message


def test_unreadable_path_names_the_file(tmp_path: Path) -> None:
    message = config_error(tmp_path)  # a folder, not a file
    assert "cannot read" in message


def test_unknown_table_after_valid_settings_is_reported(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, FULL + "\n[extra]\nx = 1\n"))
    assert "'extra'" in message

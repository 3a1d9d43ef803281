"""Shared fixtures: a data folder, a store on it, the sample package, captured log events.

Helper functions live in `appliance.testing`; test modules import them from there.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from twisted.logger import LogEvent, globalLogPublisher

from appliance.catalogue.sample import make_sample_package
from appliance.config import Config, load_config
from appliance.store.connection import Clock
from appliance.store.database import Store
from appliance.testing import Postgres, throwaway_postgres


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


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL (appliance/testing/postgres.py), stopped and removed after the
    test. Never skipped: a server that cannot start fails the test with its log."""
    with throwaway_postgres() as server:
        yield server


STORE_TEMPLATE = "store_template"  # a database at the newest schema, copied per test
_store_databases = itertools.count()


@pytest.fixture(scope="session")
def store_postgres() -> Iterator[Postgres]:
    """One throwaway PostgreSQL for the session's store tests, with STORE_TEMPLATE at the
    newest schema: each test gets a fresh copy (CREATE DATABASE ... TEMPLATE)."""
    with throwaway_postgres() as server:
        Store.open_postgresql(server.create_database(STORE_TEMPLATE)).close()
        yield server


@pytest.fixture
def new_postgres_database(store_postgres: Postgres) -> Callable[[], str]:
    """Makes a fresh database at the newest schema on the session's server and returns its
    connection string (each call a new one: several nodes open the same string)."""

    def make() -> str:
        name = f"store_{next(_store_databases)}"
        return store_postgres.create_database(name, template=STORE_TEMPLATE)

    return make


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def open_test_store(request: pytest.FixtureRequest) -> Iterator[Callable[[Clock], Store]]:
    """Opens a new empty store on each backend in turn (SQLite in memory; PostgreSQL: a
    fresh database of the session's server, in the slow tier); closed after the test."""
    server = request.getfixturevalue("store_postgres") if request.param == "postgresql" else None
    opened: list[Store] = []

    def open_store(clock: Clock) -> Store:
        if server is None:
            store = Store.open(":memory:", clock=clock)
        else:
            name = f"store_{next(_store_databases)}"
            dsn = server.create_database(name, template=STORE_TEMPLATE)
            store = Store.open_postgresql(dsn, clock=clock)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    """Every event logged while the test runs."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


# -- test tiers ---------------------------------------------------------------------------
# `make check` runs the fast tier (`-m "not slow"`): pure logic, codecs, the store and the
# web resources in process. The slow tier starts processes and real peers (the CLI as a
# process, slapd, rsyslogd, dnsmasq, Chromium, debootstrap, a serving appliance) or spends
# seconds on purpose (faults, memory, lockout timing). `make test` runs both.
SLOW_FILES = {
    "test_bad_input.py",  # the catalogue of hostile input, 80 cases with before/after state
    "test_fuzz_codecs.py",  # hypothesis over the codecs (make fuzz runs them longer)
    "test_fuzz_http.py",  # hypothesis over the admission guard
    "test_fuzz_packages.py",  # hypothesis over the importer
    "test_admin_api.py",  # a Control Panel process over TLS (test_admin_web.py: in process)
    "test_admin_browser.py",  # Chromium
    "test_admin_rollouts_browser.py",  # Chromium: the rollout pages
    "test_admin_browser_drift.py",  # Chromium: the Compliance page
    "test_admin_remote.py",  # a serving appliance driven by the CLI
    "test_cli.py",  # the CLI as a process
    "test_faults_serve.py",  # serve under umask 022, downloads reset mid-way (/proc)
    "test_deploy.py",  # ansible-lint, ansible-playbook, debootstrap
    "test_deploy_admins.py",  # ansible-playbook twice, the CLI as a process
    "test_dns_live.py",  # dig and kdig against a serving appliance
    "test_fuzz_atheris.py",  # atheris in a child process per target
    "test_import_faults.py",  # hostile packages and kill -9 through the CLI
    "test_ldap.py",  # slapd
    "test_ntlm_serve.py",  # a serving appliance with curl --ntlm, requests-ntlm, pyspnego
    "test_ntlm_winbind.py",  # a Samba AD DC in a network namespace, ntlm_auth, curl --ntlm
    "test_serve.py",  # a serving appliance with curl and openssl
    "test_downloads_serve.py",  # a serving appliance: curl, stalled and dropped sockets
    "test_plain_http_serve.py",  # a serving appliance with curl over plain HTTP
    "test_e2e_zones.py",  # network namespaces, a serving appliance, phone-sim in each zone
    "test_tls.py",  # openssl s_client against each TLS profile
    "test_users_cli.py",  # the CLI as a process
    "test_backup_serve.py",  # backup under a serving appliance's load, restore; a tmpfs
    "test_metrics_live.py",  # /metrics of a serving appliance: curl, promtool, a Prometheus server
    "test_pg_schema.py",  # every schema version on a throwaway PostgreSQL and on SQLite
    "test_pg_replication.py",  # a PostgreSQL primary and its streaming hot standby
    "test_branch_pg.py",  # a branch node on a PostgreSQL primary and its hot standby
    "test_admin_pool.py",  # two Control Panel processes on one throwaway PostgreSQL
    "test_admin_pool_browser.py",  # Chromium: the Pool page of two nodes on PostgreSQL
    "test_pool_blobs.py",  # blobs and a second node's cache on a throwaway PostgreSQL
}
SLOW_TESTS = {
    "test_opening_the_database_again_keeps_the_locks_of_open_connections",  # 2 processes
    "test_a_disk_that_fills_during_the_import_fails_cleanly",
    "test_a_log_upload_on_a_full_disk_is_refused_with_507_and_leaves_nothing",  # mount
    "test_a_second_import_waits_for_none_and_says_why",
    "test_a_removed_rule_comes_back_on_reimport_without_rewriting_files",
    "test_not_enough_free_space_is_refused_before_writing",
    "test_a_newer_package_refreshes_pending_and_keeps_approved",
    "test_memory_stays_flat_while_extracting_a_large_cab",
    "test_rsyslogd_receives_events_over_udp",
    "test_rsyslogd_receives_events_over_tcp",
    "test_check_command_exits_2_naming_what_failed",
    "test_check_command_exits_1_with_a_warning_of_old_tanjay_phones",
    "test_check_command_passes_on_a_healthy_appliance",
    "test_health_is_200_when_the_process_is_well",
    "test_health_is_503_with_what_failed_after_its_cache_expires",
    "test_health_reports_the_certificate_and_the_service_state",
    "test_health_for_a_stranger_is_only_the_status",
    "test_https_check_completes_a_handshake_with_the_certificate_in_use",
    "test_dnsmasq_with_the_snippet_answers_with_our_bytes",
    "test_local_directory_spends_as_long_on_unknown_users",
    "test_authenticator_over_local_users_in_a_real_thread_pool",
    "test_local_directory_checks_store_users",
    "test_accepted_handshakes",
    "test_refused_handshakes",
    "test_dns_check_gives_up_after_its_timeout",
    "test_slowloris_on_https_leaves_every_real_check_answered",  # bench/slowloris.py, ~75 s
    "test_soak_for_a_minute",  # bench/soak.py --seconds 60
}
SLOW_PREFIXES = ("test_live_",)  # real sockets towards a running responder
# Slow tests that load the machine on purpose or judge time: `make test` runs them one at a
# time, before the rest of the slow tier runs on several workers.
ALONE_TESTS = {
    "test_slowloris_on_https_leaves_every_real_check_answered",
    "test_slowloris_on_dns_over_tcp_does_not_slow_real_queries",
    "test_soak_for_a_minute",
    "test_local_directory_spends_as_long_on_unknown_users",
    "test_memory_stays_flat_while_extracting_a_large_cab",
    "test_a_refused_request_streaming_an_endless_body_is_cut_off",  # cut off within 3 s
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", item.name)
        if item.path.name in SLOW_FILES or name in SLOW_TESTS or name.startswith(SLOW_PREFIXES):
            item.add_marker(pytest.mark.slow)
        if name in ALONE_TESTS:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.alone)

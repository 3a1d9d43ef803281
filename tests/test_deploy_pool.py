"""Pool mode's deployment: ansible/pool.yml and the ucupdates_postgresql role against real
PostgreSQL servers, and the appliance role's [store] files read by a real Store.

No VM and no systemd: Debian's PostgreSQL is started by the test (appliance.testing.postgres)
and ansible-playbook runs the playbook against this machine (connection local), one host at
a time, with the role's Debian paths (configuration folder, data folder, socket) pointed at
the test's folders by extra variables, as test_deploy_admins.py does for the appliance
role. ucupdates_postgresql_manage_service is false (the test starts and restarts the
servers, with the files the role rendered); everything else runs as on a real host: the
primary's database, roles and slot made by the community.postgresql modules, the replica
made by the role's pg_basebackup -R through its slot over TLS (sslmode=verify-full), the
streaming check of pool.yml, and a second run of both that changes nothing. The primary's
first run is preceded by one in check mode, which renders nothing.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import psycopg
import pytest
from deploy import playbook

from appliance.config import load_config
from appliance.store import open_configured
from appliance.testing.postgres import Postgres, throwaway_postgres
from appliance.testing.processes import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
POOL = REPO / "ansible" / "pool.yml"
APPLIANCE_ROLE = REPO / "roles" / "ucupdates_appliance"
RUN_SECONDS = 240
REPLICA = "pgb1"  # its slot and application_name


def _folder_of(user: str | None) -> Path:
    """A new folder outside pytest's root-only tree, owned by the server's user."""
    folder = Path(tempfile.mkdtemp(prefix="ucupdates-pool-"))
    if user is not None:
        shutil.chown(folder, user, user)
    return folder


def _certificates(folder: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1 (what the replica and the appliance
    connect to, verify-full checking the address against the certificate)."""

    def openssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    ca_name = ("-subj", "/CN=ucupdates pool test CA", "-days", "2")
    openssl("req", "-x509", *ec, *ca_name, "-keyout", str(ca_key), "-out", str(ca))
    openssl("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    extensions = folder / "san.cnf"
    extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    signing = ("-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2")
    openssl(
        "x509", "-req", "-in", str(csr), *signing, "-out", str(cert), "-extfile", str(extensions)
    )
    return {
        "ucupdates_postgresql_tls_cert_src": str(cert),
        "ucupdates_postgresql_tls_key_src": str(key),
        "ucupdates_postgresql_tls_ca_src": str(ca),
    }


def _debian_like_conf(server: Postgres, conf_dir: Path) -> None:
    """The server's postgresql.conf as Debian lays a cluster out: the data folder's settings,
    then pg_hba.conf and conf.d from the configuration folder the role rendered into (its
    fragment comes last, so it sets listen_addresses, port, TLS and replication)."""
    (server.data / "postgresql.conf").write_text(
        "shared_buffers = 16MB\nmax_connections = 40\nfsync = off\nfull_page_writes = off\n"
        "logging_collector = off\nlog_line_prefix = '%m [%p] '\n"
        f"unix_socket_directories = '{server.folder}'\n"
        f"hba_file = '{conf_dir}/pg_hba.conf'\n"
        f"include_dir = '{conf_dir}/conf.d'\n"
    )


def test_pool_playbook_makes_a_primary_and_a_replica_streaming_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the role's tasks run as the postgres user (su)")
    pwd.getpwnam("postgres")  # Debian's postgresql package makes it
    env = playbook.ansible_env(tmp_path)
    env["ANSIBLE_PIPELINING"] = "1"  # modules run as postgres read no root-only temp files
    passwords = {"app": secrets.token_hex(12), "replication": secrets.token_hex(12)}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "vars": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": "/usr/bin/python3",  # python3-psycopg2
                        "ansible_become_method": "su",
                    }
                },
                "pool_postgresql_primary": {"hosts": {"pga1": {}}},
                "pool_postgresql_replicas": {"hosts": {REPLICA: {}}},
            }
        )
    )
    with throwaway_postgres() as primary:
        user = primary.user
        certs = _folder_of(user)
        common = {
            **_certificates(certs),
            "ucupdates_postgresql_manage_service": False,  # the test starts the servers
            "ucupdates_postgresql_server_running": True,
            "ucupdates_postgresql_listen_addresses": ["127.0.0.1"],
            "ucupdates_postgresql_database": "pool",
            "ucupdates_postgresql_user": "appliance",
            "ucupdates_postgresql_password": passwords["app"],
            "ucupdates_postgresql_replication_user": "streamer",
            "ucupdates_postgresql_replication_password": passwords["replication"],
            "ucupdates_postgresql_client_networks": ["127.0.0.1/32"],
            "ucupdates_postgresql_replicas": [{"name": REPLICA, "address": "127.0.0.1"}],
            "ucupdates_postgresql_synchronous_standbys": [REPLICA],
        }
        standby = Postgres(
            _folder_of(user), free_port(), primary.password, primary.bin, primary.user
        )
        hosts = {}
        for name, server in (("pga1", primary), (REPLICA, standby)):
            conf = _folder_of(user)
            variables = {
                **common,
                "ucupdates_postgresql_port": server.port,
                "_ucupdates_postgresql_conf_dir": str(conf),
                "_ucupdates_postgresql_data_dir": str(server.data),
                "_ucupdates_postgresql_socket_dir": str(server.folder),
            }
            if server is standby:
                variables |= {
                    "ucupdates_postgresql_primary_host": "127.0.0.1",
                    "ucupdates_postgresql_primary_port": primary.port,
                    "ucupdates_postgresql_replica_name": REPLICA,
                }
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(variables))
            hosts[name] = (conf, ["-i", str(inventory), "--limit", name, "-e", f"@{path}"])
        primary_conf, primary_args = hosts["pga1"]
        standby_conf, standby_args = hosts[REPLICA]
        timings: dict[str, float] = {}
        try:
            # --check on the new primary: says what it would do, renders nothing
            check = playbook.run(
                [*primary_args, "--check", "--skip-tags", "install,streaming", str(POOL)],
                env,
                RUN_SECONDS,
            )
            timings["check"] = check.seconds
            assert check.returncode == 0, check.output[-8000:]
            assert check.recap()["pga1"]["changed"] > 0
            assert not (primary_conf / "conf.d").exists()
            assert primary.sql("SELECT count(*) FROM pg_replication_slots") == "0\n"

            # the primary: its files, then its database, roles and the replica's slot
            # (its check at the end waits for the restart below, with the new settings)
            first = playbook.run(
                [*primary_args, "--skip-tags", "install,streaming,verify", str(POOL)],
                env,
                RUN_SECONDS,
            )
            timings["primary"] = first.seconds
            assert first.returncode == 0, first.output[-8000:]
            assert passwords["app"] not in first.output
            assert passwords["replication"] not in first.output
            key = primary_conf / "ucupdates-server.key"
            assert (
                key.stat().st_mode & 0o777 == 0o600
                and key.stat().st_uid == pwd.getpwnam("postgres").pw_uid
            )
            hba = (primary_conf / "pg_hba.conf").read_text()
            assert "hostssl  pool  appliance  127.0.0.1/32  scram-sha-256" in hba
            assert "hostssl  replication  streamer  127.0.0.1/32  scram-sha-256" in hba
            assert "\nhost " not in hba and "trust" not in hba.split("peer", 1)[1]
            _debian_like_conf(primary, primary_conf)
            primary.stop()
            primary.start()  # now with the role's settings: TLS, the hostssl lines
            assert primary.sql("SHOW ssl") == "on\n"
            assert primary.sql("SHOW synchronous_standby_names") == f'ANY 1 ("{REPLICA}")\n'
            made = primary.sql(
                "SELECT datcollate || ' ' || pg_get_userbyid(datdba) FROM pg_database"
                " WHERE datname = 'pool'"
            )
            assert made == "C appliance\n"
            assert primary.sql("SELECT slot_type FROM pg_replication_slots") == "physical\n"

            # the replica: pg_basebackup -R through its slot, over TLS
            second = playbook.run(
                [*standby_args, "--skip-tags", "install,verify", str(POOL)], env, RUN_SECONDS
            )
            timings["replica"] = second.seconds
            assert second.returncode == 0, second.output[-8000:]
            assert passwords["replication"] not in second.output
            assert (standby.data / "standby.signal").is_file()
            auto = (standby.data / "postgresql.auto.conf").read_text()
            assert "sslmode=''verify-full''" in auto and "channel_binding=require" in auto, auto
            assert f"application_name={REPLICA}" in auto, auto
            assert f"primary_slot_name = '{REPLICA}'" in auto, auto
            assert passwords["replication"] not in auto  # the walreceiver reads the passfile
            _debian_like_conf(standby, standby_conf)
            primary.replicas.append(standby)  # stopped and removed with the primary
            # started as systemd would, in the server user's home (libpq looks for a client
            # certificate in ~/.postgresql: root's is out of its reach)
            monkeypatch.setenv("HOME", pwd.getpwnam("postgres").pw_dir)
            standby.start()

            # both again: nothing changes, each server's check passes, and pool.yml's
            # check sees the replica stream over TLS
            for name, args in (("pga1", primary_args), (REPLICA, standby_args)):
                again = playbook.run([*args, "--skip-tags", "install", str(POOL)], env, RUN_SECONDS)
                timings[f"{name} again"] = again.seconds
                assert again.returncode == 0, again.output[-6000:] + standby.log_text()[-3000:]
                recap = again.recap()[name]
                assert recap["changed"] == 0, f"{name} would change: {again.changed_tasks()}"
                assert "Check it runs as this role made it, with TLS on" in again.output
                if name == "pga1":
                    assert f"- {REPLICA} quorum TLSv1.3" in again.output, again.output[-3000:]
            streams = primary.sql(
                "SELECT application_name, state, sync_state, s.ssl FROM pg_stat_replication"
                " JOIN pg_stat_ssl s USING (pid)"
            )
            assert streams == f"{REPLICA}|streaming|quorum|t\n", streams

            t = time.monotonic()
            _appliance_store_over_tls(tmp_path, env, primary, standby, passwords["app"], certs)
            timings["appliance"] = time.monotonic() - t
        finally:
            shutil.rmtree(certs, ignore_errors=True)
            for conf, _ in hosts.values():
                shutil.rmtree(conf, ignore_errors=True)
            print("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))


def _appliance_store_over_tls(
    tmp_path: Path,
    env: dict[str, str],
    primary: Postgres,
    standby: Postgres,
    password: str,
    certs: Path,
) -> None:
    """The appliance role's [store] files (tasks/store.yml, ucupdates.toml.j2) for a node on
    the primary and a branch node: the connection strings in 0600 files the configuration
    names, never in it nor in the output; stores opened from those configurations reach
    their servers over verified TLS (the branch node: the replica, writes to the primary)."""
    ca = tmp_path / "etc-pool" / "postgresql-ca.pem"  # where the pool node's role puts it

    def dsn(server: Postgres, ca: Path) -> str:
        return (
            f"host=127.0.0.1 port={server.port} dbname=pool user=appliance password={password}"
            f" sslmode=verify-full sslrootcert={ca} connect_timeout=10"
        )

    nodes = {
        "pool": {"ucupdates_appliance_store_dsn": dsn(primary, ca)},
        "branch": {
            "ucupdates_appliance_store_dsn": dsn(standby, tmp_path / "etc-branch" / ca.name),
            "ucupdates_appliance_store_primary_dsn": dsn(
                primary, tmp_path / "etc-branch" / ca.name
            ),
        },
    }
    tasks: list[dict[str, object]] = []
    for node, values in nodes.items():
        values["ucupdates_appliance_config_dir"] = str(tmp_path / f"etc-{node}")
        values["ucupdates_appliance_data_dir"] = str(tmp_path / f"data-{node}")
        tasks += [
            {
                "name": f"The role's store tasks ({node} node)",
                "ansible.builtin.include_role": {
                    "name": "ucupdates_appliance",
                    "tasks_from": "store.yml",
                    "public": True,
                },
                "vars": values,
            },
            {
                "name": f"The role's configuration template ({node} node)",
                "ansible.builtin.template": {
                    "src": str(APPLIANCE_ROLE / "templates" / "ucupdates.toml.j2"),
                    "dest": f"{tmp_path}/etc-{node}/ucupdates.toml",
                    "mode": "0640",
                },
                "vars": values,
            },
        ]
    site = tmp_path / "store.yml"
    site.write_text(
        json.dumps(
            [
                {
                    "name": "The appliance role's store files and configuration",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "tasks": tasks,
                }
            ]
        )
    )
    common = {
        "ucupdates_appliance_user": "root",
        "ucupdates_appliance_group": "root",
        "ucupdates_appliance_domains": ["contoso.com"],
        "ucupdates_appliance_manage_service": False,
        "ucupdates_appliance_store_backend": "postgresql",
        "ucupdates_appliance_store_pool_size": 3,
        "ucupdates_appliance_store_ca_src": str(certs / "ca.pem"),
    }
    done = playbook.run(["-e", json.dumps(common), str(site)], env, RUN_SECONDS)
    assert done.returncode == 0, done.output[-8000:]
    assert password not in done.output

    found = {}
    for node in nodes:
        config_file = tmp_path / f"etc-{node}" / "ucupdates.toml"
        text = config_file.read_text()
        assert password not in text
        wanted = {"backend": "postgresql", "dsn_file": f"{tmp_path}/etc-{node}/store.dsn"}
        if node == "branch":
            wanted["primary_dsn_file"] = f"{tmp_path}/etc-branch/store-primary.dsn"
        assert tomllib.loads(text)["store"] == wanted | {"pool_size": 3}
        for name in ("store.dsn", "store-primary.dsn"):
            path = config_file.parent / name
            assert not path.exists() or path.stat().st_mode & 0o777 == 0o600
        config = load_config(config_file)
        config.data_dir.mkdir()  # the appliance role's configure step makes it
        store = open_configured(config.store, config.data_dir / "ucupdates.sqlite3")
        try:
            found[node] = store.schema_version
        finally:
            store.close()
        with psycopg.connect(config.store.connection_string(os.environ)) as conn:
            row = conn.execute(
                "SELECT ssl, current_user, pg_is_in_recovery() FROM pg_stat_ssl"
                " WHERE pid = pg_backend_pid()"
            ).fetchone()
        assert row == (True, "appliance", node == "branch"), (node, row)
    # the pool node made the schema on the primary; the branch node read it on the replica
    assert found["pool"] > 0 and found["branch"] == found["pool"], found

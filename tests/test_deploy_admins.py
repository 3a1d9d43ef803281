"""The appliance role's Control Panel accounts and API tokens (tasks/admins.yml), run by
ansible-playbook on this machine against a data folder of the test, twice: the first run
sets them, the second changes nothing. The full converge (test_deploy.py) runs the same
tasks inside a Debian root."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from pathlib import Path

from deploy import playbook

from appliance.passwords import hash_password, verify_password
from appliance.testing import run_cli

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "roles" / "ucupdates_appliance" / "tasks" / "admins.yml"
SECRET = "6f1d0c2e9a7b4c3d8e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b"


def test_accounts_and_tokens_from_variables_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (
        run_cli(
            data,
            "admin",
            "add",
            "old",
            "--role",
            "admin",
            "--password-stdin",
            stdin="old password\n",
        ).returncode
        == 0
    )
    cli = tmp_path / "ucupdates"
    cli.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m appliance --data-dir "{data}" "$@"\n')
    cli.chmod(0o755)
    site = tmp_path / "site.yml"
    site.write_text(
        "- name: Control Panel accounts and API tokens\n"
        "  hosts: localhost\n"
        "  connection: local\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: The role's tasks\n"
        f"      ansible.builtin.import_tasks: {TASKS}\n"
    )
    noc_hash = hash_password("noc password 1")
    variables = {
        "_ucupdates_appliance_cli": str(cli),
        "ucupdates_appliance_admins": [
            {"name": "ops", "role": "admin", "password": "ops password 1"},
            {"name": "noc", "password_hash": noc_hash},  # role: viewer by default
            {"name": "old", "state": "absent"},
        ],
        "ucupdates_appliance_api_tokens": [
            {"name": "ci", "role": "admin", "secret": SECRET, "expires": "2099-12-31"},
            {"name": "gone", "state": "absent"},
        ],
    }
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(variables))
    interpreter = f"ansible_python_interpreter={sys.executable}"
    args = ["-i", "localhost,", "-e", f"@{extra}", "-e", interpreter, str(site)]
    env = playbook.ansible_env(tmp_path)

    first = playbook.run(args, env, 300)
    assert first.returncode == 0, first.output[-6000:]
    # three tasks changed: accounts added, one removed, a token set (none to revoke)
    assert first.recap()["localhost"]["changed"] == 3
    assert "ops password 1" not in first.output and SECRET not in first.output

    second = playbook.run(args, env, 300)
    assert second.returncode == 0, second.output[-6000:]
    assert second.recap()["localhost"]["changed"] == 0, second.changed_tasks()

    with sqlite3.connect(data / "ucupdates.sqlite3") as db:
        accounts = dict(db.execute("SELECT name, role FROM admin_accounts").fetchall())
        hashes = dict(db.execute("SELECT name, password_hash FROM admin_accounts").fetchall())
        tokens = db.execute("SELECT name, role, token_hash, expires_at FROM api_tokens").fetchall()
    assert accounts == {"ops": "admin", "noc": "viewer"}
    assert verify_password(hashes["ops"], "ops password 1") and hashes["noc"] == noc_hash
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    assert tokens == [("ci", "admin", digest, "2100-01-01T00:00:00Z")]

"""Backup and restore as an admin does them: `ucupdates backup` while serve answers phones
and an import runs, then the data folder broken, `ucupdates restore-backup`, serve again,
and the phones get the same answers and images; a disk that fills during a backup.

Serve listens on fixed free loopback ports, so that its answers (which carry its URLs)
can be compared byte for byte across the two runs. Phones are curl: over plain HTTP for
the checks in a loop, over HTTPS with the CA taken before the data was broken.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from appliance.catalogue import BackupError, RestoreError, create_backup, restore_backup
from appliance.catalogue.sample import sample_check
from appliance.config import load_config
from appliance.store import Store, newest_schema_version
from appliance.store.database import _schema_scripts
from appliance.testing import approved_sample, free_port, run_cli, serving

FQDN = "ucupdates-r2.example.com"
APPROVED, NEWER = "4.0.7577.4400", "4.0.7577.4500"
CHECKS = [sample_check(v) for v in ("4.0.7577.4366", "4.0.7577.4387", APPROVED)]
CURL_SECONDS = 10
MAX_LOAD_CHECKS = 400  # the phones' loop during the backup: at most this many


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = run_cli(data, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def _curl(url: str, port: int, body: bytes | None = None, ca: Path | None = None) -> bytes:
    argv = ["curl", "-sS", "--fail", "--max-time", str(CURL_SECONDS), "-o", "-"]
    argv += ["--resolve", f"{FQDN}:{port}:127.0.0.1"]
    if ca is not None:
        argv += ["--cacert", str(ca)]
    if body is not None:
        argv += ["-H", "Content-Type: text/xml", "--data-binary", "@-"]
    done = subprocess.run([*argv, url], input=body, capture_output=True, timeout=CURL_SECONDS + 5)
    assert done.returncode == 0, (url, done.stderr)
    return done.stdout


def _answers(ports: dict[str, int], ca: Path) -> dict[str, bytes]:
    """Each check's answer over plain HTTP and over HTTPS, and every image offered."""
    http, https = ports["internal_http"], ports["internal_https"]
    seen: dict[str, bytes] = {}
    for i, check in enumerate(CHECKS):
        path = "/RequestHandler/ucdevice.upx"
        seen[f"http {i}"] = _curl(f"http://{FQDN}:{http}{path}", http, check)
        seen[f"https {i}"] = _curl(f"https://{FQDN}:{https}{path}", https, check, ca)
        fields = {e.tag: e.text or "" for e in ET.fromstring(seen[f"http {i}"]).iter()}
        if fields.get("FileName"):
            url = f"{fields['BaseURL']}/{fields['FileName']}"
            image = _curl(url, http)
            assert hashlib.sha256(image).hexdigest() == fields["SHA256"]
            assert len(image) == int(fields["Size"])
            seen[url] = image
    assert any(k.startswith("http://") for k in seen), seen.keys()  # an image was offered
    return seen


def test_backup_under_load_then_restore_gives_phones_the_same_answers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, newer = tmp_path / "UCUpdates.cab", tmp_path / "newer.cab"
    _cli(data, "make-sample-package", str(first), "--version", APPROVED, "--image-size", "200000")
    _cli(data, "make-sample-package", str(newer), "--version", NEWER, "--image-size", "2000000")
    _cli(data, "import", str(first))
    _cli(data, "approve", "--all-pending")
    ports = {n: free_port() for n in ("internal_https", "internal_http", "external_https")}
    ports |= {"admin": free_port()}
    config = tmp_path / "ucupdates.toml"
    config.write_text(
        f"data_dir = {json.dumps(str(data))}\n[listeners]\n"
        + "".join(f'{name} = "127.0.0.1:{port}"\n' for name, port in ports.items())
        + 'dns = "127.0.0.1:0"\n[zones]\ninternal_networks = ["127.0.0.0/8"]\n'
    )
    ca = tmp_path / "ca.pem"
    archive = tmp_path / "backups" / "nightly.tar"
    archive.parent.mkdir()

    with serving(config, tmp_path / "serve-1.log"):
        shutil.copy(data / "tls" / "ca.pem", ca)  # what the phones were given to trust
        expected = _answers(ports, ca)
        failures: list[str] = []
        done = threading.Event()
        checks = 0

        def phones() -> None:
            nonlocal checks
            url = f"http://{FQDN}:{ports['internal_http']}/RequestHandler/ucdevice.upx"
            while not done.is_set() and checks < MAX_LOAD_CHECKS:
                i = checks % len(CHECKS)
                try:
                    answer = _curl(url, ports["internal_http"], CHECKS[i])
                except AssertionError as e:
                    failures.append(str(e))
                    return
                if answer != expected[f"http {i}"]:
                    failures.append(f"check {i} answered {answer!r}")
                checks += 1

        loop = threading.Thread(target=phones)
        loop.start()
        try:
            importing = subprocess.Popen(
                [*_cli_argv(data), "import", str(newer)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            backup = _cli(data, "backup", str(archive), "--json")
            imported = importing.communicate(timeout=120)
            assert importing.returncode == 0, imported
            refused = run_cli(data, "restore-backup", str(archive))
        finally:
            done.set()
            loop.join(timeout=60)
        assert failures == []
        assert checks > 0
        assert refused.returncode == 1
        assert "serve is running on" in refused.stderr and "stop it first" in refused.stderr
        assert _answers(ports, ca) == expected  # the refused restore changed nothing

    summary = json.loads(backup.stdout)
    assert summary["stored_files"] >= 16
    assert archive.stat().st_mode & 0o777 == 0o600
    # Break the data folder: the database gone, an image corrupted, the TLS files gone.
    for name in ("ucupdates.sqlite3", "ucupdates.sqlite3-wal", "ucupdates.sqlite3-shm"):
        (data / name).unlink(missing_ok=True)
    image = next(p for p in sorted((data / "DeviceUpdateStore").rglob("CPE.nbt")))
    image.write_bytes(b"\0" * image.stat().st_size)
    shutil.rmtree(data / "tls")

    restored = _cli(data, "restore-backup", str(archive))
    assert "the data it replaced is in" in restored.stdout

    with serving(config, tmp_path / "serve-2.log"):
        assert _answers(ports, ca) == expected
    store = Store.open(data / "ucupdates.sqlite3")
    try:
        files = store.stored_files()
    finally:
        store.close()
    for f in files:  # every file the restored catalogue lists is there, whole
        stored = data / "DeviceUpdateStore" / f.path
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == f.sha256, f.path


def _cli_argv(data: Path) -> list[str]:
    return [sys.executable, "-m", "appliance", "--data-dir", str(data)]


needs_root = pytest.mark.skipif(
    shutil.which("mount") is None or __import__("os").geteuid() != 0,
    reason="mounting a small tmpfs needs root",
)


@needs_root
def test_a_disk_that_fills_during_a_backup_leaves_no_partial_file(tmp_path: Path) -> None:
    config = load_config(None, tmp_path / "data")
    store = approved_sample(config, image_size=300_000)  # about 2.4 MB of images
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        filler = small / "filler"

        def another_process_fills_the_disk(phase: str) -> None:
            if phase == "snapshot":
                with filler.open("wb") as f, contextlib.suppress(OSError):
                    for _ in range(1024):
                        f.write(b"\0" * 4096)
                        f.flush()

        target = small / "backup.tar"
        with pytest.raises(BackupError, match=r"backup.tar: No space left on device; nothing"):
            create_backup(store, config, target, another_process_fills_the_disk)
        assert sorted(p.name for p in small.iterdir()) == ["filler"]
        filler.unlink()
        with pytest.raises(BackupError, match=r"No space left on device"):
            create_backup(store, config, target)  # too small for it even when empty
        assert list(small.iterdir()) == []
    finally:
        store.close()
        subprocess.run(["umount", str(small)], check=True)


@needs_root
def test_a_store_folder_on_another_file_system_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    config = load_config(None, tmp_path / "data")
    store = approved_sample(config, image_size=1000)
    archive = tmp_path / "backup.tar"
    create_backup(store, config, archive)
    store.close()
    moved = tmp_path / "moved"
    shutil.move(config.store_dir, moved)
    config.store_dir.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(config.store_dir)], check=True
    )
    try:
        shutil.copytree(moved, config.store_dir, dirs_exist_ok=True)
        before = sorted(p.name for p in config.data_dir.iterdir())
        with pytest.raises(RestoreError, match=r"DeviceUpdateStore is another file system"):
            restore_backup(archive, config, "alice")
        assert sorted(p.name for p in config.data_dir.iterdir() if p.name != "serve.lock") == before
    finally:
        subprocess.run(["umount", str(config.store_dir)], check=True)


def test_the_first_command_after_an_upgrade_says_where_the_old_database_went(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    older = newest_schema_version() - 1
    conn = sqlite3.connect(data / "ucupdates.sqlite3", isolation_level=None)
    for version, sql in _schema_scripts()[:older]:
        conn.executescript(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
            f"applied_at TEXT NOT NULL);\n{sql}\n"
            f"INSERT INTO schema_version VALUES ({version}, '2013-04-02T09:30:00Z');"
        )
    conn.close()

    done = _cli(data, "rules")
    copies = list((data / "backups").iterdir())
    assert [c.name[: len(f"pre-upgrade-{older}-to-{older + 1}-")] for c in copies] == [
        f"pre-upgrade-{older}-to-{older + 1}-"
    ]
    assert (
        f"upgraded the database's schema to version {older + 1}; the database from before "
        f"is in {copies[0]}"
    ) in done.stderr
    assert _cli(data, "rules").stderr == ""  # once

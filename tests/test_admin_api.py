"""The Control Panel's JSON API over a real TLS listener, endpoint by endpoint.

One admin server process (`tests/browser/server.py`, the wiring `serve` uses) is shared by
the module; every answer any test gets is checked against `appliance/admin/openapi.json`
(its status documented, its JSON valid against the schema). The authorisation matrix
runs every endpoint without a session (401), every change as a viewer (403) and with a
missing or wrong CSRF token (403), and proves that none of them changed anything.
Tests that count wrong passwords connect from other loopback addresses (127.0.0.N), as
other clients would, so that they lock out nobody else.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser.panel import OPENAPI, OPENAPI_FILE, Client, Panel, simulate_check
from openapi_spec_validator import validate

from appliance.admin.accounts import add_account
from appliance.catalogue.sample import make_sample_package
from appliance.config import Config, load_config
from appliance.store.database import Store
from appliance.testing import catalogue_state

ADMIN, VIEWER, PASSWORD = "alice", "victor", "correct horse battery"
MAX_UPLOAD = 400_000
MAX_FAILURES = 3
OLD, NEW = "4.0.7577.4366", "4.0.7577.4387"
DEVICE_MAC = "00-04-F2-00-00-10"  # an ordinary CX600 ENU running OLD


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("admin-api") / "data"


@pytest.fixture(scope="module")
def config(data_dir: Path) -> Config:
    return load_config(None, data_dir)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("package") / "UCUpdates.cab"
    make_sample_package(path, image_size=3000)
    return path.read_bytes()


@pytest.fixture(scope="module")
def panel(data_dir: Path, config: Config) -> Iterator[Panel]:
    data_dir.mkdir(parents=True)
    store = Store.open(config.db_path)
    add_account(store, ADMIN, "admin", PASSWORD, "test")
    add_account(store, VIEWER, "viewer", PASSWORD, "test")
    add_account(store, "locky", "admin", PASSWORD, "test")
    store.close()
    running = Panel(data_dir, "--max-upload", str(MAX_UPLOAD), "--max-failures", str(MAX_FAILURES))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin(panel: Panel) -> Client:
    client = panel.client()
    assert client.login(ADMIN, PASSWORD).status == 200
    return client


@pytest.fixture(scope="module")
def viewer(panel: Panel) -> Client:
    client = panel.client()
    assert client.login(VIEWER, PASSWORD).status == 200
    return client


@pytest.fixture(scope="module")
def imported(admin: Client, package: bytes, config: Config) -> dict[str, int]:
    """The sample package imported, one test device, and one phone seen: rule ids by model."""
    reply = admin.request("POST", "/api/packages?name=UCUpdates.cab", raw=package)
    assert reply.status == 200, reply.body
    reply = admin.request("POST", "/api/test-devices", {"name": "lab", "mac": "00-04-F2-00-00-01"})
    assert reply.status == 201, reply.body
    simulate_check(config.data_dir, DEVICE_MAC, version=OLD)
    rules = admin.request("GET", "/api/rules").json()["rules"]
    return {f"{r['model']}/{r['locale']}": r["id"] for r in rules}


def snapshot(config: Config) -> tuple[object, ...]:
    """Everything an admin could see change: rules, files, test devices, events, disk."""
    uploads = config.data_dir / "uploads"
    left = sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []
    return (*catalogue_state(config), left)


# -- the OpenAPI document ----------------------------------------------------------------


def test_openapi_document_is_valid_and_served(panel: Panel) -> None:
    validate(OPENAPI)
    reply = panel.client().request("GET", "/api/openapi.json")
    assert reply.status == 200
    assert reply.json() == json.loads(OPENAPI_FILE.read_text())


def test_every_documented_operation_exists(admin: Client, imported: dict[str, int]) -> None:
    """No operation in the file answers 404 or 405: the document describes the real API."""
    for template, item in OPENAPI["paths"].items():
        for method in item:
            path = template.replace("{action}", "approve").replace("{id}", "999")
            reply = admin.request(method.upper(), path, check=False, csrf=False)
            assert reply.status != 405, (method, path)
            if "{" not in template:
                assert reply.status != 404 or b"no API endpoint" not in reply.body, (method, path)


# -- sessions ------------------------------------------------------------------------------


def test_login_sets_a_strict_secure_session_cookie(panel: Panel) -> None:
    client = panel.client()
    reply = client.login(ADMIN, PASSWORD)
    assert reply.status == 200
    assert reply.json()["role"] == "admin"
    cookie = reply.headers["Set-Cookie"]
    name, _, attributes = cookie.partition(";")
    assert name.startswith("__Host-ucupdates-session=")
    flags = {a.strip().split("=")[0].lower(): a.strip() for a in attributes.split(";")}
    assert {"secure", "httponly", "path", "samesite"} <= flags.keys()
    assert flags["samesite"] == "SameSite=Strict" and flags["path"] == "Path=/"
    assert "domain" not in flags
    session = client.request("GET", "/api/session").json()
    assert session["name"] == ADMIN and session["csrf_token"] == client.csrf


def test_wrong_password_and_unknown_account_get_the_same_401(panel: Panel) -> None:
    client = panel.client("127.0.0.31")
    wrong = client.login(ADMIN, "not the password")
    unknown = client.login("nobody", "not the password")
    assert wrong.status == unknown.status == 401
    assert wrong.error == unknown.error == "wrong account name or password"
    assert client.cookie is None


def test_login_needs_json(panel: Panel) -> None:
    client = panel.client()
    reply = client.request(
        "POST",
        "/api/login",
        raw=f"name={ADMIN}&password={PASSWORD}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 400 and "JSON" in reply.error


def test_logout_ends_the_session_everywhere(panel: Panel) -> None:
    client = panel.client()
    client.login(ADMIN, PASSWORD)
    token = client.cookie
    reply = client.request("POST", "/api/logout")
    assert reply.status == 200
    assert "Max-Age=0" in reply.headers["Set-Cookie"]
    stolen = panel.client()
    stolen.cookie = token
    assert stolen.request("GET", "/api/session").status == 401


def test_account_lockout_after_repeated_failures(panel: Panel) -> None:
    # from several addresses, so only the account's own count can lock it
    for n in range(MAX_FAILURES):
        assert panel.client(f"127.0.0.{40 + n}").login("locky", "wrong password").status == 401
    locked = panel.client("127.0.0.50").login("locky", PASSWORD)
    assert locked.status == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert "account" in locked.error
    # others are not affected
    assert panel.client("127.0.0.51").login(ADMIN, PASSWORD).status == 200


def test_address_lockout_after_repeated_failures(panel: Panel) -> None:
    guesser = panel.client("127.0.0.60")
    for n in range(MAX_FAILURES):
        assert guesser.login(f"guess{n}", "wrong password").status == 401
    assert guesser.login(ADMIN, PASSWORD).status == 429
    assert panel.client("127.0.0.61").login(ADMIN, PASSWORD).status == 200


# -- authorisation: every endpoint ---------------------------------------------------------

READS = [
    "/api/session",
    "/api/rules",
    "/api/rules/preview?action=approve&id=1",
    "/api/test-devices",
    "/api/devices",
    "/api/devices.csv",
    "/api/events",
    "/api/activity",
    "/api/charts",
    "/api/charts/versions.svg",
    "/api/charts/checkins.svg",
]
CHANGES: list[tuple[str, str, object]] = [
    ("POST", "/api/rules/approve", {"ids": [1]}),
    ("POST", "/api/rules/reset", {"all_pending": True}),
    ("POST", "/api/rules/restore", {"filter": {"model": "CX600"}}),
    ("POST", "/api/rules/remove", {"all": True}),
    ("POST", "/api/clean-files", None),
    ("POST", "/api/test-devices", {"name": "sneaky", "mac": "00-04-F2-00-00-99"}),
    ("DELETE", "/api/test-devices/1", None),
    ("POST", "/api/packages?name=other.cab", "package"),
]


def _send(client: Client, method: str, path: str, body: object, package: bytes) -> int:
    if body == "package":
        return client.request(method, path, raw=package).status
    return client.request(method, path, body).status


def test_no_session_gets_401_everywhere(
    panel: Panel, imported: dict[str, int], package: bytes, config: Config
) -> None:
    client = panel.client()
    before = snapshot(config)
    for path in READS:
        assert client.request("GET", path).status == 401, path
    for method, path, body in [*CHANGES, ("POST", "/api/logout", None)]:
        assert _send(client, method, path, body, package) == 401, path
    client.cookie = "forged-or-expired-token"
    assert client.request("GET", "/api/rules").status == 401
    assert snapshot(config) == before


def test_a_viewer_reads_everything_and_changes_nothing(
    viewer: Client, imported: dict[str, int], package: bytes, config: Config
) -> None:
    for path in READS:
        assert viewer.request("GET", path).status == 200, path
    before = snapshot(config)
    for method, path, body in CHANGES:
        status = _send(viewer, method, path, body, package)
        assert status == 403, path
    assert viewer.request("POST", "/api/rules/approve", {"ids": [1]}).error == (
        "a viewer cannot change anything; ask an admin"
    )
    assert snapshot(config) == before


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_a_bad_csrf_token_gets_403_and_changes_nothing(
    panel: Panel, imported: dict[str, int], package: bytes, config: Config, token: str | None
) -> None:
    client = panel.client()
    client.login(ADMIN, PASSWORD)
    good = client.csrf
    client.csrf = token
    before = snapshot(config)
    for method, path, body in [*CHANGES, ("POST", "/api/logout", None)]:
        headers = {} if token is None else {"X-CSRF-Token": token}
        status = (
            client.request(method, path, raw=package, headers=headers, csrf=False).status
            if body == "package"
            else client.request(method, path, body, headers=headers, csrf=False).status
        )
        assert status == 403, path
    assert snapshot(config) == before
    client.csrf = good
    assert client.request("GET", "/api/session").status == 200  # the session still works


def test_another_sessions_csrf_token_is_refused(
    panel: Panel, admin: Client, config: Config
) -> None:
    other = panel.client()
    other.login(ADMIN, PASSWORD)
    other.csrf = admin.csrf
    before = snapshot(config)
    reply = other.request("POST", "/api/test-devices", {"name": "x", "mac": "00-04-F2-00-00-77"})
    assert reply.status == 403 and "CSRF" in reply.error
    assert snapshot(config) == before


def test_a_request_from_another_origin_is_refused(admin: Client, config: Config) -> None:
    before = snapshot(config)
    reply = admin.request(
        "POST",
        "/api/test-devices",
        {"name": "x", "mac": "00-04-F2-00-00-78"},
        headers={"Origin": "https://evil.example"},
    )
    assert reply.status == 403 and "origin" in reply.error
    assert snapshot(config) == before


# -- packages ------------------------------------------------------------------------------


def test_upload_imports_and_reports_what_it_found(
    admin: Client, imported: dict[str, int], package: bytes
) -> None:
    assert len(imported) == 8  # the fixture's upload created the sample's eight rules
    job = "feedfacefeedface"
    again = admin.request("POST", f"/api/packages?name=UCUpdates.cab&job={job}", raw=package)
    assert again.status == 200
    result = again.json()
    assert result["package"] == "UCUpdates.cab"
    assert result["changed"] is False and result["repaired"] == []
    # known versions: their stored files were read back; nothing new to extract
    progress = admin.request("GET", f"/api/packages/progress/{job}").json()
    assert progress == {
        "phase": "done", "updates": 0, "updates_done": 0, "bytes": 0, "bytes_done": 0
    }  # fmt: skip
    assert {u["outcome"] for u in result["updates"]} == {"unchanged"}
    events = admin.request("GET", "/api/events?limit=500").json()["events"]
    imports = [e for e in events if e["action"] == "import"]
    assert imports and imports[-1]["actor"] == f"web:{ADMIN}"


def test_a_new_version_becomes_pending(
    admin: Client, imported: dict[str, int], tmp_path: Path
) -> None:
    newer = tmp_path / "newer.cab"
    make_sample_package(newer, version="4.0.7577.4400", image_size=3000)
    reply = admin.request("POST", "/api/packages?name=..%2F..%2Fnewer.cab", raw=newer.read_bytes())
    assert reply.status == 200
    result = reply.json()
    assert result["package"] == "newer.cab"  # a safe name, whatever the client says
    assert {u["outcome"] for u in result["updates"]} == {"now pending"}
    assert {u["previous_pending"] for u in result["updates"]} == {NEW}


def test_a_corrupt_package_is_refused_and_changes_nothing(
    admin: Client, imported: dict[str, int], package: bytes, config: Config
) -> None:
    before = snapshot(config)
    truncated = package[: len(package) // 2]
    reply = admin.request("POST", "/api/packages?name=broken.cab", raw=truncated)
    assert reply.status == 400 and reply.error.startswith("broken.cab: ")
    reply = admin.request("POST", "/api/packages?name=x.cab", raw=b"")
    assert reply.status == 400 and "empty" in reply.error
    assert snapshot(config) == before


def _raw_tls(panel: Panel) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(panel.ca_file))
    sock = socket.create_connection(("127.0.0.1", panel.port), timeout=10)
    return context.wrap_socket(sock, server_hostname=panel.fqdn)


def _read_reply(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _upload_head(client: Client, extra: str) -> bytes:
    return (
        f"POST /api/packages?name=big.cab HTTP/1.1\r\nHost: {client.fqdn}\r\n"
        f"Cookie: __Host-ucupdates-session={client.cookie}\r\nX-CSRF-Token: {client.csrf}\r\n"
        f"Content-Type: application/octet-stream\r\n{extra}\r\n"
    ).encode()


def test_an_oversized_upload_is_refused_before_its_body(
    panel: Panel, admin: Client, imported: dict[str, int], config: Config
) -> None:
    before = snapshot(config)
    with _raw_tls(panel) as sock:
        sock.sendall(_upload_head(admin, "Content-Length: 50000000\r\n"))
        status, headers, body = _read_reply(sock)  # no byte of the body was sent
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert (
        json.loads(body)["error"] == f"the package is over the upload limit of {MAX_UPLOAD} bytes"
    )
    assert snapshot(config) == before


def test_an_oversized_chunked_upload_is_cut_off_and_discarded(
    panel: Panel, admin: Client, imported: dict[str, int], config: Config
) -> None:
    before = snapshot(config)
    piece = b"\0" * (MAX_UPLOAD + 1000)
    with _raw_tls(panel) as sock:
        sock.sendall(_upload_head(admin, "Transfer-Encoding: chunked\r\n"))
        sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        status, headers, body = _read_reply(sock)
    assert status == 413
    assert json.loads(body)["error"].startswith("request body over")
    time.sleep(0.2)
    assert snapshot(config) == before  # the partial upload is gone from the data folder


def test_an_upload_streams_into_the_data_folder(
    panel: Panel, admin: Client, imported: dict[str, int], package: bytes, config: Config
) -> None:
    """The body is on disk under <data>/uploads/ while it arrives, not in memory or /tmp;
    afterwards nothing is left there."""
    uploads = config.data_dir / "uploads"
    half = len(package) // 2
    with _raw_tls(panel) as sock:
        sock.sendall(_upload_head(admin, f"Content-Length: {len(package)}\r\n"))
        sock.sendall(package[:half])
        deadline = time.monotonic() + 10
        sizes: list[int] = []
        while time.monotonic() < deadline:
            sizes = [p.stat().st_size for p in uploads.glob("*.part")] if uploads.exists() else []
            if sizes and sizes[0] >= half:
                break
            time.sleep(0.02)
        assert sizes == [half]
        sock.sendall(package[half:])
        status, _, body = _read_reply_once(sock)
    assert status == 200, body
    assert not list(uploads.iterdir())


def _read_reply_once(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """One keep-alive response: headers, then Content-Length bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


# -- rules -----------------------------------------------------------------------------------


def test_rules_list_and_filters(admin: Client, imported: dict[str, int]) -> None:
    body = admin.request("GET", "/api/rules?brand=polycom&model=CX600").json()
    assert {(r["model"], r["locale"]) for r in body["rules"]} == {
        ("CX600", "ENU"),
        ("CX600", "DEU"),
    }
    assert "Aastra" in body["choices"]["brand"]
    pending = admin.request("GET", "/api/rules?state=pending").json()["rules"]
    assert len(pending) >= 1
    reply = admin.request("GET", "/api/rules?state=bogus")
    assert reply.status == 400 and "bogus" in reply.error


def test_preview_counts_the_known_devices_and_what_they_will_be_offered(
    admin: Client, imported: dict[str, int], config: Config
) -> None:
    rule = imported["CX3000/ENU"]
    simulate_check(config.data_dir, "00-04-F2-00-30-01", model="CX3000", version=OLD)
    simulate_check(config.data_dir, "00-04-F2-00-30-02", model="CX3000", version=OLD)
    before = snapshot(config)
    impact = admin.request("GET", f"/api/rules/preview?action=approve&id={rule}").json()
    assert impact["rule_ids"] == [rule]
    assert impact["devices"] == 2
    assert impact["before"] == []  # nothing approved yet: nothing offered
    assert impact["after"] == [{"version": NEW, "devices": 2, "test_devices": 0}]
    assert impact["changed"] == 2
    assert impact["summary"] == f"2 phones will be offered {NEW} at their next check."
    assert impact["rules"] == [{"rule_id": rule, "text": f"Polycom CX3000 ENU: no version → {NEW}"}]
    reset = admin.request("GET", f"/api/rules/preview?action=reset&id={rule}").json()
    assert reset["after"] == [] and reset["changed"] == 0
    assert snapshot(config) == before  # a preview changes nothing


def test_preview_errors(admin: Client, imported: dict[str, int]) -> None:
    assert admin.request("GET", "/api/rules/preview?action=approve&id=9999").status == 404
    assert admin.request("GET", "/api/rules/preview?action=explode&id=1").status == 404
    assert admin.request("GET", "/api/rules/preview?action=approve").status == 400
    assert admin.request("GET", "/api/rules/preview?action=approve&id=x").status == 400


def test_approve_restore_reset_remove(
    panel: Panel, admin: Client, imported: dict[str, int], config: Config
) -> None:
    rule = imported["CX700/ENU"]
    approved = admin.request("POST", "/api/rules/approve", {"ids": [rule]})
    assert approved.status == 200
    change = approved.json()["changes"][0]
    assert change["skipped"] is None
    assert change["after"]["approved_version"] is not None
    assert change["after"]["state"] == "approved"
    again = admin.request("POST", "/api/rules/approve", {"ids": [rule]})
    assert again.status == 409 and "no pending version" in again.error
    # no restore version: phones would get nothing, so only a forced restore does it
    refused = admin.request("POST", "/api/rules/restore", {"ids": [rule]})
    assert refused.status == 409 and "phones would be offered no update" in refused.error
    assert refused.json()["changes"][0]["needs_force"] is True
    restored = admin.request("POST", "/api/rules/restore", {"ids": [rule], "force": True})
    assert restored.json()["changes"][0]["after"]["state"] == "restored"
    assert restored.json()["changes"][0]["forced"] is True
    events = admin.request("GET", "/api/events?limit=5").json()["events"]
    assert [e["action"] for e in events[:2]] == ["restore", "approve"]  # newest first
    assert events[0]["actor"] == f"web:{ADMIN}" and events[0]["after"]["forced"] is True
    removed = admin.request("POST", "/api/rules/remove", {"filter": {"model": "CX700"}})
    assert removed.status == 200 and removed.json()["changes"][0]["after"] is None
    assert admin.request("GET", "/api/rules?model=CX700").json()["rules"] == []
    # every change is also a log event (so syslog gets it), as the commands' are
    log = panel.log_text()
    for action in ("approve", "restore", "remove"):
        assert f"admin {action} rule {rule} UCPhone/Polycom/CX700/A/ENU/CPE by web:{ADMIN}" in log


def test_an_unknown_rule_changes_nothing(
    admin: Client, imported: dict[str, int], config: Config
) -> None:
    before = snapshot(config)
    known = imported["CX600/DEU"]
    reply = admin.request("POST", "/api/rules/approve", {"ids": [known, 9999]})
    assert reply.status == 404 and reply.error == "no rule with id 9999"
    assert admin.request("POST", "/api/rules/approve", {"filter": {"model": "nope"}}).status == 404
    assert admin.request("POST", "/api/rules/explode", {"ids": [known]}).status == 404
    for bad in ({}, {"ids": "1"}, {"ids": [0]}, {"filter": {"colour": "red"}}, {"all": "yes"}):
        assert admin.request("POST", "/api/rules/approve", bad).status == 400, bad
    assert snapshot(config) == before


def test_clean_files(admin: Client, imported: dict[str, int]) -> None:
    reply = admin.request("POST", "/api/clean-files")
    assert reply.status == 200
    assert reply.json()["files"] >= 0


# -- test devices ----------------------------------------------------------------------------


def test_test_devices_add_list_remove(admin: Client, imported: dict[str, int]) -> None:
    added = admin.request("POST", "/api/test-devices", {"name": "desk", "mac": "0004f2aabbcc"})
    assert added.status == 201
    device = added.json()
    assert device["identifier"] == "00-04-F2-AA-BB-CC" and device["kind"] == "mac"
    serial = admin.request("POST", "/api/test-devices", {"name": "s", "serial": "ab-12_c"})
    assert serial.json()["identifier"] == "AB-12_C"
    listed = admin.request("GET", "/api/test-devices").json()["test_devices"]
    assert {"00-04-F2-AA-BB-CC", "AB-12_C"} <= {d["identifier"] for d in listed}
    for d in (device, serial.json()):
        assert admin.request("DELETE", f"/api/test-devices/{d['id']}").status == 200
    assert admin.request("DELETE", f"/api/test-devices/{device['id']}").status == 404


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"name": "x", "mac": "00-04-F2-A1-B2"}, 400, "invalid MAC address"),
        ({"name": "x", "mac": "00-04:F2-A1-B2-C3"}, 400, "invalid MAC address"),
        ({"name": "x", "mac": "zz-04-F2-A1-B2-C3"}, 400, "invalid MAC address"),
        ({"name": "x", "serial": "no spaces"}, 400, "invalid serial number"),
        ({"name": "x", "mac": "00-04-F2-A1-B2-C3", "serial": "S1"}, 400, "exactly one"),
        ({"name": "x"}, 400, "exactly one"),
        ({"name": "", "mac": "00-04-F2-A1-B2-C3"}, 400, "printable name"),
        ({"mac": "00-04-F2-A1-B2-C3"}, 400, "needs a name"),
        ({"name": "dup", "mac": "00:04:f2:00:00:01"}, 409, "exists already"),
    ],
)
def test_bad_test_devices_are_refused_and_change_nothing(
    admin: Client,
    imported: dict[str, int],
    config: Config,
    body: dict[str, str],
    status: int,
    words: str,
) -> None:
    before = snapshot(config)
    reply = admin.request("POST", "/api/test-devices", body)
    assert reply.status == status
    assert words in reply.error
    assert snapshot(config) == before


# -- devices, activity, charts ---------------------------------------------------------------


def test_devices_inventory_and_filters(admin: Client, imported: dict[str, int]) -> None:
    body = admin.request("GET", "/api/devices").json()
    assert body["total"] >= 1
    row = next(d for d in body["devices"] if d["mac"] == DEVICE_MAC)
    assert row["model"] == "CX600" and row["version"] == OLD and row["zone"] == "internal"
    mine = admin.request("GET", f"/api/devices?q={DEVICE_MAC[-5:].lower()}").json()
    assert [d["mac"] for d in mine["devices"]] == [DEVICE_MAC]
    assert admin.request("GET", "/api/devices?model=HP4120").json()["devices"] == []
    assert admin.request("GET", "/api/devices?status=sideways").status == 400
    assert admin.request("GET", "/api/devices?limit=0").status == 400


def test_device_status_follows_the_approved_version(
    admin: Client, imported: dict[str, int], config: Config
) -> None:
    simulate_check(config.data_dir, "00-04-F2-00-50-01", model="CX500", version=OLD)
    simulate_check(config.data_dir, "00-04-F2-00-50-02", model="CX500", version=NEW)
    statuses = {
        d["mac"]: d["status"]
        for d in admin.request("GET", "/api/devices?model=CX500").json()["devices"]
    }
    assert set(statuses.values()) == {"no-approved"}
    admin.request("POST", "/api/rules/approve", {"ids": [imported["CX500/ENU"]]})
    rows = admin.request("GET", "/api/devices?model=CX500").json()["devices"]
    assert {d["mac"]: d["status"] for d in rows} == {
        "00-04-F2-00-50-01": "outdated",
        "00-04-F2-00-50-02": "current",
    }
    outdated = admin.request("GET", "/api/devices?model=CX500&status=outdated").json()
    assert [d["offered_version"] for d in outdated["devices"]] == [NEW]


def test_devices_csv_export(admin: Client, imported: dict[str, int], config: Config) -> None:
    simulate_check(config.data_dir, "00-04-F2-00-60-01", model="=HYPERLINK(1)", version=OLD)
    reply = admin.request("GET", "/api/devices.csv")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in reply.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(reply.body.decode())))
    assert DEVICE_MAC in {r["mac"] for r in rows}
    assert {"mac", "model", "version", "approved_version", "status", "last_seen"} <= rows[0].keys()
    injected = next(r for r in rows if r["mac"] == "00-04-F2-00-60-01")
    assert injected["model"] == "'=HYPERLINK(1)"  # a spreadsheet shows it, does not run it
    only = admin.request("GET", f"/api/devices.csv?q={DEVICE_MAC}").body.decode()
    assert len(only.strip().splitlines()) == 2


def test_events_and_activity_newest_first(admin: Client, imported: dict[str, int]) -> None:
    events = admin.request("GET", "/api/events?limit=3").json()["events"]
    assert len(events) == 3
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    activity = admin.request("GET", "/api/activity?limit=500").json()
    checks = activity["device_events"]
    assert any(c["mac"] == DEVICE_MAC and c["reported"] == OLD for c in checks)
    assert [c["at"] for c in checks] == sorted((c["at"] for c in checks), reverse=True)
    assert admin.request("GET", "/api/events?limit=-1").status == 400


def test_charts(admin: Client, imported: dict[str, int]) -> None:
    data = admin.request("GET", "/api/charts").json()
    models = {m["model"]: m for m in data["versions_per_model"]}
    assert models["Polycom CX600"]["total"] >= 1
    assert len(data["checkins"]) == 14
    assert data["checkins"][-1]["checks"] >= 1  # today's simulated checks
    svg = admin.request("GET", "/api/charts/versions.svg")
    assert svg.headers["Content-Type"] == "image/svg+xml"
    assert b'role="img"' in svg.body and b"Polycom CX600" in svg.body
    checkins = admin.request("GET", "/api/charts/checkins.svg")
    assert b"Update checks per day" in checkins.body


# -- errors and headers ------------------------------------------------------------------------


def test_unknown_endpoints_and_methods(admin: Client) -> None:
    reply = admin.request("GET", "/api/nothing", check=False)
    assert reply.status == 404 and reply.json() == {"error": "no API endpoint /api/nothing"}
    reply = admin.request("PUT", "/api/rules", {}, check=False)
    assert reply.status == 405 and reply.headers["Allow"] == "GET"


def test_bad_json_and_oversized_json(admin: Client, config: Config) -> None:
    before = snapshot(config)
    reply = admin.request(
        "POST", "/api/test-devices", raw=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert reply.status == 400 and "not valid JSON" in reply.error
    big = {"name": "x" * 70_000, "mac": "00-04-F2-00-00-55"}
    reply = admin.request("POST", "/api/test-devices", big, check=False)
    assert reply.status == 413 and reply.headers["Content-Type"] == "application/json"
    assert snapshot(config) == before


def test_security_headers(admin: Client) -> None:
    for path in ("/api/rules", "/updates", "/static/app.js"):
        headers = admin.request("GET", path).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"], path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert admin.request("GET", "/api/rules").headers["Cache-Control"] == "no-store"


def test_every_answer_was_checked_against_the_openapi_file(admin: Client) -> None:
    """The fixture's client validated every /api/ answer it got (see browser/panel.py)."""
    assert len(admin.checked) > 40
    assert {c.rsplit(" ", 1)[1] for c in admin.checked} >= {"200", "201", "400", "404", "409"}

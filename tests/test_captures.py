"""Capture mode (docs/phones.md): what is kept, how much, and how it is read and exported.

The phone site runs in process (a real GuardedSite over treq's memory transport, as in
test_phones_web.py); the TLS fields come from a real pyOpenSSL handshake in memory with
the listener's own context (test_serve.py checks them over real sockets with openssl
s_client); the command runs in process; the Control Panel's API runs in process and every
answer is checked against openapi.json.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from browser.panel import Reply as PanelReply
from browser.panel import check_against_openapi
from OpenSSL import SSL
from treq.testing import StubTreq

from appliance.admin import add_account, make_admin_site
from appliance.catalogue import (
    sample_check,
)
from appliance.cli.main import main as cli_main
from appliance.config import Config, TlsProfile
from appliance.model import Capture, CapturedTls, Zone
from appliance.ops import CaptureFolder, capture_json, export_bytes
from appliance.ops.captures import capture_from_json, capture_id, config_summary
from appliance.phones import Authenticator, LocalDirectory, PhoneService
from appliance.phones.capture import safe_header, tls_of
from appliance.store import Store
from appliance.testing import (
    FixedClock,
    InlineReactor,
    approved_sample,
    config_from,
    inline,
    memory_client,
    phone_client,
    settle,
)
from appliance.tls import context_factory, ensure_test_certificates

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
CHECK = "http://ucupdates.test/RequestHandler/ucdevice.upx"
XML = {"Content-Type": ["text/xml"]}
PER_MODEL = 3


def model_check(model: str, mac: str = "00-04-F2-00-00-01") -> bytes:
    return sample_check(mac=mac).replace(
        b"<Model>CX600</Model>", f"<Model>{model}</Model>".encode()
    )


@dataclass
class Phones:
    config: Config
    store: Store
    service: PhoneService
    internal: StubTreq

    def post(self, body: bytes, headers: dict[str, list[str]] | None = None) -> tuple[int, bytes]:
        d = self.internal.post(CHECK, data=body, headers={**XML, **(headers or {})})
        response = settle(self.internal, d)
        return response.code, settle(self.internal, response.content())

    def captures(self) -> list[Capture]:
        return list(CaptureFolder.of(self.config).captures())


def phone_service(config: Config, store: Store) -> PhoneService:
    authenticator = Authenticator(
        LocalDirectory(lambda: store), config.auth, lambda: 0.0, run_blocking=inline
    )
    return PhoneService(config, store, authenticator, lambda: NOW)


def make_config(tmp_path: Path, extra: str = "") -> Config:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    return config_from(
        tmp_path,
        f"data_dir = {json.dumps(str(data))}\n[service]\ncapture_per_model = {PER_MODEL}\n{extra}",
    )


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[Phones]:
    config = make_config(tmp_path)
    store = approved_sample(config, FixedClock(NOW), image_size=2000)
    service = phone_service(config, store)
    yield Phones(config, store, service, phone_client(service))
    service.close()
    store.close()


# -- what is kept ---------------------------------------------------------------------------


def test_the_first_checks_of_each_model_are_kept_with_the_answer(phones: Phones) -> None:
    answers = [phones.post(sample_check(), {"User-Agent": ["OCPhone/4.0"]}) for _ in range(5)]
    other = phones.post(model_check("CX3000"))

    kept = phones.captures()
    assert [c.model for c in kept] == ["UCPhone/Polycom/CX600"] * PER_MODEL + [
        "UCPhone/Polycom/CX3000"
    ]
    first = kept[0]
    assert (first.method, first.target, first.http_version) == (
        "POST",
        "/RequestHandler/ucdevice.upx",
        "HTTP/1.1",
    )
    assert ("User-Agent", "OCPhone/4.0") in first.headers
    assert ("Content-Type", "text/xml") in first.headers
    assert first.body == sample_check()
    assert (first.client, first.zone) == ("127.0.0.1", Zone.INTERNAL)
    assert (first.status, first.answer) == answers[0]
    assert first.status == 200 and b"<Downloads>1</Downloads>" in first.answer
    assert first.tls is None  # not TLS (the memory transport is plain)
    assert first.reason == "one of the first checks of UCPhone/Polycom/CX600 (answer: approved)"
    assert kept[-1].answer == other[1]


def test_model_counts_ignore_case_and_survive_a_restart(phones: Phones) -> None:
    phones.post(sample_check())
    phones.post(model_check("cx600"))
    restarted = phone_service(phones.config, phones.store)
    client = phone_client(restarted)
    for _ in range(3):
        settle(client, client.post(CHECK, data=sample_check(), headers=XML))
    assert len(phones.captures()) == PER_MODEL


def test_every_unparsable_check_is_kept_however_many(phones: Phones) -> None:
    for n in range(PER_MODEL + 2):
        status, answer = phones.post(f"<Request><Model>x{n}".encode())
        assert status == 400
    kept = phones.captures()
    assert len(kept) == PER_MODEL + 2
    assert all(c.model is None and c.status == 400 for c in kept)
    assert kept[0].reason.startswith("unparsable: malformed XML")
    assert kept[0].answer.startswith(b"malformed XML")
    assert kept[-1].body == f"<Request><Model>x{PER_MODEL + 1}".encode()


def test_credentials_never_reach_a_capture(phones: Phones) -> None:
    ntlm = "NTLM " + base64.b64encode(b"NTLMSSP\0\3\0\0\0 secret-response").decode()
    phones.post(
        b"<Request>",
        {"Authorization": [ntlm], "Cookie": ["session=s3cr3t-cookie; theme=dark"]},
    )
    phones.post(b"<Request>", {"Authorization": ["Basic " + base64.b64encode(b"u:pw").decode()]})
    ntlm_capture, basic_capture = phones.captures()
    assert ("Authorization", "NTLM (credentials removed)") in ntlm_capture.headers
    assert ("Cookie", "session=…; theme=…") in ntlm_capture.headers
    assert ("Authorization", "Basic (credentials removed)") in basic_capture.headers
    for path in CaptureFolder.of(phones.config).folder.iterdir():
        text = path.read_bytes()
        assert b"s3cr3t" not in text and b"secret-response" not in text
        assert base64.b64encode(b"u:pw") not in text


@pytest.mark.parametrize(
    ("name", "value", "kept"),
    [
        (b"Authorization", b"Negotiate YIIx", "Negotiate (credentials removed)"),
        (b"authorization", b"", "(credentials removed)"),
        (b"Proxy-Authorization", b"Basic dTpw", "Basic (credentials removed)"),
        (b"Cookie", b"a=1;b=2; =3", "a=…; b=…"),
        (b"X-Other", b"as sent", "as sent"),
    ],
)
def test_safe_header(name: bytes, value: bytes, kept: str) -> None:
    assert safe_header(name, value) == (name.decode(), kept)


def test_capture_mode_off_keeps_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path, "capture = false\n")
    store = Store.open(config.db_path, clock=lambda: NOW)
    service = phone_service(config, store)
    client = phone_client(service)
    settle(client, client.post(CHECK, data=b"<Request>", headers=XML))
    settle(client, client.post(CHECK, data=sample_check(), headers=XML))
    assert not config.capture_dir.exists() or not any(config.capture_dir.iterdir())
    service.close()
    store.close()


# -- TLS details: a real handshake in memory, with the phone listener's context ----------------


def handshake(tmp_path: Path, client: SSL.Context, sni: bytes | None) -> SSL.Connection:
    creds = ensure_test_certificates(tmp_path / "tls", ["ucupdates-r2.example.com"], now=NOW)
    server = SSL.Connection(context_factory(creds, TlsProfile.LPE_LEGACY).getContext(), None)
    server.set_accept_state()
    phone = SSL.Connection(client, None)
    phone.set_connect_state()
    if sni is not None:
        phone.set_tlsext_host_name(sni)
    for _ in range(20):  # bounded: a handshake takes two or three flights
        for a, b in ((phone, server), (server, phone)):
            with contextlib.suppress(SSL.WantReadError):
                a.do_handshake()
            with contextlib.suppress(SSL.WantReadError):
                b.bio_write(a.bio_read(65536))
        if server.get_protocol_version_name() != "Unknown" and phone.get_peer_certificate():
            try:
                server.do_handshake()
                return server
            except SSL.WantReadError:
                continue
    raise AssertionError("no handshake")


@dataclass
class Transport:
    """What a Twisted TLS transport offers: getHandle() is the pyOpenSSL connection."""

    handle: Any

    def getHandle(self) -> Any:
        return self.handle


def test_tls_1_0_without_sni_as_an_old_phone_connects(tmp_path: Path) -> None:
    client = SSL.Context(SSL.TLS_METHOD)
    client.set_min_proto_version(SSL.TLS1_VERSION)
    client.set_max_proto_version(SSL.TLS1_VERSION)
    client.set_cipher_list(b"AES128-SHA:@SECLEVEL=0")
    server = handshake(tmp_path, client, None)
    assert tls_of(Transport(server)) == CapturedTls("TLSv1", "AES128-SHA", None)


def test_tls_1_2_with_sni(tmp_path: Path) -> None:
    client = SSL.Context(SSL.TLS_METHOD)
    client.set_max_proto_version(SSL.TLS1_2_VERSION)
    server = handshake(tmp_path, client, b"ucupdates-r2.example.com")
    got = tls_of(Transport(server))
    assert got is not None
    assert (got.version, got.server_name) == ("TLSv1.2", "ucupdates-r2.example.com")
    assert got.cipher and "GCM" in got.cipher or "CHACHA" in str(got.cipher)


def test_plain_http_has_no_tls() -> None:
    class Tcp:
        def getHandle(self) -> object:
            return object()  # a socket

    assert tls_of(Tcp()) is None
    assert tls_of(None) is None


# -- the folder: atomic files, bounds, reading back --------------------------------------------


def a_capture(n: int, body: bytes = b"<Request/>") -> Capture:
    return Capture(
        id=capture_id(NOW, 4242, n),
        captured_at="2026-12-06T09:30:00Z",
        reason="unparsable: test",
        client="10.0.0.5",
        zone=Zone.INTERNAL,
        model=None,
        method="POST",
        target="/RequestHandler/ucdevice.upx",
        http_version="HTTP/1.1",
        headers=(("Host", "ucupdates-r2.example.com"),),
        body=body,
        tls=CapturedTls("TLSv1", "AES128-SHA", None),
        status=400,
        answer=b"malformed XML\n",
    )


def test_a_capture_round_trips_and_binary_bodies_survive(tmp_path: Path) -> None:
    folder = CaptureFolder(tmp_path / "capture", 10, 10**6)
    text, binary = a_capture(1), a_capture(2, body=b"\xff\xfe<\x00R\x00")
    folder.write(text)
    folder.write(binary)
    assert list(folder.captures()) == [text, binary]
    assert folder.read(binary.id) == binary
    assert capture_from_json(capture_json(binary)) == binary
    assert not list(folder.folder.glob(".*"))  # no temporary file is left


def test_the_oldest_go_past_the_count_or_the_bytes(tmp_path: Path) -> None:
    folder = CaptureFolder(tmp_path / "capture", 3, 10**6)
    for n in range(1, 6):
        folder.write(a_capture(n))
    assert [c.id for c in folder.captures()] == [a_capture(n).id for n in (3, 4, 5)]

    size = len(json.dumps(capture_json(a_capture(9)), indent=1).encode())
    small = CaptureFolder(tmp_path / "small", 100, 2 * size + size // 2)
    for n in range(1, 6):
        small.write(a_capture(n))
    assert [c.id for c in small.captures()] == [a_capture(n).id for n in (4, 5)]
    huge = a_capture(6, body=b"x" * (3 * size))
    small.write(huge)
    assert [c.id for c in small.captures()] == [huge.id]  # the newest stays, even alone


@pytest.mark.parametrize("bad", ["../../etc/passwd", "x", "20261206T093000-000000-1-000001/.."])
def test_an_unknown_or_malformed_id_is_refused(tmp_path: Path, bad: str) -> None:
    from appliance.ops import UnknownCapture

    with pytest.raises(UnknownCapture):
        CaptureFolder(tmp_path, 10, 10**6).read(bad)


def test_the_export_holds_everything_and_no_secret(tmp_path: Path) -> None:
    config = make_config(tmp_path, '[auth]\nrealm = "contoso"\n')
    folder = CaptureFolder.of(config)
    folder.write(a_capture(1))
    document = json.loads(export_bytes(folder, config, "9.9.9", NOW))
    assert document["format"] == "ucupdates-captures-export/1"
    assert document["appliance_version"] == "9.9.9"
    assert document["count"] == 1 and document["captures"][0]["id"] == a_capture(1).id
    assert document["config"]["auth"]["realm"] == "contoso"
    assert document["config"]["service"]["capture_per_model"] == PER_MODEL
    assert len(document["config_sha256"]) == 64

    def names(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for k, v in value.items():
                yield k
                yield from names(v)

    assert not [n for n in names(config_summary(config)) if "password" in n or "secret" in n]


# -- the command ---------------------------------------------------------------------------


def test_capture_list_show_and_export(
    phones: Phones, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    phones.post(sample_check())
    phones.post(b"<Request>")
    data = ["--data-dir", str(phones.config.data_dir)]
    config = ["--config", str(tmp_path / "ucupdates.toml")]
    capsys.readouterr()

    assert cli_main([*config, "capture", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(c["model"], c["status"], c["tls"]) for c in listed] == [
        ("UCPhone/Polycom/CX600", 200, None),
        (None, 400, None),
    ]
    assert cli_main([*config, "capture", "list"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("ID") and listed[1]["id"] in table

    assert cli_main([*config, "capture", "show", listed[1]["id"]]) == 0
    shown = capsys.readouterr().out
    assert "POST /RequestHandler/ucdevice.upx HTTP/1.1" in shown
    assert "TLS: plain HTTP (no TLS)" in shown
    assert "answer: 400" in shown and "\n<Request>\n" in shown
    assert cli_main([*config, "capture", "show", listed[0]["id"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["request"]["body"]["text"] == sample_check().decode()

    assert cli_main([*config, "capture", "show", "20991231T000000-000000-1-000001"]) == 1
    assert "no capture" in capsys.readouterr().err

    target = tmp_path / "report.json"
    assert cli_main([*config, "capture", "export", str(target)]) == 0
    assert "2 capture(s) written" in capsys.readouterr().out
    exported = json.loads(target.read_text())
    assert [c["id"] for c in exported["captures"]] == [c["id"] for c in listed]
    assert exported["config"]["data_dir"] == str(phones.config.data_dir)

    assert cli_main([*data, "capture", "list"]) == 0  # the defaults' folder, the same data


def test_capture_list_when_there_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["--data-dir", str(tmp_path / "d"), "capture", "list"]) == 0
    assert "no captures in" in capsys.readouterr().out


# -- the Control Panel -----------------------------------------------------------------------

BASE = "https://ucupdates.test:9443"
PASSWORD = "correct horse battery"


def panel_get(stub: StubTreq, path: str, cookie: str | None) -> PanelReply:
    headers = {"Accept": ["application/json"], "Origin": [BASE]}
    if cookie:
        headers["Cookie"] = [cookie]
    response = settle(stub, stub.request("GET", BASE + path, headers=headers))
    body = settle(stub, response.content())
    flat = {k.decode(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    reply = PanelReply(response.code, flat, body)  # type: ignore[arg-type]
    if path.startswith("/api/"):
        check_against_openapi("GET", BASE + path, reply)
    return reply


def test_a_viewer_lists_reads_and_exports_captures(phones: Phones) -> None:
    phones.post(sample_check())
    phones.post(b"<Request>", {"Authorization": ["Basic dTpw"]})
    add_account(phones.store, "victor", "viewer", PASSWORD, "test")
    stub = memory_client(
        lambda _: make_admin_site(phones.config, phones.store, lambda: NOW, InlineReactor())
    )
    assert panel_get(stub, "/api/captures", None).status == 401
    login = settle(
        stub,
        stub.request(
            "POST",
            BASE + "/api/login",
            data=json.dumps({"name": "victor", "password": PASSWORD}).encode(),
            headers={"Content-Type": ["application/json"], "Origin": [BASE]},
        ),
    )
    cookie = login.headers.getRawHeaders("Set-Cookie")[0].split(";", 1)[0]

    listing = panel_get(stub, "/api/captures", cookie).json()
    assert listing["enabled"] is True and listing["per_model"] == PER_MODEL
    newest, oldest = listing["captures"]
    assert (newest["status"], oldest["model"]) == (400, "UCPhone/Polycom/CX600")

    detail = panel_get(stub, f"/api/captures/{newest['id']}", cookie).json()
    assert detail["capture"]["request"]["body"]["text"] == "<Request>"
    assert ["Authorization", "Basic (credentials removed)"] in detail["capture"]["request"][
        "headers"
    ]
    assert "answer: 400" in detail["text"]
    assert panel_get(stub, "/api/captures/20991231T000000-000000-1-000001", cookie).status == 404

    export = panel_get(stub, "/api/captures/export", cookie)
    assert export.status == 200
    assert export.headers["Content-Disposition"].startswith("attachment; filename=")
    assert [c["id"] for c in export.json()["captures"]] == [oldest["id"], newest["id"]]

    page = panel_get(stub, "/captures", cookie)
    assert page.status == 200
    assert b'<table id="captures"' in page.body and b"/api/captures/export" in page.body
    assert b'href="/captures"' in page.body  # in the navigation


def test_capture_json_matches_the_openapi_schema(tmp_path: Path) -> None:
    from browser.panel import OPENAPI
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource(
        "urn:o", Resource.from_contents(OPENAPI, default_specification=DRAFT202012)
    )
    schema = {"$ref": "urn:o#/components/schemas/Capture"}
    for capture in (a_capture(1), replace(a_capture(2), tls=None, body=b"\xff")):
        Draft202012Validator(schema, registry=registry).validate(capture_json(capture))

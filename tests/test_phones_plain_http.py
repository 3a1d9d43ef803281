"""The internal plain-HTTP listener in process, and the base URLs the answers carry.

Lync served the internal side over plain HTTP and told phones `http://<internal name>`
in BaseURL (docs/protocol.md §1); the appliance does the same by default, and never
serves an external request over plain HTTP. The requests go through a real GuardedSite
built as `serve` builds the plain listener's, over treq's in-memory transport; the
client's address is 127.0.0.1, and a test that needs an outside client makes 127.0.0.1 a
trusted proxy and names the client in X-Forwarded-For.
"""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from treq.testing import StubTreq
from twisted.logger import LogEvent

from appliance.catalogue import (
    sample_check,
)
from appliance.config import Config, ConfigError
from appliance.passwords import hash_password
from appliance.phones import Authenticator, BaseUrls, LocalDirectory, PhoneService
from appliance.testing import FixedClock, approved_sample, config_from, inline, phone_client, settle

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
HOST = "http://ucupdates.test"
CHECK = f"{HOST}/RequestHandler/ucdevice.upx"
CHECK_EXT = f"{HOST}/RequestHandlerExt/ucdevice.upx"
UPLOAD = f"{HOST}/RequestHandler/Files?filename=crash.dmp"
XML = {"Content-Type": ["text/xml"]}
OUTSIDE = "203.0.113.7"  # a documentation address: outside every internal network
INSIDE = "10.1.2.3"
RUNNING, APPROVED = "4.0.7577.4366", "4.0.7577.4400"
# 127.0.0.1 (the in-memory client) is a reverse proxy: X-Forwarded-For names the client.
BEHIND_PROXY = '[zones]\ntrusted_proxies = ["127.0.0.1/32"]\n'


@dataclass
class Phones:
    config: Config
    service: PhoneService
    plain: StubTreq  # the internal plain-HTTP listener
    https: StubTreq  # the internal HTTPS listener (its TLS is not the point here)


def make_phones(tmp_path: Path, toml: str = "") -> Iterator[Phones]:
    config = config_from(tmp_path, 'data_dir = "data"\n' + toml)
    store = approved_sample(config, FixedClock(NOW), version=APPROVED)
    authenticator = Authenticator(
        LocalDirectory(lambda: store), config.auth, lambda: 0.0, run_blocking=inline
    )
    service = PhoneService(config, store, authenticator, lambda: NOW)
    try:
        yield Phones(config, service, phone_client(service, plain_http=True), phone_client(service))
    finally:
        service.close()
        store.close()


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[Phones]:
    yield from make_phones(tmp_path, BEHIND_PROXY)


def call(
    stub: StubTreq,
    method: str,
    url: str,
    body: bytes = b"",
    client: str | None = None,
    headers: dict[str, list[str]] | None = None,
) -> tuple[int, dict[str, list[str]], bytes]:
    sent = dict(headers or {})
    if client is not None:
        sent["X-Forwarded-For"] = [client]
    response = settle(stub, stub.request(method, url, data=body or None, headers=sent))
    content = settle(stub, response.content())
    return response.code, dict(response.headers.getAllRawHeaders()), content


def answer(body: bytes) -> dict[str, str | None]:
    return {e.tag: e.text for e in ET.fromstring(body).iter()}


def refusals(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if e.get("event") == "http.external_refused"]


# -- inside: everything, as on HTTPS -----------------------------------------------------------


def test_an_internal_phone_checks_downloads_and_uploads_over_plain_http(phones: Phones) -> None:
    code, _, body = call(phones.plain, "POST", CHECK, sample_check(RUNNING), INSIDE, XML)
    assert code == 200
    offer = answer(body)
    assert offer["Version"] == APPROVED
    base = offer["BaseURL"] or ""
    assert base.startswith("http://ucupdates-r2.example.com:8080/DeviceUpdateFiles_Int/")
    external = offer["ExternalBaseURL"] or ""
    assert external.startswith("https://ucupdates-r2.example.com:8444/DeviceUpdateFiles_Ext/")

    path = base.split("://", 1)[1].split("/", 1)[1] + "/" + (offer["FileName"] or "")
    code, _, image = call(phones.plain, "GET", f"{HOST}/{path}", client=INSIDE)
    assert code == 200
    assert hashlib.sha256(image).hexdigest() == offer["SHA256"]

    code, _, _ = call(phones.plain, "PUT", UPLOAD, b"MDMP crash", INSIDE)
    assert code == 201
    assert list((phones.config.logs_dir / "Client" / "Watson").iterdir())


# -- outside: 403 and an event, whatever the path ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        pytest.param("POST", CHECK, sample_check(RUNNING), id="check"),
        pytest.param("POST", CHECK_EXT, sample_check(RUNNING), id="ext-check"),
        pytest.param(
            "GET", f"{HOST}/DeviceUpdateFiles_Int/UCPhone/Polycom/CX600/A/ENU/x", b"", id="file"
        ),
        pytest.param("PUT", UPLOAD, b"MDMP crash", id="upload"),
    ],
)
def test_an_external_client_is_refused_on_plain_http_with_an_event(
    phones: Phones, log_events: list[LogEvent], method: str, url: str, body: bytes
) -> None:
    code, headers, text = call(phones.plain, method, url, body, OUTSIDE, XML)
    assert code == 403
    assert b"HTTPS" in text
    assert b"WWW-Authenticate" not in headers  # no credentials are asked for, or taken
    [event] = refusals(log_events)
    assert event["client"] == OUTSIDE
    assert not (phones.config.logs_dir / "Client").exists()


def test_right_credentials_do_not_open_plain_http_to_an_external_client(phones: Phones) -> None:
    with phones.service.store.transaction():
        phones.service.store.add_user("phone1", hash_password("right password 1"))
    token = base64.b64encode(b"phone1:right password 1").decode()
    basic = {"Authorization": [f"Basic {token}"], **XML}
    code, _, _ = call(phones.plain, "POST", CHECK_EXT, sample_check(), OUTSIDE, basic)
    assert code == 403
    code, _, _ = call(phones.https, "POST", CHECK_EXT, sample_check(), OUTSIDE, basic)
    assert code == 200  # the same request over HTTPS is answered


@pytest.mark.parametrize("url", [CHECK_EXT, f"{HOST}/DeviceUpdateFiles_Ext/UCPhone/x"])
def test_ext_paths_are_refused_on_plain_http_even_from_inside(
    phones: Phones, log_events: list[LogEvent], url: str
) -> None:
    method = "POST" if url == CHECK_EXT else "GET"
    code, _, _ = call(phones.plain, method, url, sample_check(), INSIDE, XML)
    assert code == 403
    assert [e["client"] for e in refusals(log_events)] == [INSIDE]


def test_the_same_external_client_on_https_is_challenged_not_refused(
    phones: Phones, log_events: list[LogEvent]
) -> None:
    code, headers, _ = call(phones.https, "POST", CHECK, sample_check(), OUTSIDE, XML)
    assert code == 401
    assert b"WWW-Authenticate" in headers
    assert refusals(log_events) == []


def test_x_forwarded_for_from_an_untrusted_peer_is_not_believed(tmp_path: Path) -> None:
    for phones in make_phones(tmp_path):  # 127.0.0.1 is no proxy here: it is the client
        code, _, _ = call(phones.plain, "POST", CHECK, sample_check(), OUTSIDE, XML)
        assert code == 200


def test_a_client_outside_the_internal_networks_is_refused_without_a_proxy(
    tmp_path: Path,
) -> None:
    for phones in make_phones(tmp_path, '[zones]\ninternal_networks = ["10.0.0.0/8"]\n'):
        code, _, _ = call(phones.plain, "POST", CHECK, sample_check())
        assert code == 403


# -- BaseURL and ExternalBaseURL follow the config ----------------------------------------------


@pytest.mark.parametrize(
    ("toml", "internal", "external"),
    [
        pytest.param(
            "",
            "http://ucupdates-r2.example.com:8080",
            "https://ucupdates-r2.example.com:8444",
            id="defaults",
        ),
        pytest.param(
            '[listeners]\ninternal_http = "0.0.0.0:80"\n',
            "http://ucupdates-r2.example.com",
            "https://ucupdates-r2.example.com:8444",
            id="port-80-omitted",
        ),
        pytest.param(
            '[listeners]\ninternal_http = ""\n',
            "https://ucupdates-r2.example.com:8443",
            "https://ucupdates-r2.example.com:8444",
            id="plain-listener-off",
        ),
        pytest.param(
            '[service]\ninternal_scheme = "https"\ninternal_port = 443\n',
            "https://ucupdates-r2.example.com",
            "https://ucupdates-r2.example.com:8444",
            id="https-inside",
        ),
        pytest.param(
            '[service]\ninternal_scheme = "https"\n',
            "https://ucupdates-r2.example.com:8443",
            "https://ucupdates-r2.example.com:8444",
            id="https-inside-listener-port",
        ),
        pytest.param(
            'domains = ["contoso.com"]\n[service]\ninternal_fqdn = "pool01.contoso.com"\n'
            'internal_port = 8081\nexternal_fqdn = "ocsrp.fabrikam.com"\nexternal_port = 443\n',
            "http://pool01.contoso.com:8081",
            "https://ocsrp.fabrikam.com",
            id="lync-trace",
        ),
        pytest.param(
            '[listeners]\ninternal_http = ""\n[service]\ninternal_scheme = "http"\n',
            "http://ucupdates-r2.example.com",
            "https://ucupdates-r2.example.com:8444",
            id="http-served-by-a-proxy-on-80",
        ),
        pytest.param(
            '[service]\nexternal_scheme = "http"\nexternal_port = 80\n',
            "http://ucupdates-r2.example.com:8080",
            "http://ucupdates-r2.example.com",
            id="external-http",
        ),
    ],
)
def test_base_urls_follow_the_config(
    tmp_path: Path, toml: str, internal: str, external: str
) -> None:
    config = config_from(tmp_path, toml)
    assert BaseUrls.from_config(config) == BaseUrls(internal, external)


def test_the_answer_carries_the_configured_base_urls(tmp_path: Path) -> None:
    toml = '[service]\ninternal_fqdn = "pool01.example.com"\ninternal_port = 80\n'
    for phones in make_phones(tmp_path, toml):
        _, _, body = call(phones.plain, "POST", CHECK, sample_check(RUNNING), headers=XML)
        assert (answer(body)["BaseURL"] or "").startswith(
            "http://pool01.example.com/DeviceUpdateFiles_Int/UCPhone/Polycom/CX600/"
        )


def test_a_scheme_that_is_neither_http_nor_https_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"service.internal_scheme.*'http', 'https'"):
        config_from(tmp_path, '[service]\ninternal_scheme = "ftp"\n')


# -- nothing to offer: empty BaseURL elements, when asked -----------------------------------------


@pytest.mark.parametrize("empty", [False, True])
def test_empty_base_url_elements_are_sent_with_nothing_to_offer_only_when_asked(
    tmp_path: Path, empty: bool
) -> None:
    toml = f"[service]\nempty_base_urls = {str(empty).lower()}\n"
    for phones in make_phones(tmp_path, toml):
        _, _, body = call(phones.plain, "POST", CHECK, sample_check(APPROVED), headers=XML)
        root = ET.fromstring(body)
        assert root.findtext("Downloads") == "0"
        tags = [e.tag for e in root]
        if empty:
            assert tags == ["Downloads", "BaseURL", "ExternalBaseURL"]
            assert all(not (e.text or "") and len(e) == 0 for e in root[1:])
        else:
            assert tags == ["Downloads"]
        _, _, offered = call(phones.plain, "POST", CHECK, sample_check(RUNNING), headers=XML)
        assert (answer(offered)["BaseURL"] or "").startswith("http://")

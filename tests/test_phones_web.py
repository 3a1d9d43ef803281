"""The phones' listeners in process: a real GuardedSite and real HTTP, over memory.

Routing, zones, credentials and answers, each in milliseconds: the requests go through
Twisted's HTTP parser, the admission guard and the phone resource exactly as on a
socket, but over treq's in-memory transport (no ports, no processes). The end-to-end
tests in test_serve.py keep what only a real process shows (TLS, timeouts, limits).
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

from appliance.catalogue import sample_check
from appliance.config import Config, load_config
from appliance.passwords import hash_password
from appliance.phones import Authenticator, LocalDirectory, PhoneService
from appliance.store import Store
from appliance.testing import FixedClock, approved_sample, inline, phone_client, settle

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
CHECK_INT = "http://ucupdates.test/RequestHandler/ucdevice.upx"
CHECK_EXT = "http://ucupdates.test/RequestHandlerExt/ucdevice.upx"
CONTENT_TYPE = {"Content-Type": ["text/xml"]}


@dataclass
class Phones:
    config: Config
    store: Store
    service: PhoneService
    internal: StubTreq
    external: StubTreq


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[Phones]:
    config = load_config(None, tmp_path / "data")
    store = approved_sample(config, FixedClock(NOW), version="4.0.7577.4400")
    with store.transaction():
        store.add_user("phone1", hash_password("right password 1"))
    authenticator = Authenticator(
        LocalDirectory(lambda: store), config.auth, lambda: 0.0, run_blocking=inline
    )
    service = PhoneService(config, store, authenticator, lambda: NOW)
    yield Phones(
        config,
        store,
        service,
        phone_client(service),
        phone_client(service, external=True),
    )
    service.close()
    store.close()


def basic(user: str, password: str) -> dict[str, list[str]]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": [f"Basic {token}"], **CONTENT_TYPE}


def offered(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)
    return {e.tag: (e.text or "") for e in root.iter()}


def post(stub: StubTreq, url: str, body: bytes, headers: dict[str, list[str]]) -> tuple[int, bytes]:
    response = settle(stub, stub.post(url, data=body, headers=headers))
    return response.code, settle(stub, response.content())


def get(stub: StubTreq, url: str, headers: dict[str, list[str]] | None = None) -> tuple[int, bytes]:
    response = settle(stub, stub.get(url, headers=headers or {}))
    return response.code, settle(stub, response.content())


def test_an_internal_phone_on_an_old_version_is_offered_the_approved_one(phones: Phones) -> None:
    code, body = post(phones.internal, CHECK_INT, sample_check("4.0.7577.4366"), CONTENT_TYPE)
    assert code == 200
    fields = offered(body)
    assert fields["Downloads"] == "1"
    assert fields["Version"] == "4.0.7577.4400"
    assert fields["BaseURL"].endswith(
        "/DeviceUpdateFiles_Int/UCPhone/Polycom/CX600/A/ENU/4.0.7577.4400/CPE"
    )
    assert "/DeviceUpdateFiles_Ext/" in fields["ExternalBaseURL"]


def test_a_phone_on_the_approved_version_gets_nothing_to_do(phones: Phones) -> None:
    code, body = post(phones.internal, CHECK_INT, sample_check("4.0.7577.4400"), CONTENT_TYPE)
    assert code == 200
    assert offered(body)["Downloads"] == "0"
    assert "BaseURL" not in offered(body)


def test_the_offered_image_downloads_with_its_bytes(phones: Phones) -> None:
    _, body = post(phones.internal, CHECK_INT, sample_check("4.0.7577.4366"), CONTENT_TYPE)
    fields = offered(body)
    path = fields["BaseURL"].split("/DeviceUpdateFiles_Int/", 1)[1] + "/" + fields["FileName"]
    code, data = get(phones.internal, f"http://ucupdates.test/DeviceUpdateFiles_Int/{path}")
    assert code == 200
    assert hashlib.sha256(data).hexdigest() == fields["SHA256"]
    assert len(data) == int(fields["Size"])


@pytest.mark.parametrize(
    "path",
    ["/RequestHandler/nothing.upx", "/DeviceUpdateFiles_Int/../ucupdates.db", "/"],
)
def test_paths_that_are_not_the_phones_are_not_found(phones: Phones, path: str) -> None:
    code, _ = get(phones.internal, f"http://ucupdates.test{path}")
    assert code == 404


def test_an_external_check_without_credentials_is_challenged(phones: Phones) -> None:
    response = settle(phones.external, phones.external.post(CHECK_EXT, data=sample_check()))
    assert response.code == 401
    challenge = response.headers.getRawHeaders("WWW-Authenticate")
    realm = phones.config.auth.realm
    assert challenge == [f'Basic realm="{realm}", charset="UTF-8"']


def test_an_external_check_with_a_wrong_password_is_refused(phones: Phones) -> None:
    code, _ = post(phones.external, CHECK_EXT, sample_check(), basic("phone1", "wrong"))
    assert code == 401


def test_an_external_check_with_the_right_password_is_answered_with_external_urls(
    phones: Phones,
) -> None:
    code, body = post(
        phones.external, CHECK_EXT, sample_check(), basic("phone1", "right password 1")
    )
    assert code == 200
    assert offered(body)["Downloads"] == "1"


def test_an_unparsable_check_is_a_client_error_and_the_next_is_answered(phones: Phones) -> None:
    code, _ = post(phones.internal, CHECK_INT, b"<Request><Model>", CONTENT_TYPE)
    assert 400 <= code < 500
    code, _ = post(phones.internal, CHECK_INT, sample_check(), CONTENT_TYPE)
    assert code == 200

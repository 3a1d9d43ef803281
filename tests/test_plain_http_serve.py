"""The plain-HTTP listener of a real `ucupdates serve`, spoken to by curl.

Lync served the internal side over plain HTTP (docs/protocol.md §1). Here the appliance
runs as a process with every listener on a free loopback port; its internal networks are
127.0.0.1 alone, so curl bound to 127.0.0.2 is an outside client, and 127.0.0.3 is a
trusted reverse proxy whose X-Forwarded-For names the client. Events are read from the
process's JSON log.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.catalogue.sample import sample_check
from appliance.testing import run_cli, serving

FQDN = "ucupdates-r2.example.com"
INSIDE, OUTSIDE, PROXY = "127.0.0.1", "127.0.0.2", "127.0.0.3"
RUNNING, APPROVED = "4.0.7577.4366", "4.0.7577.4400"
STARTUP_SECONDS = 20.0
CURL_SECONDS = 10


@dataclass
class Served:
    data: Path
    ports: dict[str, int]
    log: Path

    def curl(
        self,
        path: str,
        *,
        source: str = INSIDE,
        body: bytes | None = None,
        headers: tuple[str, ...] = (),
        method: str | None = None,
    ) -> tuple[int, bytes]:
        """curl over plain HTTP from `source` to the plain listener, by the service's name."""
        port = self.ports["internal-http"]
        argv = ["curl", "-sS", "--max-time", str(CURL_SECONDS), "--interface", source]
        argv += ["--resolve", f"{FQDN}:{port}:127.0.0.1", "-o", "-", "-w", "\n%{http_code}"]
        for header in headers:
            argv += ["-H", header]
        if body is not None:
            argv += ["-H", "Content-Type: text/xml", "--data-binary", "@-"]
        if method is not None:
            argv += ["-X", method]
        url = path if path.startswith("http") else f"http://{FQDN}:{port}{path}"
        done = subprocess.run(
            [*argv, url], input=body, capture_output=True, timeout=CURL_SECONDS + 5
        )
        assert done.returncode == 0, done.stderr
        content, _, code = done.stdout.rpartition(b"\n")
        return int(code), content

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log's events called `name` so far."""
        found = []
        for record in self.log.read_text().split("\x1e"):
            if record.strip():
                event = json.loads(record)
                if event.get("event") == name:
                    found.append(event)
        return found


def _cli(data: Path, *args: str) -> None:
    done = run_cli(data, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("plain")
    data = base / "data"
    package = base / "UCUpdates.cab"
    _cli(data, "make-sample-package", str(package), "--version", APPROVED, "--image-size", "5000")
    _cli(data, "import", str(package))
    _cli(data, "approve", "--all-pending")
    config = base / "ucupdates.toml"
    config.write_text(
        f"data_dir = {json.dumps(str(data))}\n"
        "[listeners]\n"
        + "".join(
            f'{name} = "127.0.0.1:0"\n'
            for name in ("dns", "admin", "internal_https", "external_https", "internal_http")
        )
        + f'[zones]\ninternal_networks = ["{INSIDE}/32"]\ntrusted_proxies = ["{PROXY}/32"]\n'
    )
    with serving(config, base / "serve.json", "--log-format", "json") as running:
        ports = running.ports
        assert {"internal-http", "internal-https", "external-https"} <= set(ports), ports
        yield Served(data, ports, running.log)


def offer(body: bytes) -> dict[str, str]:
    return {e.tag: e.text or "" for e in ET.fromstring(body).iter()}


def test_an_internal_phone_checks_and_downloads_over_plain_http(served: Served) -> None:
    code, body = served.curl("/RequestHandler/ucdevice.upx", body=sample_check(RUNNING))
    assert code == 200, body
    fields = offer(body)
    assert fields["Version"] == APPROVED
    base = fields["BaseURL"]
    prefix = f"http://{FQDN}:{served.ports['internal-http']}/DeviceUpdateFiles_Int/"
    assert base.startswith(prefix), base
    assert fields["ExternalBaseURL"].startswith(
        f"https://{FQDN}:{served.ports['external-https']}/DeviceUpdateFiles_Ext/"
    )
    code, image = served.curl(f"{base}/{fields['FileName']}")  # the URL as the phone gets it
    assert code == 200
    assert len(image) == int(fields["Size"])
    assert hashlib.sha256(image).hexdigest() == fields["SHA256"]
    assert served.events("http.external_refused") == []


def test_an_internal_phone_uploads_its_log_over_plain_http(served: Served) -> None:
    code, _ = served.curl(
        "/RequestHandler/Files?filename=crash.dmp", body=b"MDMP plain", method="PUT"
    )
    assert code == 201
    stored = list((served.data / "Logs" / "Client" / "Watson").iterdir())
    assert [p.read_bytes() for p in stored] == [b"MDMP plain"]


def test_an_external_address_is_refused_a_check_and_a_download(served: Served) -> None:
    _, body = served.curl("/RequestHandler/ucdevice.upx", body=sample_check(RUNNING))
    fields = offer(body)
    image_url = f"{fields['BaseURL']}/{fields['FileName']}"
    before = len(served.events("http.external_refused"))

    code, text = served.curl(
        "/RequestHandler/ucdevice.upx", source=OUTSIDE, body=sample_check(RUNNING)
    )
    assert (code, text) == (403, b"external requests need HTTPS\n")
    code, image = served.curl(image_url, source=OUTSIDE)
    assert code == 403 and len(image) < 100

    refused = served.events("http.external_refused")[before:]
    assert [(e["client"], e["path"]) for e in refused] == [
        (OUTSIDE, "/RequestHandler/ucdevice.upx"),
        (OUTSIDE, "/" + image_url.split("/", 3)[3]),
    ]


def test_behind_a_trusted_proxy_the_forwarded_client_decides(served: Served) -> None:
    check = "/RequestHandler/ucdevice.upx"
    outside = ("X-Forwarded-For: 203.0.113.7",)
    code, _ = served.curl(check, source=PROXY, body=sample_check(), headers=outside)
    assert code == 403
    inside = (f"X-Forwarded-For: {INSIDE}",)
    code, _ = served.curl(check, source=PROXY, body=sample_check(), headers=inside)
    assert code == 200
    assert served.events("http.external_refused")[-1]["client"] == "203.0.113.7"


def test_ext_paths_are_refused_on_plain_http_even_from_inside(served: Served) -> None:
    code, _ = served.curl("/RequestHandlerExt/ucdevice.upx", body=sample_check())
    assert code == 403
    code, _ = served.curl("/DeviceUpdateFiles_Ext/UCPhone/Polycom/CX600/A/ENU/x/CPE/CPE.nbt")
    assert code == 403

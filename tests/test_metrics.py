"""/metrics in process: what the collector shows after real checks, bounded labels, no
secrets, and who may scrape (the admin listener's site and the own listener's)."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import Deferred

from appliance.admin import add_account, make_admin_site
from appliance.catalogue import Reason, RolloutReason, make_sample_package, sample_check
from appliance.config import Config, Network, load_config
from appliance.discovery.dhcp_answer import Outcome as DhcpOutcome
from appliance.ops import Readings, make_registry, metrics_site
from appliance.ops.metrics import CHECK_OUTCOMES, DHCP_OUTCOMES, OTHER, StoreFigures, bounded
from appliance.ops.metrics_web import allowed
from appliance.passwords import hash_password
from appliance.phones import Authenticator, LocalDirectory, PhoneService
from appliance.phones.slots import DownloadLimit, DownloadSlots, Slot
from appliance.service import serve_metrics
from appliance.store import Store
from appliance.testing import (
    FixedClock,
    InlineReactor,
    approved_sample,
    inline,
    memory_client,
    phone_client,
    seen_device,
    settle,
)
from appliance.web import Limits

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
APPROVED = "4.0.7577.4400"
CHECK_INT = "http://ucupdates.test/RequestHandler/ucdevice.upx"
CHECK_EXT = "http://ucupdates.test/RequestHandlerExt/ucdevice.upx"
XML = {"Content-Type": ["text/xml"]}
METRICS = "http://ucupdates.test/metrics"
SECRET_USER = "phone-user-7"


@dataclass
class Appliance:
    config: Config
    store: Store
    phone: PhoneService
    authenticator: Authenticator
    readings: Readings


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Appliance]:
    config = load_config(None, tmp_path / "data")
    store = approved_sample(config, FixedClock(NOW), version=APPROVED)
    with store.transaction():
        store.add_user(SECRET_USER, hash_password("the right one"))
    authenticator = Authenticator(
        LocalDirectory(lambda: store), config.auth, lambda: 0.0, run_blocking=inline
    )
    phone = PhoneService(config, store, authenticator, lambda: NOW)
    readings = Readings(  # as make_service wires them
        checks=lambda: phone.records.checks,
        offers=lambda: phone.records.offers,
        last_check=lambda: phone.records.last_check,
        downloads=phone.downloads.slots.figures,
        auth=lambda: authenticator.counts,
        certificate_expiry=lambda: datetime(2027, 1, 5, tzinfo=UTC),
        store=store,
    )
    yield Appliance(config, store, phone, authenticator, readings)
    phone.close()
    store.close()


def scrape(readings: Readings) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The exposition text, and every sample by (name, sorted labels)."""
    registry, _ = make_registry(readings)
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def post(stub: StubTreq, url: str, body: bytes, headers: dict[str, list[str]]) -> int:
    response = settle(stub, stub.post(url, data=body, headers=headers))
    settle(stub, response.content())
    return int(response.code)


def basic(user: str, password: str) -> dict[str, list[str]]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": [f"Basic {token}"], **XML}


def test_checks_offers_auth_failures_and_inventory_after_real_checks(appliance: Appliance) -> None:
    internal = phone_client(appliance.phone)
    external = phone_client(appliance.phone, external=True)
    assert post(internal, CHECK_INT, sample_check("4.0.7577.4366"), XML) == 200  # offered
    assert post(internal, CHECK_INT, sample_check(APPROVED, mac="00-04-f2-00-00-02"), XML) == 200
    assert post(external, CHECK_EXT, sample_check(), basic(SECRET_USER, "a guess")) == 401
    appliance.phone.flush_inventory()

    _, samples = scrape(appliance.readings)

    def checks(zone: str, outcome: str) -> float:
        return samples["ucupdates_checks_total", (("outcome", outcome), ("zone", zone))]

    assert checks("internal", "approved") == 1
    assert checks("internal", "up-to-date") == 1
    assert checks("external", "approved") == 0  # refused before any decision
    assert samples["ucupdates_offers_total", (("model", "CX600"), ("version", APPROVED))] == 1
    assert samples["ucupdates_auth_failures_total", ()] == 1
    assert samples["ucupdates_auth_lockouts_total", (("scope", "user"),)] == 0
    assert samples["ucupdates_last_check_timestamp_seconds", ()] == NOW.timestamp()
    # the first phone still reports its old version, which the catalogue has no update of
    assert samples["ucupdates_devices", (("model", "CX600"), ("version", OTHER))] == 1
    assert samples["ucupdates_devices", (("model", "CX600"), ("version", APPROVED))] == 1
    assert samples["ucupdates_catalogue_rules", (("state", "approved"),)] >= 1
    assert samples["ucupdates_catalogue_files", ()] >= 1
    assert samples["ucupdates_downloads_in_flight", ()] == 0
    assert (
        samples["ucupdates_certificate_expiry_timestamp_seconds", ()]
        == datetime(2027, 1, 5, tzinfo=UTC).timestamp()
    )
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)
    build = [labels for name, labels in samples if name == "ucupdates_build_info"]
    assert build and build[0][0][0] == "version"


def test_lockouts_are_counted_by_scope(appliance: Appliance) -> None:
    external = phone_client(appliance.phone, external=True)
    for attempt in range(appliance.config.auth.max_failures + 1):
        post(external, CHECK_EXT, sample_check(), basic(SECRET_USER, f"guess {attempt}"))
    _, samples = scrape(appliance.readings)
    assert samples["ucupdates_auth_lockouts_total", (("scope", "user"),)] == 1
    assert samples["ucupdates_auth_lockouts_total", (("scope", "user_source"),)] == 1
    assert samples["ucupdates_auth_failures_total", ()] == appliance.config.auth.max_failures + 1


def test_nothing_a_phone_or_user_sent_appears_in_the_output(appliance: Appliance) -> None:
    internal = phone_client(appliance.phone)
    external = phone_client(appliance.phone, external=True)
    post(internal, CHECK_INT, sample_check(), XML)
    post(external, CHECK_EXT, sample_check(), basic(SECRET_USER, "a guess"))
    appliance.phone.flush_inventory()
    text, _ = scrape(appliance.readings)
    mac = appliance.store.devices()[0].mac
    assert mac and mac not in text and mac.replace("-", "") not in text
    assert SECRET_USER not in text
    assert "127.0.0.1" not in text and "the right one" not in text


def test_models_and_versions_the_catalogue_does_not_know_are_other(appliance: Appliance) -> None:
    with appliance.store.transaction():
        seen = [("CX600", "9.9.9.9"), ("<script>", APPROVED), ("Made up", "1"), ("cx600", APPROVED)]
        for n, (model, version) in enumerate(seen):
            device = seen_device(mac=f"00-04-f2-00-01-{n:02x}", version=version, model=model)
            appliance.store.record_device(device)
    figures = StoreFigures.read(appliance.store)
    assert figures.devices == {("CX600", OTHER): 1, (OTHER, OTHER): 2, ("CX600", APPROVED): 1}
    offers = {("CX600", APPROVED): 3, ("CX600", "0.0.0.1"): 1, ("Random", "x"): 2}
    assert bounded(offers, figures.known) == {
        ("CX600", APPROVED): 3,
        ("CX600", OTHER): 1,
        (OTHER, OTHER): 2,
    }


def test_allowed_networks_judge_the_peer_address() -> None:
    loopback = (Network.parse("127.0.0.0/8"), Network.parse("::1/128"))
    assert allowed("127.0.0.1", loopback)
    assert allowed("::1", loopback)
    assert allowed("::ffff:127.0.0.2", loopback)  # IPv4-mapped, as a dual-stack socket sees it
    assert not allowed("10.0.0.5", loopback)
    assert not allowed("fe80::1%eth0", loopback)
    assert not allowed("", loopback)
    assert allowed("fe80::1%eth0", (Network.parse("fe80::/10"),))


def get(stub: StubTreq, url: str) -> tuple[int, bytes, str]:
    response = settle(stub, stub.get(url))
    body = settle(stub, response.content())
    kind = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()
    return int(response.code), body, kind


def own_listener(appliance: Appliance, networks: tuple[Network, ...]) -> StubTreq:
    registry, _ = make_registry(appliance.readings)
    limits = Limits.of(appliance.config.service, 16)
    return memory_client(lambda reactor: metrics_site(registry, networks, limits, reactor))


def test_own_listener_serves_metrics_to_the_allowed_networks_only(appliance: Appliance) -> None:
    stub = own_listener(appliance, appliance.config.metrics.allowed_networks)  # loopback
    code, body, kind = get(stub, METRICS)
    assert code == 200 and kind.startswith("text/plain")
    assert b"ucupdates_checks_total" in body
    assert get(stub, "http://ucupdates.test/health")[0] == 404
    elsewhere = own_listener(appliance, (Network.parse("10.0.0.0/8"),))
    code, body, _ = get(elsewhere, METRICS)
    assert code == 403 and b"ucupdates_" not in body


def admin_listener(appliance: Appliance, config: Config) -> StubTreq:
    def make(reactor: object) -> object:
        site = make_admin_site(config, appliance.store, lambda: NOW, reactor)
        serve_metrics(config, make_registry(appliance.readings)[0], None, site, reactor)
        return site

    return memory_client(make)


def test_admin_listener_serves_metrics_to_the_allowed_networks_only(appliance: Appliance) -> None:
    code, body, _ = get(admin_listener(appliance, appliance.config), METRICS)
    assert code == 200 and b"ucupdates_checks_total" in body  # no session needed
    others = dataclasses.replace(
        appliance.config,
        metrics=dataclasses.replace(
            appliance.config.metrics, allowed_networks=(Network.parse("192.0.2.0/24"),)
        ),
    )
    code, body, _ = get(admin_listener(appliance, others), METRICS)
    assert code == 403 and b"ucupdates_" not in body


def test_openmetrics_when_the_scraper_asks_for_it(appliance: Appliance) -> None:
    stub = own_listener(appliance, appliance.config.metrics.allowed_networks)
    accept = {"Accept": ["application/openmetrics-text;version=1.0.0,text/plain;q=0.5"]}
    response = settle(stub, stub.get(METRICS, headers=accept))
    body = settle(stub, response.content())
    kind = response.headers.getRawHeaders(b"content-type")[0]
    assert kind.startswith(b"application/openmetrics-text") and body.endswith(b"# EOF\n")


def test_uploaded_imports_are_timed_and_counted_by_result(
    appliance: Appliance, tmp_path: Path
) -> None:
    registry, imports = make_registry(appliance.readings)
    add_account(appliance.store, "alice", "admin", "correct horse battery", "test")
    site = memory_client(
        lambda _: make_admin_site(
            appliance.config, appliance.store, lambda: NOW, InlineReactor(),
            observe_import=imports.observe,
        )
    )  # fmt: skip
    base = "https://ucupdates.test:9443"
    origin = {"Origin": [base], "Accept": ["application/json"]}
    login = {"name": "alice", "password": "correct horse battery"}
    response = settle(site, site.post(f"{base}/api/login", json=login, headers=origin))
    csrf = json.loads(settle(site, response.content()))["csrf_token"]
    cookie = response.headers.getRawHeaders("Set-Cookie")[0].split(";", 1)[0]
    headers = {**origin, "Cookie": [cookie], "X-CSRF-Token": [csrf]}
    newer = tmp_path / "newer.cab"
    make_sample_package(newer, version="4.0.7577.4500", image_size=3000)
    for name, data in (("newer.cab", newer.read_bytes()), ("bad.cab", b"MSCF" + b"\0" * 200)):
        url = f"{base}/api/packages?name={name}"
        response = settle(site, site.post(url, data=data, headers=headers))
        settle(site, response.content())
    text = generate_latest(registry).decode()
    assert 'ucupdates_imports_total{result="imported"} 1.0' in text
    assert 'ucupdates_imports_total{result="refused"} 1.0' in text
    assert "ucupdates_import_duration_seconds_count 2.0" in text


def test_a_store_that_cannot_be_read_leaves_the_other_metrics_served(tmp_path: Path) -> None:
    config = load_config(None, tmp_path / "data")
    store = approved_sample(config, FixedClock(NOW), version=APPROVED)
    store.close()  # every read now fails
    _, samples = scrape(Readings(checks=lambda: {("internal", "approved"): 2}, store=store))
    assert samples["ucupdates_checks_total", (("outcome", "approved"), ("zone", "internal"))] == 2
    assert not any(name.startswith("ucupdates_catalogue") for name, _ in samples)


def test_with_an_offload_a_scrape_never_reads_the_store(appliance: Appliance) -> None:
    """On PostgreSQL the store's figures are read in a thread (`Readings.offload`): a
    scrape starts the read, shows the last figures read, and starts no second read."""
    reads: list[tuple[Deferred[StoreFigures], Callable[[], StoreFigures]]] = []

    def offload(work: Callable[[], StoreFigures]) -> Deferred[StoreFigures]:
        reads.append((Deferred(), work))
        return reads[-1][0]

    registry, _ = make_registry(dataclasses.replace(appliance.readings, offload=offload))
    assert "ucupdates_catalogue" not in generate_latest(registry).decode()
    assert "ucupdates_catalogue" not in generate_latest(registry).decode()
    assert len(reads) == 1
    done, work = reads.pop()
    done.callback(work())  # what the thread does, and its result coming back
    assert "ucupdates_catalogue" in generate_latest(registry).decode()
    assert reads == []


def test_a_download_is_counted_with_its_bytes(appliance: Appliance) -> None:
    stored = next(f for f in appliance.store.stored_files() if f.version == APPROVED)
    stub = phone_client(appliance.phone)
    response = settle(stub, stub.get(f"http://ucupdates.test/DeviceUpdateFiles_Int/{stored.path}"))
    body = settle(stub, response.content())
    assert response.code == 200 and len(body) == stored.size
    _, samples = scrape(appliance.readings)
    assert samples["ucupdates_downloads_total", (("result", "complete"),)] == 1
    assert samples["ucupdates_download_sent_bytes_total", ()] == stored.size
    assert samples["ucupdates_downloads_in_flight", ()] == 0


def test_download_slots_count_refusals_and_interrupted_bodies() -> None:
    slots = DownloadSlots(total=1, per_client=1)
    slot = slots.take("10.0.0.1")
    assert isinstance(slot, Slot)
    assert slots.take("10.0.0.2") is DownloadLimit.ALL
    slot.release(4096, complete=False)
    slot.release(4096, complete=False)  # once only
    assert slots.figures() == {
        "active": 0,
        "bytes": 4096,
        "complete": 0,
        "interrupted": 1,
        "refused": 1,
    }


def test_every_decision_reason_has_its_checks_series() -> None:
    reasons = (*Reason, *RolloutReason)  # a rollout policy answers with its own reasons
    assert tuple(reason.value for reason in reasons) == CHECK_OUTCOMES
    assert tuple(outcome.value for outcome in DhcpOutcome) == DHCP_OUTCOMES

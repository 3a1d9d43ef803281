"""A rollout network's cap on concurrent downloads (phones/slots.py, downloads.py), in
process; the answers go through the phone routes over memory as in test_downloads.py."""

from __future__ import annotations

from appliance import catalogue
from appliance.model import DownloadWindows, ExternalPolicy, NetworkPolicy, Zone, parse_network
from appliance.phones.slots import DownloadLimit, DownloadSlots, Slot
from tests.test_downloads import Phones, fetch, whole
from tests.test_downloads import phones as phones  # the fixture

ALWAYS = DownloadWindows("UTC")


def test_a_cap_counts_the_slots_of_its_network_and_gives_them_back() -> None:
    slots = DownloadSlots(total=10, per_client=5)
    branch = ("10.20.0.0/16", 2)
    a, b = slots.take("10.20.0.1", branch), slots.take("10.20.0.2", branch)
    assert slots.take("10.20.0.3", branch) is DownloadLimit.NETWORK
    assert isinstance(slots.take("10.30.0.1", ("10.30.0.0/16", 2)), Slot)
    assert isinstance(slots.take("10.40.0.1"), Slot)  # no cap
    assert isinstance(a, Slot) and isinstance(b, Slot)
    a.release()
    a.release()
    assert slots.by_group == {"10.20.0.0/16": 1, "10.30.0.0/16": 1}
    assert isinstance(slots.take("10.20.0.3", branch), Slot)
    assert slots.refused == 1


def test_the_answers_name_the_cap_of_the_clients_network(phones: Phones) -> None:
    store, answers = phones.store, phones.service.answers
    assert answers.download_cap("127.0.0.1", Zone.INTERNAL) is None
    catalogue.set_network(store, NetworkPolicy(parse_network("127.0.0.0/8"), ALWAYS, 1), "a")
    catalogue.set_external(store, ExternalPolicy(None, max_downloads=7), "a")
    answers.policy()  # reloaded
    assert answers.download_cap("127.0.0.1", Zone.INTERNAL) == ("127.0.0.0/8", 1)
    assert answers.download_cap("10.0.0.1", Zone.INTERNAL) is None
    assert answers.download_cap("127.0.0.1", Zone.EXTERNAL) == ("external zone", 7)


def test_a_phone_past_its_networks_cap_is_told_to_retry(phones: Phones) -> None:
    policy = NetworkPolicy(parse_network("127.0.0.0/8"), ALWAYS, max_downloads=1)
    catalogue.set_network(phones.store, policy, "alice")
    phones.service.answers.policy()
    slots = phones.service.downloads.slots
    held = slots.take("127.0.0.2", ("127.0.0.0/8", 1))  # another phone of the network
    assert isinstance(held, Slot)
    code, got, _ = fetch(phones, {})
    assert code == 503 and got["retry-after"] == str(phones.config.service.retry_after)
    held.release()
    whole(phones, {})


"""Fuzzing the codecs an attacker feeds directly: the update-check parser, the DNS answer
function, the DHCP codec and decision, the NTLM codec. Each target's invariant is in
tests/fuzz/targets.py; `make fuzz` runs the same targets under atheris for longer."""

from __future__ import annotations

import pytest
from hypothesis import given

from appliance.catalogue.package_format import PackageFormatError, parse_update_info
from appliance.discovery.dhcp_answer import Outcome, decide
from appliance.discovery.dns_answer import Action, respond
from appliance.phones.codec import CheckError, parse_check
from appliance.phones.ntlm import read_authenticate
from tests.fuzz import targets
from tests.fuzz.strategies import budget, inputs

# -- the seeds are good input: each reaches the code's answering path -----------------------


def test_the_check_seeds_are_checks() -> None:
    for seed in targets.check_seeds():
        assert parse_check(seed).model
        targets.check(seed)


def test_the_dns_seeds_reach_every_kind_of_answer() -> None:
    kinds = set()
    for seed in targets.dns_seeds():
        kinds.add(respond(seed, True, False, targets._dns_table()).kind)
        targets.dns(seed)
    assert {"answer", "nxdomain", "forward"} <= kinds


def test_the_dhcp_seeds_are_answered() -> None:
    for seed in targets.dhcp_seeds():
        outcomes = {
            decide(
                seed, targets._dhcp_answers(), "192.0.2.10", sender=s, **targets._relays()
            ).outcome
            for s in (None, "10.0.0.7", targets.RELAY)
        }
        assert Outcome.ANSWERED in outcomes
        targets.dhcp(seed)


def test_the_ntlm_seeds_hold_authenticate_messages() -> None:
    read = [s for s in targets.ntlm_seeds() if s[8:9] == b"\x03"]
    assert len(read) == 2
    for seed in targets.ntlm_seeds():
        targets.ntlm(seed)
    assert read_authenticate(read[0], bytes(8)).user == "dave"


# -- fuzzing (budgets: tests/fuzz/strategies.py) ----------------------------------------------


@budget(400)
@given(inputs("check"))
def test_fuzzed_checks_raise_only_check_error(data: bytes) -> None:
    targets.check(data)


@budget(600)
@given(inputs("dns"))
def test_fuzzed_dns_queries_get_small_replies_with_their_id_or_none(data: bytes) -> None:
    targets.dns(data)


@budget(600)
@given(inputs("dhcp"))
def test_fuzzed_dhcp_packets_round_trip_and_replies_fit(data: bytes) -> None:
    targets.dhcp(data)


@budget(600)
@given(inputs("ntlm"))
def test_fuzzed_ntlm_messages_raise_only_ntlm_error(data: bytes) -> None:
    targets.ntlm(data)


# -- crashes the fuzzing found ----------------------------------------------------------------

# An XML declaration naming an encoding expat does not know, or a multi-byte one, made
# the parser raise LookupError / ValueError instead of answering 400: an internal phone's
# check (no credentials needed) got a 500 and a logged traceback; the same in a package's
# updateInfo.xml escaped the importer as a LookupError instead of a PackageError.
BAD_ENCODINGS = [b"ttf-8", b"x-no-such-codec", b"utf-32", b"utf_32_be"]


@pytest.mark.parametrize("encoding", BAD_ENCODINGS, ids=lambda e: e.decode())
def test_a_check_naming_an_unknown_encoding_is_a_400(encoding: bytes) -> None:
    body = b'<?xml version="1.0" encoding="' + encoding + b'"?><Request/>'
    with pytest.raises(CheckError) as raised:
        parse_check(body)
    assert raised.value.status == 400


@pytest.mark.parametrize("encoding", BAD_ENCODINGS, ids=lambda e: e.decode())
def test_an_update_info_naming_an_unknown_encoding_is_a_package_error(encoding: bytes) -> None:
    body = b'<?xml version="1.0" encoding="' + encoding + b'"?><Updates/>'
    with pytest.raises(PackageFormatError, match="updateInfo.xml"):
        parse_update_info(body, [])


def test_dns_drop_is_an_action() -> None:
    assert respond(b"", True, False, targets._dns_table()).action is Action.DROP

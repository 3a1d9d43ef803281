"""The phone simulator's parts without a network: the check it sends (read by the
appliance's own parser), the answers it reads, the DHCPINFORM it sends and the DHCPACK it
reads (answered by the appliance's own responder logic), its NTLM client (checked by the
appliance's own NTLM server side), the fleet's identities, scheduler and summary.

`tests/test_phonesim_serve.py` runs it against a real `ucupdates serve`.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from appliance.cli.main import main
from appliance.discovery.dhcp_answer import InformAnswers, decide
from appliance.discovery.dhcp_codec import parse_packet
from appliance.discovery.dhcp_options import option43, option120
from appliance.model import Zone
from appliance.passwords import nt_hash
from appliance.phones.codec import parse_check
from appliance.phones.ntlm import challenge_message, check_response, read_authenticate
from appliance.phonesim import (
    MODELS,
    BadAnswer,
    FleetSpec,
    Net,
    PhoneIdentity,
    PhoneState,
    Quirk,
    Round,
    Schedule,
    Settings,
    Stats,
    authenticate,
    check_body,
    fleet,
    mac_of,
    negotiate,
    parse_answer,
    percentile,
    phone_tls,
    run_fleet,
    runs_json,
    serial_of,
    summary_text,
    system_information,
)
from appliance.phonesim.dhcp import inform_packet, read_info, read_options

PHONE = PhoneIdentity("Aastra", "6725ip", "A", "FRA", "00-04-F2-10-00-07", "64167F000007", "a<b")
SHA = "ab" * 32


# -- the check and the answer -------------------------------------------------------------


def test_the_appliance_reads_the_check_the_phone_sends() -> None:
    request = parse_check(check_body(PHONE, "4.0.7577.4366"), Zone.INTERNAL, "127.0.0.1")
    assert (request.brand, request.model, request.revision, request.locale) == (
        "Aastra",
        "6725ip",
        "A",
        "FRA",
    )
    assert request.serial == "64167F000007" and request.user_id == "a<b"
    assert request.mac is not None and request.mac.replace(":", "-").upper() == PHONE.mac
    assert [(m.file_name, m.version) for m in request.modules] == [("CPE.nbt", "4.0.7577.4366")]


def test_an_answer_with_modules_is_read_as_the_phones_read_it() -> None:
    answer = parse_answer(
        b'<?xml version="1.0" encoding="utf-8"?>\n<Response><Downloads>1</Downloads>'
        b"<BaseURL>http://u/DeviceUpdateFiles_Int/x</BaseURL>"
        b"<externalbaseurl>https://e/DeviceUpdateFiles_Ext/x</externalbaseurl>"
        b"<Modules><Module><FileName>CPE.nbt</FileName><SignatureFileName>CPE.cat"
        b"</SignatureFileName><Version>4.0.7577.4387</Version><Size>6000</Size>"
        b"<SHA256>" + SHA.upper().encode() + b"</SHA256><Unknown/></Module></Modules></Response>"
    )
    assert answer.downloads == 1 and answer.version == "4.0.7577.4387"
    assert answer.base_url == "http://u/DeviceUpdateFiles_Int/x"
    assert answer.external_base_url == "https://e/DeviceUpdateFiles_Ext/x"
    module = answer.modules[0]
    assert (module.file_name, module.signature_file_name) == ("CPE.nbt", "CPE.cat")
    assert (module.size, module.sha256) == (6000, SHA)


def test_nothing_to_offer_reads_as_zero_downloads() -> None:
    answer = parse_answer(b"<Response><Downloads>0</Downloads><BaseURL /></Response>")
    assert (answer.downloads, answer.version, answer.base_url) == (0, None, None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not xml", "not XML"),
        (b"<Request/>", "not Response"),
        (b"<Response><Downloads>x</Downloads></Response>", "not one"),
        (b"<Response><Downloads>1</Downloads></Response>", "no module"),
        (b'<!DOCTYPE r [<!ENTITY e "x">]><Response>&e;</Response>', "not XML"),
    ],
)
def test_an_answer_that_is_not_the_dialect_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(BadAnswer, match=reason):
        parse_answer(body)


# -- DHCP ------------------------------------------------------------------------------------


def test_the_inform_is_answered_by_the_appliances_responder_and_read_back() -> None:
    packet = inform_packet("00-04-F2-10-00-07", "127.0.0.5", 0xBEEF)
    asked = parse_packet(packet)
    assert asked.option(60) == b"MS-UC-Client" and asked.option(53) == b"\x08"
    assert {43, 120} <= set(asked.option(55) or b"")
    answers = InformAnswers(option43("ucupdates-r2.example.com"), option120(["sip.example.com"]))
    decision = decide(packet, answers, "127.0.0.1", "127.0.0.5")
    assert decision.reply is not None and decision.destination == ("127.0.0.5", 68)
    xid, options = read_options(decision.reply)
    info = read_info(options)
    assert xid == 0xBEEF and options[53] == b"\x05"
    assert info.sip_servers == ("sip.example.com",)
    assert info.domain == "example.com"  # no option 15: the SIP server's domain
    assert info.provisioning_url == (
        "https://ucupdates-r2.example.com:443/CertProv/CertProvisioningService.svc"
    )
    assert info.suboptions[1] == "MS-UC-Client"


def test_option_15_names_the_domain_when_given() -> None:
    info = read_info({15: b"corp.example.net\x00", 120: option120(["sip.example.com"])})
    assert info.domain == "corp.example.net"


# -- NTLM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["alice@example.com", "EXAMPLE\\alice"])
def test_the_ntlm_client_is_accepted_by_the_appliances_check(user: str) -> None:
    server_challenge = bytes(range(8))
    challenge = challenge_message(negotiate(), server_challenge, "EXAMPLE", "UCUPDATES")
    token = authenticate(challenge, user, "correct horse")
    response = read_authenticate(token, server_challenge)
    assert response.v2 and response.user == user.rpartition("\\")[2]
    assert check_response(response, bytes.fromhex(nt_hash("correct horse")))
    assert not check_response(response, bytes.fromhex(nt_hash("wrong horse")))


# -- identities and the fleet ---------------------------------------------------------------


def test_a_fleet_has_distinct_phones_spread_over_models_locales_zones_and_sources() -> None:
    spec = FleetSpec(
        locales=("ENU", "DEU"), external_share=0.25, sources=("127.0.0.2", "127.0.0.3")
    )
    phones = fleet(200, spec)
    assert len({p.mac for p in phones}) == len({p.serial for p in phones}) == 200
    assert Counter((p.vendor, p.model, p.revision) for p in phones).keys() == set(MODELS)
    assert Counter(p.locale for p in phones) == {"ENU": 102, "DEU": 98}
    assert sum(p.external for p in phones) == 50
    assert Counter(p.source for p in phones) == {"127.0.0.2": 100, "127.0.0.3": 100}
    assert fleet(200, spec) == phones  # the same spec, the same fleet


def test_the_system_information_screen() -> None:
    screen = system_information(PHONE, PhoneState())
    assert "Aastra 6725ip" in screen and PHONE.mac in screen and PHONE.serial in screen
    assert "Current version: 4.0.7577.4366" in screen and "Last update:     never" in screen


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([], 50) == 0.0 and percentile([3.0], 99) == 3.0


SETTINGS = Settings(Net(phone_tls(None), verify=False), server="http://127.0.0.1:1")


def _scripted(outcomes: dict[str, list[str]]) -> object:
    """A round runner that answers each phone (by MAC) from its script, without a network."""
    lock = threading.Lock()

    def run(phone: PhoneIdentity, state: PhoneState, settings: Settings) -> Round:
        with lock:
            outcome = outcomes[phone.mac].pop(0)
        if outcome == "updated":
            state.version = "4.0.7577.4387"
        record = Round(outcome, None if outcome != "failed" else "http-503")
        record.seconds = {"check": 0.001} if outcome != "failed" else {}
        return record

    return run


def test_the_fleet_runs_rounds_until_up_to_date_or_failed_or_out_of_rounds() -> None:
    phones = fleet(6, FleetSpec())
    script = {
        phones[0].mac: ["updated", "current"],
        phones[1].mac: ["current"],
        phones[2].mac: ["failed"],
        phones[3].mac: ["updated", "updated"],  # stops at the round limit (2)
        phones[4].mac: ["updated", "current"],
        phones[5].mac: ["updated", "current"],
    }
    runs, stats = run_fleet(
        phones,
        SETTINGS,
        Schedule(concurrency=2, jitter=0.01, idle=0.0, rounds=2),
        round_runner=_scripted(script),  # type: ignore[arg-type]
    )
    assert [len(r.rounds) for r in runs] == [2, 1, 1, 2, 2, 2]
    assert all(r.done for r in runs) and all(not s for s in script.values())
    assert (stats.checks, stats.updates, stats.current) == (9, 5, 4)
    assert stats.failures == {"http-503": 1}
    text = summary_text(stats)
    assert "phones 6, checks 9, updates 5, up to date 4, failed 1" in text
    assert "failures: http-503 1" in text
    assert runs_json(runs)[3]["version"] == "4.0.7577.4387"


def test_no_round_starts_after_the_deadline() -> None:
    phones = fleet(3, FleetSpec())
    runs, stats = run_fleet(
        phones,
        SETTINGS,
        Schedule(deadline=0.0),
        round_runner=_scripted({p.mac: [] for p in phones}),  # type: ignore[arg-type]
    )
    assert stats.checks == 0 and not any(r.done or r.rounds for r in runs)


def test_the_command_wants_a_server_or_a_dns_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phone-sim"]) == 2
    assert "give --server URL" in capsys.readouterr().err
    assert main(["phone-sim", "--server", "https://127.0.0.1:1"]) == 2
    assert "--ca FILE" in capsys.readouterr().err


def test_sources_and_endpoints_of_the_command() -> None:
    from appliance.cli.phonesim import _endpoint, _sources

    assert _sources("127.0.4.0/30") == ("127.0.4.1", "127.0.4.2")
    assert _sources("127.0.0.9") == ("127.0.0.9",) and _sources(None) == ()
    assert len(_sources("127.0.0.0/8")) == 65536  # bounded
    assert _endpoint("127.0.0.1:5353", 53) == ("127.0.0.1", 5353)
    assert _endpoint("127.0.0.1", 53) == ("127.0.0.1", 53)
    assert _endpoint("::1", 53) == ("::1", 53)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_is_redrawn_on_a_terminal_and_printed_as_lines_otherwise() -> None:
    from appliance.cli.phonesim import _progress

    stats = Stats(phones=4, finished=1, running=2, checks=3, updates=1)
    terminal, plain = _Terminal(), io.StringIO()
    for out in (terminal, plain):
        show = _progress(out)
        show(stats)
        show(stats)  # a plain line at most every few seconds...
        stats.over = True
        show(stats)  # ...and always the last one
        stats.over = False
    assert terminal.getvalue().count("\r[") == 3 and "[#######" in terminal.getvalue()
    assert plain.getvalue().splitlines() == ["1/4 phones done, 2 running, checks 3, updates 1, "
                                             "failed 0, 0 s"] * 2  # fmt: skip


def test_a_phone_told_to_wait_lets_go_of_its_connection_first() -> None:
    """A 503's Retry-After is waited with the connection closed: a busy appliance does
    not keep every waiting phone's descriptor."""
    import hashlib
    import socket as sockets

    from appliance.phonesim.http import Connections, Net, download, phone_tls

    body = b"image bytes"
    listener = sockets.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    closed_before_retry: list[bool] = []

    def serve() -> None:
        first, _ = listener.accept()
        first.settimeout(10)
        first.recv(65536)
        first.sendall(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n")
        closed_before_retry.append(first.recv(1) == b"")  # EOF: the phone closed it
        first.close()
        second, _ = listener.accept()
        second.settimeout(10)
        second.recv(65536)
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        second.sendall(head % len(body) + body)
        second.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    waited: list[tuple[float, bool]] = []

    def sleep(seconds: float) -> None:  # has the server seen the close by the time we wait?
        for _ in range(40):
            if closed_before_retry:
                break
            threading.Event().wait(0.05)
        waited.append((seconds, bool(closed_before_retry)))

    net = Net(phone_tls(None), verify=False, timeout=10)
    try:
        fetched = download(f"http://127.0.0.1:{port}/f", Connections(net), None, 3, sleep)
    finally:
        server.join(10)
        listener.close()
    assert waited == [(1.0, True)]
    assert fetched.size == len(body) and fetched.sha256 == hashlib.sha256(body).hexdigest()


# -- rollouts: quirks, upgrade paths, what became of each phone -------------------------------

IMAGE = b"firmware " * 100
PATH_VERSIONS = ("4.0.7577.4100", "4.0.7577.4387")  # a step, then the approved version


class _Appliance:
    """A tiny appliance on loopback: offers the next of PATH_VERSIONS above the version a
    check reports (an upgrade path walked one check at a time), serves one image; counts
    each phone's checks by what they reported."""

    def __init__(self) -> None:
        import hashlib
        import re
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sha = hashlib.sha256(IMAGE).hexdigest()
        checks: dict[str, list[str]] = {}
        self.checks = checks
        base = [""]  # the server's URL, once it has its port

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                mac = re.search(r"<MacAddress>(.*?)</", body)
                reported = re.search(r"<Version>(.*?)</", body)
                assert mac is not None and reported is not None
                checks.setdefault(mac.group(1), []).append(reported.group(1))
                newer = [v for v in PATH_VERSIONS if _tuple(v) > _tuple(reported.group(1))]
                if newer:
                    answer = (
                        f"<Response><Downloads>1</Downloads><BaseURL>{base[0]}/files"
                        "</BaseURL><Modules><Module>"
                        f"<FileName>CPE.nbt</FileName><Version>{newer[0]}</Version>"
                        f"<Size>{len(IMAGE)}</Size><SHA256>{sha}</SHA256></Module></Modules>"
                        "</Response>"
                    ).encode()
                else:
                    answer = b"<Response><Downloads>0</Downloads></Response>"
                self._send(answer)

            def do_GET(self) -> None:
                self._send(IMAGE)

            def _send(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = base[0] = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def _tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


@pytest.fixture
def appliance() -> Iterator[_Appliance]:
    running = _Appliance()
    yield running
    running.close()


def _quirky(number: int, quirk: Quirk) -> PhoneIdentity:
    return PhoneIdentity("Polycom", "CX700", "A", "ENU", mac_of(number), serial_of(number),
                         quirk=quirk)  # fmt: skip


def test_each_quirk_does_what_it_says_after_an_offer(appliance: _Appliance) -> None:
    phones = [_quirky(n, q) for n, q in enumerate(Quirk, start=1)]  # none, revert, stuck, silent
    settings = Settings(Net(phone_tls(None), verify=False, timeout=10), server=appliance.url)
    runs, stats = run_fleet(
        phones, settings, Schedule(idle=0.0, rounds=6, deadline=60.0), start_version="3.5.6907.37"
    )
    by_quirk = {r.phone.quirk: r for r in runs}
    walked = by_quirk[Quirk.NONE]  # the path: the step, a restart, the approved version
    assert [x.outcome for x in walked.rounds] == ["updated", "updated", "current"]
    assert [x.offered for x in walked.rounds] == [*PATH_VERSIONS, None]
    assert appliance.checks[walked.phone.mac] == ["3.5.6907.37", *PATH_VERSIONS]
    assert (walked.state.version, walked.fate) == (PATH_VERSIONS[1], "updated")
    # Reverting: seen on what it installed, then back on the one before, and offered again.
    reverting = by_quirk[Quirk.REVERT]
    assert [x.outcome for x in reverting.rounds] == ["updated", "updated", "reverted",
                                                     "updated", "reverted", "updated"]  # fmt: skip
    assert appliance.checks[reverting.phone.mac][2:4] == [PATH_VERSIONS[1], PATH_VERSIONS[0]]
    assert reverting.fate == "reverted"
    stuck = by_quirk[Quirk.STUCK]  # fetched every time, never installed
    assert [x.outcome for x in stuck.rounds] == ["stuck"] * 6 and stuck.rounds[0].files == 1
    assert set(appliance.checks[stuck.phone.mac]) == {"3.5.6907.37"} and stuck.fate == "stuck"
    silent = by_quirk[Quirk.SILENT]  # installed, never heard of again
    assert [x.outcome for x in silent.rounds] == ["updated"] and silent.fate == "silent"
    assert silent.state.version == PATH_VERSIONS[0]
    assert stats.fates == {"updated": 1, "reverted": 1, "stuck": 1, "silent": 1}
    assert not stats.failures and stats.quirks == {"stuck": 6, "reverted": 2}
    assert stats.versions == {"3.5.6907.37": 1, PATH_VERSIONS[0]: 1, PATH_VERSIONS[1]: 2}
    text = summary_text(stats)
    assert "phones: updated 1, stuck 1, reverted 1, silent 1\n" in text
    assert f"versions: 3.5.6907.37 1, {PATH_VERSIONS[0]} 1, {PATH_VERSIONS[1]} 2\n" in text
    assert runs_json(runs)[1]["quirk"] == "revert" and runs_json(runs)[1]["fate"] == "reverted"


def test_a_phone_with_an_interval_checks_again_after_downloads_0(appliance: _Appliance) -> None:
    settings = Settings(Net(phone_tls(None), verify=False, timeout=10), server=appliance.url)
    schedule = Schedule(idle=0.0, interval=0.0, rounds=4, deadline=60.0)
    states = [PhoneState(PATH_VERSIONS[1])]
    runs, _ = run_fleet([_quirky(9, Quirk.NONE)], settings, schedule, states=states)
    assert [x.outcome for x in runs[0].rounds] == ["current"] * 4
    assert runs[0].state is states[0] and runs[0].fate == "unchanged"


def test_a_fleets_quirks_are_seeded_disjoint_shares() -> None:
    spec = FleetSpec(revert_share=0.1, stuck_share=0.05, silent_share=0.2, external_share=0.5)
    phones = fleet(200, spec)
    assert Counter(p.quirk for p in phones) == {
        Quirk.NONE: 130, Quirk.REVERT: 20, Quirk.STUCK: 10, Quirk.SILENT: 40,
    }  # fmt: skip
    assert fleet(200, spec) == phones
    plain = fleet(200, FleetSpec(external_share=0.5))  # quirks leave the zones as they were
    assert [p.external for p in phones] == [p.external for p in plain]
    with pytest.raises(ValueError, match="more than 1"):
        FleetSpec(revert_share=0.6, stuck_share=0.6)


def test_the_command_runs_a_misbehaving_fleet_and_sums_up_each_phones_fate(
    appliance: _Appliance, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["phone-sim", "--server", appliance.url, "--idle", "0", "--version", "3.5.6907.37"]
    shares = ["--revert-share", "0.25", "--stuck-share", "0.25", "--silent-share", "0.25"]
    assert main([*common, "--fleet", "8", *shares, "--rounds", "4"]) == 0
    out = capsys.readouterr().out
    assert "phones: updated 2, stuck 2, reverted 2, silent 2\n" in out, out
    assert "failed 0" in out
    assert main([*common, "--stuck-share", "1", "--rounds", "2"]) == 0  # one phone, stuck
    out = capsys.readouterr().out
    assert out.startswith(f"round 1: offered {PATH_VERSIONS[0]}, fetched it, did not install it")
    assert "Current version: 3.5.6907.37" in out
    assert main([*common, "--fleet", "2", "--stuck-share", "0.7", "--silent-share", "0.7"]) == 2
    assert "add up to more than 1" in capsys.readouterr().err

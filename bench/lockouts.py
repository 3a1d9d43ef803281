"""Phone lockouts (docs/security.md, Phone lockouts): what a guesser gets, what a phone waits.

Runs the real `Authenticator` with the default `[auth]` settings over a fake clock and an
in-memory directory (checks run inline), so an hour of guessing takes seconds. Each line:
the scenario, the password checks the guessers got (directory calls), the successes they
got (always 0: they never have the password), and for the phones with the right password
how long they waited after their first try, retrying when `Retry-After` says. Nothing
leaves the process. Run: `.venv/bin/python bench/lockouts.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from appliance.config import AuthSettings
from appliance.phones.auth import Authenticator
from appliance.testing import MemoryDirectory, SecondsClock, fired, inline
from appliance.testing import basic_credentials as basic

STEP = 0.1  # seconds of simulated time per tick
NAT = "203.0.113.9"


@dataclass
class Phone:
    user: str
    source: str
    signed_in_before: bool
    start: float = 600.0  # seconds into the attack
    next_try: float = 0.0
    waited: float | None = None


@dataclass
class Scenario:
    name: str
    guesses: list[tuple[str, str]]  # (user, source) cycled, one per `every` seconds
    every: float
    seconds: float = 3600.0
    phones: list[Phone] = field(default_factory=list)


def run(scenario: Scenario) -> dict[str, object]:
    clock = SecondsClock(0.0)
    users = {p.user: "right password" for p in scenario.phones}
    directory = MemoryDirectory(**users)
    auth = Authenticator(directory, AuthSettings(), clock, run_blocking=inline)
    for phone in scenario.phones:
        if phone.signed_in_before:  # an hour before the attack: cache long expired
            clock.now = -3600.0
            assert fired(auth.authenticate(basic(phone.user, "right password"), phone.source)).ok
        phone.next_try = phone.start
    clock.now = 0.0
    guesser_checks = guesser_ok = sent = 0
    next_guess = 0.0
    while clock.now < scenario.seconds:
        while next_guess <= clock.now:
            user, source = scenario.guesses[sent % len(scenario.guesses)]
            before = len(directory.calls)
            got = fired(auth.authenticate(basic(user, f"guess {sent}"), source))
            guesser_checks += len(directory.calls) - before
            guesser_ok += got.ok
            sent += 1
            next_guess += scenario.every
        for phone in scenario.phones:
            if phone.waited is None and phone.next_try <= clock.now:
                got = fired(auth.authenticate(basic(phone.user, "right password"), phone.source))
                if got.ok:
                    phone.waited = round(clock.now - phone.start, 1)
                else:
                    phone.next_try = clock.now + (got.retry_after or 1)
        clock.now = round(clock.now + STEP, 6)
    return {
        "scenario": scenario.name,
        "guesses_sent": sent,
        "guesser_checks": guesser_checks,
        "guesser_successes": guesser_ok,
        "phones_waited_s": [p.waited for p in scenario.phones],  # None: not in the hour
    }


def scenarios() -> list[Scenario]:
    one = [("alice", NAT)]  # one address guesses alice, once a second
    botnet = [("alice", f"10.{i // 250}.{i % 250}.1") for i in range(1000)]
    spray = [(f"user{i}", NAT) for i in range(36_000)]
    elsewhere = "198.51.100.7"
    return [
        Scenario(
            "one address guesses alice 1/s; alice (never signed in) from another address, "
            "bob (never signed in) from the guesser's address",
            one,
            1.0,
            phones=[Phone("alice", elsewhere, False), Phone("bob", NAT, False)],
        ),
        Scenario(
            "one address guesses alice 1/s; alice (signed in an hour before) from the "
            "guesser's address",
            one,
            1.0,
            phones=[Phone("alice", NAT, True)],
        ),
        Scenario(
            "one address guesses alice 1/s; alice (never signed in) from the guesser's address",
            one,
            1.0,
            phones=[Phone("alice", NAT, False)],
        ),
        Scenario(
            "1,000 addresses guess alice, 10/s in all; alice (signed in before) elsewhere",
            botnet,
            0.1,
            phones=[Phone("alice", elsewhere, True)],
        ),
        Scenario(
            "1,000 addresses guess alice, 10/s in all; alice (never signed in) elsewhere",
            botnet,
            0.1,
            phones=[Phone("alice", elsewhere, False)],
        ),
        Scenario(
            "one address sprays 36,000 user names, 10/s; carol (signed in before) and dave "
            "(never signed in) from the sprayer's address",
            spray,
            0.1,
            phones=[Phone("carol", NAT, True), Phone("dave", NAT, False)],
        ),
    ]


def main() -> None:
    settings = AuthSettings()
    print(
        json.dumps(
            {
                k: getattr(settings, k)
                for k in (
                    "max_failures",
                    "failure_window",
                    "lockout_seconds",
                    "lockout_check_seconds",
                    "max_address_failures",
                    "known_good_seconds",
                )
                if hasattr(settings, k)
            }
        )
    )
    for scenario in scenarios():
        print(json.dumps(run(scenario)))


if __name__ == "__main__":
    main()

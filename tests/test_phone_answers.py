"""What phones are answered (phones/answers.py): routes; answers follow the catalogue."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.catalogue import Reason
from appliance.model import Rule, RuleState
from appliance.phones.answers import LOOK_SECONDS, Answers, RouteKind, route
from appliance.phones.codec import BaseUrls
from appliance.store import Store
from appliance.testing import CU7, CU8, CX600, add_rule, device_request

URLS = BaseUrls.of("ucupdates.example.com", 443, "ucupdates-ext.example.com", 4443)
CHECK = device_request(serial=None, version=CU7)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (b"/RequestHandler/ucdevice.upx", RouteKind.CHECK),
        (b"/requesthandlerext/UCDEVICE.UPX?x=1", RouteKind.CHECK),
        (b"/RequestHandler/Files", RouteKind.UPLOAD),
        (b"/RequestHandlerExt/Files?filename=a.clg", RouteKind.UPLOAD),
        (b"/DeviceUpdateFiles_Int/UCPhone/CPE.nbt", RouteKind.FILES),
        (b"/deviceupdatefiles_ext/x", RouteKind.FILES),
        (b"/RequestHandler/ucdevice.upx/more", None),
        (b"/", None),
    ],
)
def test_route(path: bytes, kind: RouteKind | None) -> None:
    assert route(path) is kind


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """The phone side's store and an admin's, on one database file."""
    phone, admin = Store.open(tmp_path / "db.sqlite"), Store.open(tmp_path / "db.sqlite")
    yield phone, admin
    phone.close()
    admin.close()


def test_answers_follow_what_another_process_approves(two_processes: tuple[Store, Store]) -> None:
    phone, admin = two_processes
    image = CX600.store_dir(CU8) / "CPE.nbt"
    with admin.transaction():
        rule = add_rule(admin, CX600, pending=CU8)
    answers = Answers(phone, URLS)

    decision, body = answers.answer(CHECK)
    assert decision.reason is Reason.NO_VERSION
    assert b"<Downloads>0</Downloads>" in body
    assert answers.answer(CHECK)[1] is body  # remembered
    assert answers.referenced_file(image.as_posix()) is not None  # pending: referenced

    with admin.transaction():
        approved = dataclasses.replace(
            rule, approved_version=CU8, pending_version=None, state=RuleState.APPROVED
        )
        admin.save_rule(approved)
    decision, body = answers.answer(CHECK)
    assert decision.reason is Reason.APPROVED
    assert f"<Version>{CU8}</Version>".encode() in body
    assert b"https://ucupdates.example.com/DeviceUpdateFiles_Int/" in body
    assert answers.referenced_file(image.as_posix().upper()) is not None

    answers.set_urls(BaseUrls.of("other.example.com", 443, "x.example.com", 443))
    assert b"https://other.example.com/" in answers.answer(CHECK)[1]


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def approve(store: Store, rule: Rule) -> None:
    with store.transaction():
        store.save_rule(
            dataclasses.replace(
                rule, approved_version=CU8, pending_version=None, state=RuleState.APPROVED
            )
        )


def test_an_approval_through_the_answers_own_connection_is_seen_by_the_next_check(
    tmp_path: Path,
) -> None:
    """`serve`'s admin actions write through the phones' own store: SQLite's data_version
    does not move for a connection's own commits."""
    store = Store.open(tmp_path / "db.sqlite")
    with store.transaction():
        rule = add_rule(store, CX600, pending=CU8)
    answers = Answers(store, URLS, clock=Ticks())
    assert answers.answer(CHECK)[0].reason is Reason.NO_VERSION
    approve(store, rule)
    assert answers.answer(CHECK)[0].reason is Reason.APPROVED
    store.close()


def test_another_process_is_seen_at_the_next_look_and_checks_do_not_query_between(
    two_processes: tuple[Store, Store], tmp_path: Path
) -> None:
    phone, admin = two_processes
    with admin.transaction():
        rule = add_rule(admin, CX600, pending=CU8)
    looks = []
    data_version = phone.data_version
    phone.data_version = lambda: looks.append(1) or data_version()  # type: ignore[method-assign]
    ticks = Ticks()
    answers = Answers(phone, URLS, clock=ticks)
    for _ in range(100):
        assert answers.answer(CHECK)[0].reason is Reason.NO_VERSION
    assert len(looks) == 1  # the first check's; the next 99 asked nothing

    # another process approves: written past the store (its change count is this process's)
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    other.execute(
        "UPDATE rules SET approved_version = ?, pending_version = NULL, state = ? WHERE id = ?",
        (CU8, RuleState.APPROVED.value, rule.id),
    )
    other.close()
    assert answers.answer(CHECK)[0].reason is Reason.NO_VERSION  # not looked yet
    ticks.now += LOOK_SECONDS
    assert answers.answer(CHECK)[0].reason is Reason.APPROVED
    assert answers.answer(CHECK)[0].reason is Reason.APPROVED
    assert len(looks) == 2


def test_a_verification_result_is_seen_by_the_next_check(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db.sqlite")
    with store.transaction():
        add_rule(store, CX600, approved=CU8)

    class Verifier:
        generation = 0
        broken: frozenset[object] = frozenset()

        def broken_updates(self) -> frozenset[object]:
            return self.broken

        def recheck_broken(self, files: object) -> None:
            pass  # the files stay as they are

    verifier = Verifier()
    answers = Answers(store, URLS, verifier, clock=Ticks())  # type: ignore[arg-type]
    assert answers.answer(CHECK)[0].reason is Reason.APPROVED
    verifier.broken = frozenset({(CX600.folded(), CU8)})
    verifier.generation += 1
    assert answers.answer(CHECK)[0].reason is not Reason.APPROVED
    store.close()

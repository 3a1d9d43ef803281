"""What phones are answered (phones/answers.py): routes; answers follow the catalogue."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.catalogue import Reason
from appliance.model import RuleState
from appliance.phones.answers import Answers, RouteKind, route
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

"""The admin listener's guard (appliance/web/guard.py) as a Site: what it leaves to resources."""

from __future__ import annotations

from typing import Any

from twisted.web import resource, server

from appliance.config import load_config
from appliance.testing import memory_client, settle
from appliance.web import GuardedRequest, GuardedSite, Limits


class Recorder(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[dict[bytes, list[bytes]], bytes]] = []

    def render(self, request: server.Request) -> bytes:
        assert request.content is not None
        self.seen.append((dict(request.args or {}), request.content.read()))
        return b"ok"


def admit_all(request: GuardedRequest, *_: Any) -> None:
    request.max_body = 1024


def test_a_posted_form_is_left_to_the_resource_unparsed(tmp_path: Any) -> None:
    recorder = Recorder()
    limits = Limits.of(load_config(None, tmp_path / "data").service)
    client = memory_client(
        lambda reactor: GuardedSite(recorder, admit_all, limits, reactor=reactor)
    )
    form = {"Content-Type": ["application/x-www-form-urlencoded"]}
    response = settle(client, client.post("http://admin.test/x?q=1", b"a=1&b=2", headers=form))
    assert response.code == 200
    assert recorder.seen == [({b"q": [b"1"]}, b"a=1&b=2")]  # the query only; the body as sent

"""The API's devices and history: the inventory (JSON and CSV), the event log, recent
update checks, and the Devices page's charts (as data and as SVG)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import date, datetime
from typing import Any

from appliance.admin import charts, inventory
from appliance.admin.call import Call
from appliance.admin.web import ApiError, Reply
from appliance.config import Config
from appliance.model import Event, OfferRecord
from appliance.store import Store

_DEVICE_FILTERS = ("brand", "model", "locale", "version", "zone", "status", "q")


class DevicesApi:
    """Reading the inventory, the event log and the audit files."""

    def __init__(self, config: Config, store: Store, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.store = store
        self.clock = clock

    def device_rows(self) -> list[inventory.DeviceRow]:
        """Every device seen, with what the catalogue says of it now."""
        return inventory.device_rows(self.store.devices(), self.store.catalog())

    def newest_offers(self, identities: list[str]) -> dict[str, dict[str, Any]]:
        """What each of these devices was last offered, and its outcome (one query)."""
        newest: dict[str, OfferRecord] = {}
        for record in self.store.offers_of(identities):
            known = newest.get(record.identity)
            if known is None or record.last_offered_at > known.last_offered_at:
                newest[record.identity] = record
        return {
            identity: {
                "rule_id": r.rule_id,
                "version": r.version,
                "outcome": r.outcome.value,
                "first_offered_at": r.first_offered_at,
                "last_offered_at": r.last_offered_at,
            }
            for identity, r in newest.items()
        }

    def checkins(self) -> list[tuple[date, int]]:
        """Update checks per day, over the last two weeks."""
        return inventory.checkins_per_day(self.config.logs_dir, self.clock().date())

    def devices(self, call: Call) -> Reply:
        flt = _device_filter(call)
        limit = _int(call.query("limit"), 1000, 1, 100_000, "limit")
        offset = _int(call.query("offset"), 0, 0, 10**9, "offset")
        rows = self.device_rows()
        matched = [r for r in rows if flt.matches(r)]
        page = matched[offset : offset + limit]
        offers = self.newest_offers([r.identity for r in page])
        return Reply(
            body={
                "devices": [{**r.as_json(), "offer": offers.get(r.identity)} for r in page],
                "total": len(rows),
                "matched": len(matched),
                "choices": {
                    name: inventory.distinct(rows, name)
                    for name in ("brand", "model", "locale", "version", "zone")
                },
            }
        )

    def devices_csv(self, call: Call) -> Reply:
        flt = _device_filter(call)
        rows = [r for r in self.device_rows() if flt.matches(r)]
        stamp = self.clock().strftime("%Y%m%d-%H%M%S")
        return Reply(
            body=inventory.csv_bytes(rows),
            content_type=b"text/csv; charset=utf-8",
            headers=[
                (
                    b"content-disposition",
                    f'attachment; filename="ucupdates-devices-{stamp}.csv"'.encode(),
                )
            ],
        )

    def events(self, call: Call) -> Reply:
        limit = _int(call.query("limit"), 100, 1, 10_000, "limit")
        return Reply(body={"events": [event_json(e) for e in self.store.events(limit)]})

    def activity(self, call: Call) -> Reply:
        limit = _int(call.query("limit"), 50, 1, 1000, "limit")
        device_events = inventory.recent_device_events(self.config.logs_dir, limit)
        return Reply(
            body={
                "events": [event_json(e) for e in self.store.events(limit)],
                "device_events": [asdict(e) for e in device_events],
            }
        )

    def charts(self, call: Call) -> Reply:
        per_model = inventory.versions_per_model(self.device_rows())
        return Reply(
            body={
                "versions_per_model": [
                    {
                        "model": m.model,
                        "total": m.total,
                        "versions": [{"version": v, "devices": n} for v, n in m.versions],
                    }
                    for m in per_model
                ],
                "checkins": [{"date": d.isoformat(), "checks": n} for d, n in self.checkins()],
            }
        )

    def versions_svg(self, call: Call) -> Reply:
        svg = charts.versions_chart(inventory.versions_per_model(self.device_rows()))
        return Reply(body=svg.encode(), content_type=b"image/svg+xml")

    def checkins_svg(self, call: Call) -> Reply:
        svg = charts.checkins_chart(self.checkins())
        return Reply(body=svg.encode(), content_type=b"image/svg+xml")


def event_json(e: Event) -> dict[str, Any]:
    return asdict(e)


def _device_filter(call: Call) -> inventory.DeviceFilter:
    status = call.query("status")
    if status is not None and status not in {s.value for s in inventory.Status}:
        choices = ", ".join(s.value for s in inventory.Status)
        raise ApiError(400, f"unknown status {status!r}: {choices}")
    return inventory.DeviceFilter(**{name: call.query(name) for name in _DEVICE_FILTERS})


def _int(text: str | None, default: int, low: int, high: int, name: str) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} is a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} is between {low} and {high}")
    return value

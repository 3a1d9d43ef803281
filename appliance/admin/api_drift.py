"""The drift and compliance report: `GET /api/reports/drift` (JSON) and
`GET /api/reports/drift.csv` (any signed-in role), and the Control Panel's Compliance page,
rendered here on the server from the same report (docs/rollouts.md, Drift and compliance).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from html import escape

from appliance.admin.call import Call
from appliance.admin.sessions import Login
from appliance.admin.web import ApiError, Reply
from appliance.catalogue import COUNT_COLUMNS, DriftReport, drift_csv, read_drift
from appliance.config import Config
from appliance.store import Store

MAX_UNSEEN_DAYS = 3650
_COLUMN_TITLES = {
    "devices": "Devices",
    "current": "Current",
    "behind": "Behind",
    "ahead": "Ahead",
    "unknown": "Unknown",
    "stuck": "Stuck",
    "reverted": "Reverted",
    "silent": "Silent",
    "unseen": "Unseen",
}


class DriftApi:
    """The report over the store's inventory, catalogue and offer records, now."""

    def __init__(self, config: Config, store: Store, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.store = store
        self.clock = clock

    def report_of(self, call: Call | None = None) -> DriftReport:
        days = self.config.rollouts.drift_unseen_days
        text = call.query("unseen_days") if call is not None else None
        if text is not None:
            if not text.isdigit() or not 1 <= int(text) <= MAX_UNSEEN_DAYS:
                raise ApiError(400, f"unseen_days is a whole number from 1 to {MAX_UNSEEN_DAYS}")
            days = int(text)
        return read_drift(self.store, self.clock(), days)

    def report(self, call: Call) -> Reply:
        return Reply(body=self.report_of(call).as_json())

    def report_csv(self, call: Call) -> Reply:
        report = self.report_of(call)
        stamp = report.at.strftime("%Y%m%d-%H%M%S")
        return Reply(
            body=drift_csv(report).encode("utf-8"),
            content_type=b"text/csv; charset=utf-8",
            headers=[
                (
                    b"content-disposition",
                    f'attachment; filename="ucupdates-drift-{stamp}.csv"'.encode(),
                )
            ],
        )

    def page_body(self, login: Login) -> str:
        """The Compliance page's content: the report as a table, and its CSV."""
        return compliance_html(self.report_of())


def compliance_html(report: DriftReport) -> str:
    """The report as an accessible table (caption, header scopes), with the CSV link."""
    days = report.unseen_days
    intro = (
        "<p>Per model, revision, locale and update type: the approved version and where the "
        "devices stand against it. <em>Behind</em> and <em>ahead</em> compare the version a "
        "device runs; <em>stuck</em>, <em>reverted</em> and <em>silent</em> are what became "
        f"of its latest offer; <em>unseen</em>: no check for {days} days.</p>"
        '<p class="buttons"><a id="drift-csv" class="button" '
        'href="/api/reports/drift.csv" download>Download CSV</a></p>'
    )
    counts = "".join(f'<th scope="col">{_COLUMN_TITLES[c]}</th>' for c in COUNT_COLUMNS)
    head = (
        '<th scope="col">Model</th><th scope="col">Rev.</th><th scope="col">Locale</th>'
        f'<th scope="col">Type</th><th scope="col">Approved</th>{counts}'
    )
    body = []
    for row in report.rows:
        numbers = row.counts.as_json()
        cells = "".join(f'<td class="num">{numbers[c]}</td>' for c in COUNT_COLUMNS)
        kind = escape(row.update_type) if row.update_type else "<em>no rule</em>"
        approved = escape(row.approved_version) if row.approved_version else "—"
        body.append(
            f'<tr><th scope="row">{escape(row.brand)} {escape(row.model)}</th>'
            f"<td>{escape(row.revision)}</td><td>{escape(row.locale)}</td>"
            f"<td>{kind}</td><td>{approved}</td>{cells}</tr>"
        )
    if not body:
        span = 5 + len(COUNT_COLUMNS)
        body.append(f'<tr><td colspan="{span}">No devices have checked in yet.</td></tr>')
    totals = report.totals.as_json()
    foot = "".join(f'<td class="num">{totals[c]}</td>' for c in COUNT_COLUMNS)
    at = report.at.strftime("%Y-%m-%d %H:%M UTC")
    return (
        intro + '<div class="table-wrap"><table id="drift" class="data">'
        f"<caption>Drift and compliance at {at}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody>"
        f'<tfoot><tr><th scope="row" colspan="5">All rows</th>{foot}</tr></tfoot>'
        "</table></div>"
    )

"""The Control Panel's pages: server-rendered HTML shells that `static/app.js` fills
through the JSON API, and the Devices page's charts rendered here as SVG.

Accessible by construction: one `h1` a page, a skip link, labelled controls, table
captions and header scopes, a native `<dialog>` for confirmations, live regions for
results, and visible focus. No inline script or style (the CSP forbids both); nothing
comes from another origin.
"""

from __future__ import annotations

from html import escape
from importlib import resources
from urllib.parse import quote

from twisted.web import server

from appliance import __version__
from appliance.admin import charts, inventory, pages_rollouts
from appliance.admin.api import Api
from appliance.admin.redirects import HOME, safe_next
from appliance.admin.sessions import Login
from appliance.admin.web import ApiError, Reply
from appliance.model import Role, RuleState

NAV = (
    ("/updates", "Updates"),
    ("/rollouts", "Rollouts"),
    ("/upload", "Upload"),
    ("/test-devices", "Test devices"),
    ("/devices", "Devices"),
    ("/compliance", "Compliance"),
    ("/activity", "Activity"),
    ("/captures", "Captures"),
    ("/pool", "Pool"),
)
STATIC_TYPES = {
    "app.css": b"text/css; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "rollouts.js": b"text/javascript; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}


class Pages:
    def __init__(self, api: Api) -> None:
        self.api = api
        folder = resources.files(__package__).joinpath("static")
        self.static = {name: folder.joinpath(name).read_bytes() for name in STATIC_TYPES}
        self.bodies = {
            "/updates": ("Updates", _updates),
            "/upload": ("Upload", _upload),
            "/test-devices": ("Test devices", _test_devices),
            "/devices": ("Devices", self._devices),
            "/activity": ("Activity", _activity),
            "/captures": ("Captures", _captures),
            "/compliance": ("Compliance", self.api.drift.page_body),
            "/pool": ("Pool", self.api.pool.page_body),
            "/rollouts": ("Rollouts", pages_rollouts.rollouts),
            "/pins": ("Pins", pages_rollouts.pins),
            "/networks": ("Networks & windows", pages_rollouts.networks),
            "/upgrade-paths": ("Upgrade paths", pages_rollouts.upgrade_paths),
        }

    def handle(self, request: server.Request) -> Reply:
        if request.method not in (b"GET", b"HEAD"):
            raise ApiError(405, "only GET here")
        path = request.path.split(b"?", 1)[0].decode("utf-8", "replace")
        if path.startswith("/static/"):
            name = path.removeprefix("/static/")
            if name not in self.static:
                return _not_found()
            return Reply(body=self.static[name], content_type=STATIC_TYPES[name], cache=b"no-cache")
        if path == "/favicon.ico":
            return Reply(303, headers=[(b"location", b"/static/favicon.svg")])
        login = self.api.login_of(request)
        if path == "/":
            return _redirect("/updates" if login else "/login")
        if path == "/login":
            # where to go once logged in: one of these pages, never another site
            target = safe_next(_query(request, b"next"), (HOME, *self.bodies))
            if login is not None:
                return _redirect(target)
            return _html(_layout("Log in", "/login", None, _login_body(target)))
        if path not in self.bodies:
            return _not_found()
        if login is None:
            return _redirect("/login?next=" + quote(path, safe=""))
        title, body = self.bodies[path]
        banner = self.api.pool.banner() if path != "/pool" else ""  # a branch's primary away
        return _html(_layout(title, path, login, banner + body(login)))

    def _devices(self, login: Login) -> str:
        rows = self.api.devices.device_rows()
        versions = charts.versions_chart(inventory.versions_per_model(rows))
        checkins = charts.checkins_chart(self.api.devices.checkins())
        return _devices(login) + (
            '<section class="charts" aria-labelledby="charts-title">'
            '<h2 id="charts-title">Charts</h2>'
            "<figure><figcaption>Versions per model (every device seen)</figcaption>"
            f'<div id="versions-chart" class="chart-box">{versions}</div></figure>'
            "<figure><figcaption>Update checks per day</figcaption>"
            f'<div id="checkins-chart" class="chart-box">{checkins}</div></figure>'
            "</section>"
        )


def _html(page: str) -> Reply:
    return Reply(body=page.encode("utf-8"), content_type=b"text/html; charset=utf-8")


def _query(request: server.Request, name: bytes) -> str | None:
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name)
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _redirect(where: str) -> Reply:
    return Reply(303, headers=[(b"location", where.encode())])


def _not_found() -> Reply:
    body = _layout(
        "Not found", "", None, '<p>There is no such page. <a href="/">Start over</a>.</p>'
    )
    return Reply(404, body.encode(), content_type=b"text/html; charset=utf-8")


def _layout(title: str, path: str, login: Login | None, body: str) -> str:
    meta = ""
    header_right = ""
    nav = ""
    footer = ""  # the version for those signed in only, as /health has it
    if login is not None:
        footer = f'<footer class="about">ucupdates {escape(__version__)}</footer>'
        account = login.account
        meta = (
            f'<meta name="csrf-token" content="{escape(login.session.csrf_token)}">'
            f'<meta name="role" content="{escape(account.role.value)}">'
        )
        links = "".join(
            f'<li><a href="{href}"{_current(href, path)}>{label}</a></li>' for href, label in NAV
        )
        nav = f'<nav aria-label="Main"><ul>{links}</ul></nav>'
        header_right = (
            f'<div class="who"><span id="who">{escape(account.name)} '
            f'<span class="role">({escape(account.role.value)})</span></span>'
            '<button type="button" id="logout">Log out</button></div>'
        )
    page = path.strip("/") or "home"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · ucupdates Control Panel</title>"
        '<link rel="stylesheet" href="/static/app.css">'
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        f'{meta}<script src="/static/app.js" defer></script>'
        '<script src="/static/rollouts.js" defer></script></head>'
        f'<body data-page="{escape(page)}">'
        '<a class="skip" href="#main">Skip to content</a>'
        '<header class="top"><a class="brand" href="/">ucupdates <span>Control Panel</span></a>'
        f"{nav}{header_right}</header>"
        f'<main id="main" tabindex="-1"><h1>{escape(title)}</h1>{body}</main>'
        f'{footer}<div id="toast" class="toast" role="status" aria-live="polite"></div>'
        "</body></html>\n"
    )


def _current(href: str, path: str) -> str:
    """The main navigation marks the page shown; the rollout pages mark Rollouts."""
    if href == path:
        return ' aria-current="page"'
    if href == "/rollouts" and path in pages_rollouts.TITLES:
        return ' aria-current="true"'
    return ""


def _viewer_note(login: Login) -> str:
    if login.account.role is Role.ADMIN:
        return ""
    return (
        '<p class="note">You are signed in as a viewer: you can look at everything, '
        "and change nothing.</p>"
    )


def _login_body(target: str) -> str:
    return (
        f'<form id="login-form" class="card narrow" data-next="{escape(target)}" novalidate>'
        '<p class="field"><label for="login-name">Account name</label>'
        '<input id="login-name" name="name" autocomplete="username" required autofocus></p>'
        '<p class="field"><label for="login-password">Password</label>'
        '<input id="login-password" name="password" type="password" '
        'autocomplete="current-password" required></p>'
        '<p id="login-error" class="error" role="alert"></p>'
        '<button type="submit" class="primary">Log in</button>'
        "</form>"
    )


def _select(ident: str, label: str, name: str) -> str:
    return (
        f'<p class="field"><label for="{ident}">{label}</label>'
        f'<select id="{ident}" name="{name}"><option value="">All</option></select></p>'
    )


def _updates(login: Login) -> str:
    admin = login.account.role is Role.ADMIN
    disabled = "" if admin else " hidden"
    states = "".join(f'<option value="{s.value}">{s.value}</option>' for s in RuleState)
    return (
        _viewer_note(login)
        + '<form id="rule-filters" class="filters" role="search" aria-label="Filter the rules">'
        + _select("f-brand", "Brand", "brand")
        + _select("f-model", "Model", "model")
        + _select("f-locale", "Locale", "locale")
        + _select("f-revision", "Revision", "revision")
        + '<p class="field"><label for="f-state">State</label><select id="f-state" name="state">'
        f'<option value="">All</option>{states}</select></p>'
        '<p class="field buttons"><button type="reset">Clear filters</button></p></form>'
        f'<div class="toolbar" role="toolbar" aria-label="Actions on the selected rules"{disabled}>'
        '<span id="selection-count" aria-live="polite">No rule selected</span>'
        '<button type="button" data-action="approve" class="primary" disabled>Approve…</button>'
        '<button type="button" data-action="reset" disabled>Reset…</button>'
        '<button type="button" data-action="restore" disabled>Restore…</button>'
        '<button type="button" data-action="remove" class="danger" disabled>Remove…</button>'
        '<span class="spacer"></span>'
        '<button type="button" id="clean-files">Clean files…</button></div>'
        '<div class="table-wrap"><table id="rules" class="data">'
        '<caption>Update rules <span id="rules-count"></span></caption><thead><tr>'
        '<th scope="col" class="check"><input type="checkbox" id="select-all" '
        'aria-label="Select every rule shown"></th>'
        '<th scope="col">ID</th><th scope="col">Device type</th><th scope="col">Brand</th>'
        '<th scope="col">Model</th><th scope="col">Rev.</th><th scope="col">Locale</th>'
        '<th scope="col">Type</th><th scope="col">Approved</th><th scope="col">Pending</th>'
        '<th scope="col">Restore</th><th scope="col">State</th><th scope="col">Confirmed</th>'
        '<th scope="col">GUID</th>'
        '</tr></thead><tbody><tr><td colspan="14">Loading…</td></tr></tbody></table></div>'
        '<dialog id="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-impact">'
        '<form method="dialog"><h2 id="confirm-title">Confirm</h2>'
        '<ul id="confirm-rules" class="rules" aria-label="The rules it changes"></ul>'
        '<p id="confirm-impact">Working out the impact…</p>'
        '<ul id="confirm-details"></ul>'
        '<p id="confirm-force-box" class="force" hidden><label>'
        '<input type="checkbox" id="confirm-force"> <span id="confirm-force-text"></span>'
        "</label></p>"
        + pages_rollouts.approve_choices()
        + '<p class="buttons"><button value="cancel" id="confirm-cancel">Cancel</button>'
        '<button value="ok" id="confirm-ok" class="primary">Confirm</button></p>'
        "</form></dialog>"
    )


def _upload(login: Login) -> str:
    if login.account.role is not Role.ADMIN:
        return _viewer_note(login)
    return (
        '<form id="upload-form" class="card" novalidate>'
        '<p class="field"><label for="package">Vendor package (UCUpdates.cab, or the '
        "UCUpdates.exe that embeds it)</label>"
        '<input type="file" id="package" name="package" accept=".cab,.exe" required '
        'aria-describedby="package-help"></p>'
        '<p id="package-help" class="hint">The package is streamed to the appliance and '
        "imported: new versions become pending until approved on the Updates page.</p>"
        '<p id="upload-error" class="error" role="alert"></p>'
        '<button type="submit" class="primary">Upload and import</button></form>'
        '<div id="upload-progress" class="card" hidden>'
        '<label for="progress"><span id="progress-what">Uploading</span> '
        '<span id="progress-name"></span></label>'
        '<progress id="progress" max="100" value="0"></progress>'
        '<span id="progress-text" aria-live="polite"></span></div>'
        '<section id="upload-result" class="card" hidden aria-labelledby="result-title">'
        '<h2 id="result-title" tabindex="-1">What the import found</h2>'
        '<p id="result-summary"></p><div class="table-wrap"><table class="data" id="result-table">'
        "<caption>Device updates in the package</caption><thead><tr>"
        '<th scope="col">Rule</th><th scope="col">Device update</th><th scope="col">Version</th>'
        '<th scope="col">Files</th><th scope="col">Bytes</th><th scope="col">Result</th>'
        "</tr></thead><tbody></tbody></table></div>"
        '<p><a href="/updates">Go to the Updates page</a> to approve them.</p></section>'
    )


def _test_devices(login: Login) -> str:
    form = ""
    if login.account.role is Role.ADMIN:
        form = (
            '<form id="add-test-device" class="card" novalidate>'
            "<h2>Add a test device</h2>"
            '<p class="field"><label for="td-name">Name</label>'
            '<input id="td-name" name="name" maxlength="128" required '
            'aria-describedby="td-name-error"></p>'
            '<p id="td-name-error" class="error" aria-live="polite"></p>'
            '<fieldset class="field"><legend>Identify it by</legend>'
            '<label class="inline"><input type="radio" name="kind" value="mac" checked> '
            "MAC address</label>"
            '<label class="inline"><input type="radio" name="kind" value="serial"> '
            "Serial number</label></fieldset>"
            '<p class="field"><label for="td-id" id="td-id-label">MAC address</label>'
            '<input id="td-id" name="identifier" autocomplete="off" spellcheck="false" required '
            'aria-describedby="td-id-help td-id-error"></p>'
            '<p id="td-id-help" class="hint">Six pairs of hex digits, bare or joined by - or : '
            "(00-04-F2-A1-B2-C3)</p>"
            '<p id="td-id-error" class="error" aria-live="polite"></p>'
            '<button type="submit" class="primary" id="td-add" disabled>Add test device</button>'
            "</form>"
        )
    return (
        _viewer_note(login)
        + "<p>Test devices get a rule's pending version before everyone else.</p>"
        + form
        + '<div class="table-wrap"><table id="test-devices" class="data">'
        '<caption>Test devices</caption><thead><tr><th scope="col">ID</th>'
        '<th scope="col">Name</th><th scope="col">By</th><th scope="col">Identifier</th>'
        '<th scope="col">Added</th><th scope="col"><span class="sr-only">Actions</span></th>'
        '</tr></thead><tbody><tr><td colspan="6">Loading…</td></tr></tbody></table></div>'
        '<dialog id="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-impact">'
        '<form method="dialog"><h2 id="confirm-title">Confirm</h2><p id="confirm-impact"></p>'
        '<ul id="confirm-details"></ul><p class="buttons">'
        '<button value="cancel" id="confirm-cancel">Cancel</button>'
        '<button value="ok" id="confirm-ok" class="danger">Remove</button></p></form></dialog>'
    )


def _devices(login: Login) -> str:
    statuses = "".join(f'<option value="{s.value}">{s.value}</option>' for s in inventory.Status)
    return (
        '<form id="device-filters" class="filters" role="search" aria-label="Filter the devices">'
        '<p class="field"><label for="d-q">Search</label>'
        '<input id="d-q" name="q" type="search" placeholder="MAC, serial, address, user"></p>'
        + _select("d-brand", "Brand", "brand")
        + _select("d-model", "Model", "model")
        + _select("d-locale", "Locale", "locale")
        + _select("d-version", "Version", "version")
        + _select("d-zone", "Zone", "zone")
        + '<p class="field"><label for="d-status">Status</label>'
        f'<select id="d-status" name="status"><option value="">All</option>{statuses}'
        "</select></p>"
        '<p class="field buttons"><button type="reset">Clear filters</button>'
        '<a id="csv-link" class="button" href="/api/devices.csv" download>Export CSV</a>'
        '<button type="button" id="refresh-devices">Refresh</button></p></form>'
        '<div class="table-wrap"><table id="devices" class="data">'
        '<caption>Devices <span id="devices-count"></span></caption><thead><tr>'
        '<th scope="col">Device</th><th scope="col">Model</th><th scope="col">Locale</th>'
        '<th scope="col">Version</th><th scope="col">Approved</th><th scope="col">Status</th>'
        '<th scope="col">Offered (outcome)</th>'
        '<th scope="col">Zone</th><th scope="col">Address</th><th scope="col">Last check</th>'
        '<th scope="col"><span class="sr-only">Details</span></th>'
        '</tr></thead><tbody><tr><td colspan="11">Loading…</td></tr></tbody></table></div>'
        + pages_rollouts.device_detail()
    )


def _activity(login: Login) -> str:
    return (
        '<p class="buttons"><button type="button" id="refresh-activity">Refresh</button></p>'
        '<div class="table-wrap"><table id="events" class="data">'
        "<caption>Admin event log, newest first</caption><thead><tr>"
        '<th scope="col">When (UTC)</th><th scope="col">Who</th><th scope="col">Action</th>'
        '<th scope="col">Target</th><th scope="col">Change</th></tr></thead>'
        '<tbody><tr><td colspan="5">Loading…</td></tr></tbody></table></div>'
        '<div class="table-wrap"><table id="device-events" class="data">'
        "<caption>Recent update checks, newest first</caption><thead><tr>"
        '<th scope="col">When (UTC)</th><th scope="col">Device</th><th scope="col">Model</th>'
        '<th scope="col">Reports</th><th scope="col">Offered</th><th scope="col">Address</th>'
        '</tr></thead><tbody><tr><td colspan="6">Loading…</td></tr></tbody></table></div>'
    )


def _captures(login: Login) -> str:
    return (
        "<p>Capture mode keeps the first checks of each phone model and every check that "
        "cannot be read, as the phone sent them (credentials removed), with TLS details and "
        "the answer. Export them all as one file to attach to a bug report.</p>"
        '<p id="capture-state" class="hint" role="status"></p>'
        '<p class="buttons"><button type="button" id="refresh-captures">Refresh</button>'
        '<a id="captures-export" class="button" href="/api/captures/export" download>'
        "Export all (JSON)</a></p>"
        '<div class="table-wrap"><table id="captures" class="data">'
        '<caption>Captures, newest first <span id="captures-count"></span></caption>'
        '<thead><tr><th scope="col">When (UTC)</th><th scope="col">Client</th>'
        '<th scope="col">Zone</th><th scope="col">Model</th><th scope="col">Request</th>'
        '<th scope="col">TLS</th><th scope="col">Answer</th><th scope="col">Why</th>'
        '<th scope="col"><span class="sr-only">Details</span></th></tr></thead>'
        '<tbody><tr><td colspan="9">Loading…</td></tr></tbody></table></div>'
        '<section id="capture-detail" aria-labelledby="capture-detail-title" hidden>'
        '<h2 id="capture-detail-title">Capture</h2>'
        '<pre id="capture-text" class="capture" tabindex="0"></pre></section>'
    )

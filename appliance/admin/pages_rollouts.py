"""The Control Panel's rollout pages: staged approvals, pins, networks with their download
windows, and upgrade paths (docs/rollouts.md).

Server-rendered shells, as the other pages are: `static/rollouts.js` fills their tables
through the JSON API and sends their forms to it. The four pages share a second
navigation bar; the forms and the buttons that change things are left out for viewers.
"""

from __future__ import annotations

from appliance.admin.sessions import Login
from appliance.model import Role

SECTION = (
    ("/rollouts", "Staged approvals"),
    ("/pins", "Pins"),
    ("/networks", "Networks & windows"),
    ("/upgrade-paths", "Upgrade paths"),
)
TITLES = {
    "/rollouts": "Rollouts",
    "/pins": "Pins",
    "/networks": "Networks & windows",
    "/upgrade-paths": "Upgrade paths",
}


def section_nav(path: str) -> str:
    """The rollout pages' own navigation, the current one marked."""
    current = ' aria-current="page"'
    links = "".join(
        f'<li><a href="{href}"{current if href == path else ""}>{label}</a></li>'
        for href, label in SECTION
    )
    return f'<nav class="sub" aria-label="Rollouts"><ul>{links}</ul></nav>'


def _admin(login: Login) -> bool:
    return login.account.role is Role.ADMIN


def _viewer(login: Login) -> str:
    if _admin(login):
        return ""
    return (
        '<p class="note">You are signed in as a viewer: you can look at everything, '
        "and change nothing.</p>"
    )


def _table(ident: str, caption: str, columns: tuple[str, ...], actions: bool = True) -> str:
    heads = "".join(f'<th scope="col">{c}</th>' for c in columns)
    if actions:
        heads += '<th scope="col"><span class="sr-only">Actions</span></th>'
    span = len(columns) + (1 if actions else 0)
    return (
        f'<div class="table-wrap"><table id="{ident}" class="data">'
        f'<caption>{caption} <span id="{ident}-count"></span></caption>'
        f"<thead><tr>{heads}</tr></thead>"
        f'<tbody><tr><td colspan="{span}">Loading…</td></tr></tbody></table></div>'
    )


def _field(ident: str, label: str, attrs: str = "", hint: str = "", name: str | None = None) -> str:
    described = f' aria-describedby="{ident}-hint"' if hint else ""
    hint_html = f'<span id="{ident}-hint" class="hint">{hint}</span>' if hint else ""
    return (
        f'<p class="field"><label for="{ident}">{label}</label>'
        f'<input id="{ident}" name="{name or ident.split("-", 1)[1]}" autocomplete="off" '
        f'spellcheck="false"{described} {attrs}>{hint_html}</p>'
    )


def confirm_dialog() -> str:
    """The confirmation dialog of the rollout pages: the sentence that says what happens,
    details, and a reason field that only a pause shows."""
    return (
        '<dialog id="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-impact">'
        '<form method="dialog"><h2 id="confirm-title">Confirm</h2><p id="confirm-impact"></p>'
        '<ul id="confirm-details"></ul>'
        '<p class="field" id="confirm-reason-box" hidden>'
        '<label for="confirm-reason">Why (recorded in the event log)</label>'
        '<input id="confirm-reason" maxlength="500" autocomplete="off"></p>'
        '<p class="buttons"><button value="cancel" id="confirm-cancel">Cancel</button>'
        '<button value="ok" id="confirm-ok" class="primary">Confirm</button></p>'
        "</form></dialog>"
    )


def rollouts(login: Login) -> str:
    return (
        section_nav("/rollouts")
        + _viewer(login)
        + "<p>An approval given to a rising share of the fleet: devices fall into stable "
        "buckets, each stage offers the version to a larger share, and a stage pauses by "
        "itself when too many of its devices are stuck, reverted or silent. Approve a rule "
        "as <em>Staged</em> on the Updates page to start one.</p>"
        '<p class="buttons"><button type="button" id="refresh-rollouts">Refresh</button></p>'
        + _table(
            "rollouts",
            "Staged approvals",
            (
                "Rule",
                "Version",
                "Stage",
                "Devices in stage",
                "Updated",
                "Stuck",
                "Reverted",
                "Silent",
                "Waiting for a window",
                "State",
            ),
        )
        + _table(
            "confirmations",
            "Confirmed by the next check, per rule",
            ("Rule", "Version", "Stage", "Pending", "Updated", "Stuck", "Reverted", "Silent"),
            actions=False,
        )
        + confirm_dialog()
    )


def pins(login: Login) -> str:
    form = ""
    if _admin(login):
        form = (
            '<form id="add-pin" class="card grid" novalidate><h2>Pin a device</h2>'
            '<fieldset class="field"><legend>Identify it by</legend>'
            '<label class="inline"><input type="radio" name="kind" value="mac" checked> '
            "MAC address</label>"
            '<label class="inline"><input type="radio" name="kind" value="serial"> '
            "Serial number</label></fieldset>"
            + _field(
                "pin-id", "MAC address", "required", "For example 00-04-F2-A1-B2-C3", "identifier"
            )
            + '<fieldset class="field"><legend>Pin</legend>'
            '<label class="inline"><input type="radio" name="action" value="hold" checked> '
            "Hold on a version</label>"
            '<label class="inline"><input type="radio" name="action" value="exclude"> '
            "Exclude from updates</label></fieldset>"
            + _field("pin-version", "Version to hold it on", "required")
            + _field("pin-type", "Update type", "", "Empty: every update type", "update_type")
            + _field("pin-reason", "Reason", 'maxlength="500" required')
            + '<p id="pin-error" class="error" role="alert"></p>'
            '<button type="submit" class="primary">Add pin</button></form>'
        )
    return (
        section_nav("/pins")
        + _viewer(login)
        + "<p>A pinned device is held on a version, or excluded from updates, whatever is "
        "approved; a pin outranks test devices and stages.</p>"
        + form
        + _table("pins", "Pins", ("Device", "Pin", "Update type", "Reason", "Set by", "Set at"))
        + confirm_dialog()
    )


def networks(login: Login) -> str:
    form = external = ""
    if _admin(login):
        form = (
            '<form id="add-network" class="card grid" novalidate><h2>Add a network</h2>'
            + _field(
                "net-network", "Network (CIDR)", "required", "For example 10.20.0.0/16", "network"
            )
            + _windows_fields("net")
            + '<p id="net-error" class="error" role="alert"></p>'
            '<button type="submit" class="primary">Add network</button></form>'
        )
        external = (
            '<form id="external-form" class="grid" novalidate>'
            "<h3>Change the external zone's policy</h3>"
            + _windows_fields("ext")
            + '<p id="ext-error" class="error" role="alert"></p>'
            '<p class="buttons"><button type="submit" class="primary">Set</button>'
            '<button type="button" id="ext-clear">Clear…</button></p></form>'
        )
    return (
        section_nav("/networks")
        + _viewer(login)
        + "<p>Phones in a network may be offered a download only inside its windows, in the "
        "network's local time; outside them they are answered that nothing is to be "
        "installed, and ask again at their next check. The most specific network holding a "
        "phone's address decides; a phone in none is not restricted.</p>"
        + form
        + _table(
            "networks",
            "Networks",
            ("Network", "Time zone", "Windows", "Max downloads", "Max bytes/s", "Set by", "Set at"),
        )
        + '<section class="card" aria-labelledby="external-title">'
        '<h2 id="external-title">External phones</h2>'
        '<p id="external-policy" role="status">Loading…</p>'
        + external
        + "</section>"
        + '<datalist id="time-zones"></datalist>'
        + confirm_dialog()
    )


def _windows_fields(prefix: str) -> str:
    return (
        _field(
            f"{prefix}-zone", "Time zone", 'list="time-zones" value="UTC" required', "", "time_zone"
        )
        + _field(
            f"{prefix}-windows",
            "Download windows",
            'placeholder="22:00-05:00"',
            "HH:MM-HH:MM local time, several separated by commas; empty: always open",
            "windows",
        )
        + _field(
            f"{prefix}-max-downloads",
            "Max concurrent downloads",
            'type="number" min="1" step="1"',
            "Empty: no cap",
            "max_downloads",
        )
        + _field(
            f"{prefix}-max-bps",
            "Max bytes a second",
            'type="number" min="1" step="1"',
            "Empty: no cap",
            "max_bytes_per_second",
        )
    )


def upgrade_paths(login: Login) -> str:
    form = ""
    if _admin(login):
        form = (
            '<form id="add-path" class="card grid" novalidate><h2>Add an upgrade step</h2>'
            + _field(
                "path-device-type", "Device type", 'value="UCPhone" required', "", "device_type"
            )
            + _field("path-brand", "Brand", 'list="path-brands" required')
            + _field("path-model", "Model", 'list="path-models" required')
            + _field("path-revision", "Revision", "", "Empty: every revision")
            + _field("path-type", "Update type", "", "Empty: every update type", "update_type")
            + _field(
                "path-below", "A phone reporting a version below", "required", "For example 3.5"
            )
            + _field("path-offer", "is first offered", "required", "For example 3.5.6907.37")
            + '<p id="path-error" class="error" role="alert"></p>'
            '<button type="submit" class="primary">Add step</button>'
            '<datalist id="path-brands"></datalist><datalist id="path-models"></datalist>'
            "</form>"
        )
    return (
        section_nav("/upgrade-paths")
        + _viewer(login)
        + "<p>Firmware too old to take the approved version directly is first offered an "
        "intermediate one: the phone takes it, restarts, checks again and is then offered "
        "the next step or the approved version.</p>"
        + form
        + _table(
            "upgrade-paths",
            "Upgrade paths",
            ("Model", "Update type", "Below", "First offered", "Set by", "Set at"),
        )
        + confirm_dialog()
    )


def approve_choices() -> str:
    """In the Updates page's dialog, for an approval: to every device or staged, and the
    box that lets a downgrade through (shown only when the preview refuses one)."""
    return (
        '<fieldset id="confirm-how" class="stages" hidden><legend>Approve to</legend>'
        '<label class="inline"><input type="radio" name="how" value="all" checked> '
        "Every device at once</label> "
        '<label class="inline"><input type="radio" name="how" value="staged"> '
        "Staged: a rising share of the devices</label>"
        '<span id="confirm-staged" hidden>'
        + _field(
            "confirm-stages",
            "Stages (percent of the devices)",
            'value="5, 25, 100"',
            "Rising shares ending at 100; each stage is advanced on the Rollouts page",
            "stages",
        )
        + _field(
            "confirm-soak",
            "Advance by itself after (hours)",
            'type="number" min="1" step="1"',
            "Empty: by hand only",
            "soak_hours",
        )
        + '<p class="hint">At first only the devices in the first stage are offered it; the '
        "others are answered as before the approval until their stage comes. A stage pauses "
        "by itself when too many of its devices are stuck, reverted or silent.</p>"
        + "</span></fieldset>"
        '<details id="confirm-gate" class="stages" hidden><summary>Soak gate</summary>'
        '<p class="hint">Approve only when enough test devices of each model have run the '
        "version long enough (confirmed by their checks).</p>"
        + _field(
            "confirm-gate-devices",
            "Test devices of each model",
            'type="number" min="1" step="1"',
            "Empty: no soak gate",
            "gate_devices",
        )
        + _field("confirm-gate-hours", "that ran it for (hours)", 'type="number" min="0"')
        + _field(
            "confirm-gate-override",
            "Override it, because",
            'maxlength="500"',
            "Approves although the gate is not met; the reason goes to the event log",
            "override_soak",
        )
        + "</details>"
        '<p id="confirm-downgrade-box" class="force" hidden><label>'
        '<input type="checkbox" id="confirm-downgrade"> <span id="confirm-downgrade-text"></span>'
        "</label></p>"
    )


def device_detail() -> str:
    """The Devices page's detail of one device: what it gets now and why (explain), and
    what it was offered per rule with the outcome."""
    return (
        '<section id="device-detail" class="card" aria-labelledby="device-detail-title" hidden>'
        '<h2 id="device-detail-title" tabindex="-1">Device</h2>'
        '<p id="device-now"></p><ul id="device-explain"></ul>'
        + _table(
            "device-offers",
            "What it was offered, and what its next check made of it",
            (
                "Rule",
                "Version",
                "From",
                "First offered",
                "Last offered",
                "Offers",
                "Outcome",
                "Reports",
            ),
            actions=False,
        )
        + "</section>"
    )

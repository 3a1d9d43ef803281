"""Who a simulated phone is, what its check says, and what the answer offers it.

The check is the request dialect of docs/protocol.md §5, written the way the phones send
it; the answer is read as any phone would (names case-insensitive, unknown elements
ignored), through defusedxml since it comes off the network. A fleet's phones get
distinct MAC addresses (in the Polycom OUI 00-04-F2 range, numbered) and serial numbers,
spread round-robin over the models and locales asked for; seeded shares of them misbehave
after an offer (`Quirk`), so that a rollout's confirmation has something to find.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from xml.sax.saxutils import escape

from defusedxml import ElementTree as SafeET

# (vendor, model, revision): the LPE phones of docs/protocol.md (scope list).
MODELS: tuple[tuple[str, str, str], ...] = (
    ("Polycom", "CX600", "A"),
    ("Polycom", "CX500", "A"),
    ("Polycom", "CX3000", "A"),
    ("Polycom", "CX700", "A"),
    ("Aastra", "6721ip", "A"),
    ("Aastra", "6725ip", "A"),
    ("HP", "4120", "A"),
)
DEFAULT_VERSION = "4.0.7577.4366"  # CU7, what the phones run before an update (§10)
MODULE_FILE = "CPE.nbt"
CHECK_TIMESTAMP = "2012-12-10T00:00:00Z"


class Quirk(StrEnum):
    """How a phone misbehaves after an offer (docs/phonesim.md, Rollouts)."""

    NONE = ""
    REVERT = "revert"  # installs, checks once on the new version, then goes back
    STUCK = "stuck"  # downloads what it is offered and never installs it
    SILENT = "silent"  # installs what it is offered and never checks in again


@dataclass(frozen=True)
class PhoneIdentity:
    """A phone as its check describes it, and the zone it checks from."""

    vendor: str
    model: str
    revision: str
    locale: str
    mac: str  # 00-04-F2-xx-xx-xx
    serial: str
    user_id: str = ""
    external: bool = False
    source: str | None = None  # the local address it connects from; None: any
    quirk: Quirk = Quirk.NONE


@dataclass
class PhoneState:
    """What the phone runs: the System Information screen's version and date."""

    version: str = DEFAULT_VERSION
    last_update: date | None = None
    previous: str | None = None  # what it ran before its last install (a revert's target)


def mac_of(number: int) -> str:
    """The `number`th MAC of the simulator's range, 00-04-F2-xx-xx-xx."""
    low = (0x100000 + number) & 0xFFFFFF
    return "00-04-F2-" + "-".join(f"{(low >> s) & 0xFF:02X}" for s in (16, 8, 0))


def serial_of(number: int) -> str:
    return f"64167F{number:06d}"


def parse_model(spec: str) -> tuple[str, str, str]:
    """`Vendor/Model[/Revision]`, e.g. `Polycom/CX600/A`; the revision defaults to A."""
    parts = spec.split("/")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
        raise ValueError(f"a model is Vendor/Model[/Revision], got {spec!r}")
    vendor, model = parts[0].strip(), parts[1].strip()
    return vendor, model, parts[2].strip() if len(parts) == 3 else "A"


@dataclass(frozen=True)
class FleetSpec:
    """How a fleet's phones differ: models, locales, the share outside, source addresses."""

    models: tuple[tuple[str, str, str], ...] = MODELS
    locales: tuple[str, ...] = ("ENU",)
    external_share: float = 0.0
    sources: tuple[str, ...] = ()
    first_number: int = 1
    seed: int = 0
    user_id: str = ""
    external_user_id: str = ""
    revert_share: float = 0.0  # of the phones, Quirk.REVERT
    stuck_share: float = 0.0  # Quirk.STUCK
    silent_share: float = 0.0  # Quirk.SILENT

    def __post_init__(self) -> None:
        shares = (self.revert_share, self.stuck_share, self.silent_share, self.external_share)
        if any(not 0.0 <= s <= 1.0 for s in shares):
            raise ValueError("a share of the fleet is a fraction from 0 to 1")
        if self.revert_share + self.stuck_share + self.silent_share > 1.0:
            raise ValueError("the reverting, stuck and silent shares add up to more than 1")


def _quirks(count: int, spec: FleetSpec) -> dict[int, Quirk]:
    """Disjoint seeded samples of the phones for each quirk (their own generator, so the
    zones a seed gives stay as they were)."""
    rng = random.Random(f"quirks {spec.seed}")  # noqa: S311 - a spread, not a secret
    order = rng.sample(range(count), count)
    quirks: dict[int, Quirk] = {}
    for quirk, share in (
        (Quirk.REVERT, spec.revert_share),
        (Quirk.STUCK, spec.stuck_share),
        (Quirk.SILENT, spec.silent_share),
    ):
        taken, order = order[: round(count * share)], order[round(count * share) :]
        quirks.update((i, quirk) for i in taken)
    return quirks


def fleet(count: int, spec: FleetSpec) -> list[PhoneIdentity]:
    """`count` phones with distinct MACs and serials, models and locales round-robin, a
    seeded random `external_share` of them outside, seeded disjoint shares of them
    reverting, stuck and silent, source addresses round-robin."""
    rng = random.Random(spec.seed)  # noqa: S311 - a spread, not a secret
    outside = set(rng.sample(range(count), round(count * spec.external_share)))
    quirks = _quirks(count, spec)
    phones = []
    for i in range(count):
        vendor, model, revision = spec.models[i % len(spec.models)]
        number = spec.first_number + i
        external = i in outside
        phones.append(
            PhoneIdentity(
                vendor,
                model,
                revision,
                spec.locales[(i // len(spec.models)) % len(spec.locales)],
                mac_of(number),
                serial_of(number),
                spec.external_user_id if external else spec.user_id,
                external,
                spec.sources[i % len(spec.sources)] if spec.sources else None,
                quirks.get(i, Quirk.NONE),
            )
        )
    return phones


def check_body(phone: PhoneIdentity, version: str) -> bytes:
    """The update check (docs/protocol.md §5) of `phone` running `version`."""
    fields = (
        ("DeviceType", "UCPhone"),
        ("MacAddress", phone.mac),
        ("SerialNumber", phone.serial),
        ("Vendor", phone.vendor),
        ("Model", phone.model),
        ("Revision", phone.revision),
        ("Locale", phone.locale),
        ("UserId", phone.user_id),
    )
    head = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields)
    module = (
        f"<Module><FileName>{MODULE_FILE}</FileName><Version>{escape(version)}</Version>"
        f"<Timestamp>{CHECK_TIMESTAMP}</Timestamp></Module>"
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<Request>{head}<Modules>{module}</Modules>'
        "</Request>\n"
    ).encode()


class BadAnswer(ValueError):
    """An answer that is not the §5 response dialect."""


@dataclass(frozen=True)
class OfferedModule:
    file_name: str
    signature_file_name: str | None
    version: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class Answer:
    downloads: int
    base_url: str | None
    external_base_url: str | None
    modules: tuple[OfferedModule, ...] = ()

    @property
    def version(self) -> str | None:
        """The version offered (the modules'), None when nothing is."""
        return self.modules[0].version if self.modules else None


def _children(element: object) -> dict[str, object]:
    found: dict[str, object] = {}
    for child in element:  # type: ignore[attr-defined]
        name = str(child.tag).rsplit("}", 1)[-1].lower()
        found.setdefault(name, child)
    return found


def _text(children: dict[str, object], name: str) -> str | None:
    child = children.get(name.lower())
    text = getattr(child, "text", None) if child is not None else None
    return text.strip() if isinstance(text, str) and text.strip() else None


def parse_answer(body: bytes) -> Answer:
    """The `<Response>` of a check; BadAnswer when it is not one."""
    try:
        root = SafeET.fromstring(body)
    except Exception as e:  # defusedxml raises ParseError and its own refusals
        raise BadAnswer(f"the answer is not XML: {e}") from e
    if str(root.tag).rsplit("}", 1)[-1].lower() != "response":
        raise BadAnswer(f"the answer's root is {root.tag!r}, not Response")
    top = _children(root)
    try:
        downloads = int(_text(top, "Downloads") or "0")
        modules = []
        container = top.get("modules")
        for element in container if container is not None else ():  # type: ignore[attr-defined]
            m = _children(element)
            name, version = _text(m, "FileName"), _text(m, "Version")
            if name is None or version is None:
                raise BadAnswer("an offered module lacks its file name or version")
            size = _text(m, "Size")
            modules.append(
                OfferedModule(
                    name,
                    _text(m, "SignatureFileName"),
                    version,
                    int(size) if size is not None else None,
                    (_text(m, "SHA256") or "").lower() or None,
                )
            )
    except ValueError as e:
        if isinstance(e, BadAnswer):
            raise
        raise BadAnswer(f"a number in the answer is not one: {e}") from e
    if downloads and not modules:
        raise BadAnswer(f"Downloads is {downloads} but no module is offered")
    return Answer(downloads, _text(top, "BaseURL"), _text(top, "ExternalBaseURL"), tuple(modules))

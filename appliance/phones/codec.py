"""The update-check dialect (docs/protocol.md §5), in one place: bytes in, bytes out.

The request's literal spelling is our reconstruction [R], so parsing is lenient: element
names in any case and without namespaces, vendor-style aliases, MACs in any of their
forms, fields at any depth outside the module list. A capture from a real phone can
correct the spelling here and nowhere else.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from xml.parsers import expat

from appliance.catalogue import AnyDecision, Offer
from appliance.config import Config
from appliance.identifiers import InvalidIdentifier, normalise_mac, normalise_serial
from appliance.model import DeviceRequest, ReportedModule, Zone

CONTENT_TYPE = b"text/xml; charset=utf-8"

_FIELDS: dict[str, tuple[str, ...]] = {
    "device_type": ("devicetype",),
    "mac": ("macaddress", "mac"),
    "serial": ("serialnumber", "serial"),
    "brand": ("vendor", "brand", "manufacturer"),
    "model": ("model",),
    "revision": ("revision", "hardwarerevision"),
    "locale": ("locale",),
    "user_id": ("userid", "user"),
    "version": ("version", "firmwareversion"),
}
_MODULE_FIELDS: dict[str, tuple[str, ...]] = {
    "file_name": ("filename", "name"),
    "version": ("version",),
    "timestamp": ("timestamp",),
}
_KNOWN = frozenset(n for names in _FIELDS.values() for n in names)
_KNOWN_MODULE = frozenset(n for names in _MODULE_FIELDS.values() for n in names)
_MAX_FIELD = 256
_MAX_MODULES = 64


class CheckError(Exception):
    """A check that cannot be answered; `status` and a short `reason` for the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _field_text(name: str, text: str) -> str | None:
    value = text.strip()
    if not value:
        return None
    if len(value) > _MAX_FIELD or not value.isprintable():
        raise CheckError(400, f"field <{name}> is too long or not printable")
    return value


def _module_text(name: str, text: str) -> str | None:
    """A module field. The timestamp is "the time of the update request" (Lync 2010's
    audit schema, docs/protocol.md §5), not a file date: any text is kept as sent, never
    checked, so an odd clock or format can never cost a phone its update."""
    if name == "timestamp":
        return text.strip() or None
    return _field_text(name, text)


def _first(found: dict[str, str], names: Sequence[str]) -> str | None:
    for name in names:
        value = found.get(name)
        if value is not None:
            return value
    return None


class _Text:
    """An element whose text is read: `chunks[start:stop]` of the document's text."""

    __slots__ = ("name", "start", "stop", "leaf")

    def __init__(self, name: str, start: int) -> None:
        self.name = name  # local name, lower case
        self.start = start
        self.stop = -1  # set at its first child (then no leaf) or at its end
        self.leaf = True


class _Module:
    """A `<Module>` element: its direct children named like module fields, in order."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: list[_Text] = []


class _Refused(Exception):
    """A DOCTYPE, an entity declaration or an external reference."""


def _refuse(*_: object) -> int:
    raise _Refused


_LOCAL_NAMES: dict[str, str] = {}  # expat's "uri}local" -> "local", lower case (bounded)


def _local(tag: str) -> str:
    name = _LOCAL_NAMES.get(tag)
    if name is None:
        if len(_LOCAL_NAMES) >= 4096:
            _LOCAL_NAMES.clear()
        name = _LOCAL_NAMES[tag] = tag.rpartition("}")[2].lower()
    return name


class _Scan:
    """A single pass of expat over a check that notes, in document order, the modules
    and the elements named like fields outside any module, and where their text lies in
    `chunks` (all the document's character data, in order): a field's text up to its
    first child (a field with a child is no leaf, and not read), a module field's
    likewise, a module timestamp's all the text inside it (as `itertext` would)."""

    def __init__(self, body: bytes) -> None:
        """Raises _Refused, or what expat raises for malformed input or an encoding."""
        chunks: list[str] = []
        order: list[_Text | _Module] = []
        stack: list[tuple[_Text | None, _Module | None, bool]] = []
        open_: _Text | None = None  # the element whose own text runs (no child yet)
        module: _Module | None = None  # the current element, if it is a module
        inside = False  # the current element is a module or inside one
        push, pop = stack.append, stack.pop

        def start(tag: str, _attributes: object) -> None:
            nonlocal open_, module, inside
            if open_ is not None:  # the parent's own text ends at its first child
                open_.stop = len(chunks)
                open_.leaf = False
                open_ = None
            name = _LOCAL_NAMES.get(tag) or _local(tag)
            record: _Text | None = None
            if name == "module":
                push((None, module, inside))
                module = _Module()
                order.append(module)
                inside = True
                return
            if inside:
                if module is not None and name in _KNOWN_MODULE:
                    record = _Text(name, len(chunks))
                    module.fields.append(record)
                    if name != "timestamp":  # a timestamp's text runs to its end
                        open_ = record
            elif name in _KNOWN:
                record = open_ = _Text(name, len(chunks))
                order.append(record)
            push((record, module, inside))
            module = None

        def end(_tag: str) -> None:
            nonlocal open_, module, inside
            record, module, inside = pop()
            if record is not None and record.stop < 0:
                record.stop = len(chunks)
            open_ = None

        parser = expat.ParserCreate(None, "}")  # namespaces: "uri}local"
        parser.buffer_text = True
        parser.ordered_attributes = True
        parser.StartDoctypeDeclHandler = _refuse
        parser.EntityDeclHandler = _refuse
        parser.UnparsedEntityDeclHandler = _refuse
        parser.ExternalEntityRefHandler = _refuse
        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = chunks.append
        parser.Parse(body, False)  # as ElementTree feeds it: the data, then the end
        parser.Parse(b"", True)
        self.chunks = chunks
        self.order = order

    def text(self, record: _Text) -> str:
        return "".join(self.chunks[record.start : record.stop])


def parse_check(
    body: bytes, zone: Zone = Zone.INTERNAL, address: str | None = None
) -> DeviceRequest:
    """The device's request; CheckError(400) for anything that is not a usable check.

    One pass of expat over the body (`_Scan`). A DOCTYPE (and with it any entity
    declaration, external entity or parameter entity) is refused as soon as it starts;
    of the entities only the five predefined ones and character references exist.
    Fields are then read in document order, so the first of repeated fields counts
    and the first unusable one is the reason given."""
    try:
        scan = _Scan(body)
    except _Refused:
        raise CheckError(400, "DTDs and entities are not allowed") from None
    except (expat.ExpatError, LookupError, ValueError) as e:  # an unknown or multi-byte encoding
        raise CheckError(400, f"malformed XML ({e})") from None
    found: dict[str, str] = {}
    modules: list[ReportedModule] = []
    for record in scan.order:
        if isinstance(record, _Module):
            if len(modules) >= _MAX_MODULES:
                raise CheckError(400, f"more than {_MAX_MODULES} modules")
            fields = {
                f.name: t
                for f in record.fields
                if (t := _module_text(f.name, scan.text(f))) is not None
            }
            file_name = _first(fields, _MODULE_FIELDS["file_name"])
            if file_name:
                modules.append(
                    ReportedModule(
                        file_name,
                        _first(fields, _MODULE_FIELDS["version"]),
                        _first(fields, _MODULE_FIELDS["timestamp"]),
                    )
                )
        elif record.leaf and record.name not in found:
            value = _field_text(record.name, scan.text(record))
            if value is not None:
                found[record.name] = value
    get = {key: _first(found, names) for key, names in _FIELDS.items()}
    missing = [k for k in ("brand", "model") if not get[k]]
    if missing:
        raise CheckError(400, f"the check names no {' and no '.join(missing)}")
    return DeviceRequest(
        device_type=get["device_type"] or "UCPhone",
        brand=get["brand"] or "",
        model=get["model"] or "",
        revision=get["revision"] or "",
        locale=get["locale"] or "",
        mac=_maybe(normalise_mac, get["mac"]),
        serial=_maybe(normalise_serial, get["serial"]),
        modules=tuple(modules),
        version=get["version"],
        user_id=get["user_id"],
        zone=zone,
        address=address,
    )


def _maybe(normalise: object, value: str | None) -> str | None:
    """A blank or malformed MAC or serial counts as absent (the phone may send either)."""
    if value is None:
        return None
    try:
        return normalise(value)  # type: ignore[operator, no-any-return]
    except InvalidIdentifier:
        return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class BaseUrls:
    """`scheme://host[:port]` of the internal and the external side (no port when it is
    the scheme's own); `empty_when_none`: with nothing to offer, the response still
    carries both elements, empty, as Lync's did (docs/protocol.md §1)."""

    internal: str
    external: str
    empty_when_none: bool = False

    @classmethod
    def of(
        cls,
        internal_fqdn: str,
        internal_port: int,
        external_fqdn: str,
        external_port: int,
        *,
        internal_scheme: str = "https",
        external_scheme: str = "https",
        empty_when_none: bool = False,
    ) -> BaseUrls:
        def url(scheme: str, host: str, port: int) -> str:
            return f"{scheme}://{host}" + ("" if port == _DEFAULT_PORTS[scheme] else f":{port}")

        return cls(
            url(internal_scheme, internal_fqdn, internal_port),
            url(external_scheme, external_fqdn, external_port),
            empty_when_none,
        )

    @classmethod
    def from_config(cls, config: Config) -> BaseUrls:
        """What `config` announces (its listeners' ports: give the bound ones, not 0)."""
        return cls.of(
            config.internal_fqdn,
            config.internal_port,
            config.external_fqdn,
            config.external_port,
            internal_scheme=config.internal_scheme.value,
            external_scheme=config.service.external_scheme.value,
            empty_when_none=config.service.empty_base_urls,
        )


INTERNAL_FILES = "/DeviceUpdateFiles_Int/"
EXTERNAL_FILES = "/DeviceUpdateFiles_Ext/"


def render_response(decision: AnyDecision, urls: BaseUrls) -> bytes:
    """`<Response>`: `Downloads` 0, or the first offer's base URLs and modules.

    The dialect carries one BaseURL, so one update type is offered per check; a device
    with several takes the next one at its next check.
    """
    root = ET.Element("Response")
    if not decision.offers:
        ET.SubElement(root, "Downloads").text = "0"
        if urls.empty_when_none:
            ET.SubElement(root, "BaseURL")
            ET.SubElement(root, "ExternalBaseURL")
        return _xml(root)
    offer: Offer = decision.offers[0]
    folder = offer.files[0].path.parent.as_posix()
    ET.SubElement(root, "Downloads").text = str(len(offer.files))
    ET.SubElement(root, "BaseURL").text = f"{urls.internal}{INTERNAL_FILES}{folder}"
    ET.SubElement(root, "ExternalBaseURL").text = f"{urls.external}{EXTERNAL_FILES}{folder}"
    modules = ET.SubElement(root, "Modules")
    for f in offer.files:
        m = ET.SubElement(modules, "Module")
        ET.SubElement(m, "FileName").text = f.file_name
        if f.signature_file_name:
            ET.SubElement(m, "SignatureFileName").text = f.signature_file_name
        ET.SubElement(m, "Version").text = offer.version
        if f.timestamp:
            ET.SubElement(m, "Timestamp").text = f.timestamp
        ET.SubElement(m, "Size").text = str(f.size)
        ET.SubElement(m, "SHA256").text = f.sha256
    return _xml(root)


def _xml(root: ET.Element) -> bytes:
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


def audit_line(at: datetime, client: str, request: DeviceRequest, decision: AnyDecision) -> str:
    """One line of Lync's `;`-separated audit file (docs/protocol.md §9)."""
    asked = "#".join(
        f"{m.file_name};{m.version or ''};{m.timestamp or ''}" for m in request.modules
    )
    offered = "#".join(
        f"{f.file_name};{f.signature_file_name or ''};{o.version};{f.timestamp or ''}"
        for o in decision.offers[:1]
        for f in o.files
    )
    fields = [
        at.strftime("%Y-%m-%d %H:%M:%S"),
        client,
        request.device_type,
        request.mac or "",
        request.serial or "",
        request.brand,
        request.model,
        request.revision,
        request.locale,
        asked,
        offered,
        request.user_id or "",
    ]
    return ";".join(_clean(f) for f in fields)


def _clean(field: str) -> str:
    """Nothing a phone sends may break a line of the audit file."""
    if field.isprintable():  # the usual case: no control character, CR and LF included
        return field
    return "".join(c if c.isprintable() else "?" for c in field)

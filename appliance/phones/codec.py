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

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from appliance.catalogue import Decision, Offer
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


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _text(elem: ET.Element) -> str | None:
    value = (elem.text or "").strip()
    if not value:
        return None
    if len(value) > _MAX_FIELD or not value.isprintable():
        raise CheckError(400, f"field <{_local(elem.tag)}> is too long or not printable")
    return value


def _module_text(name: str, elem: ET.Element) -> str | None:
    """A module field. The timestamp is "the time of the update request" (Lync 2010's
    audit schema, docs/protocol.md §5), not a file date: any text is kept as sent, never
    checked, so an odd clock or format can never cost a phone its update."""
    if name in _MODULE_FIELDS["timestamp"]:
        return "".join(elem.itertext()).strip() or None
    return _text(elem)


def _first(found: dict[str, str], names: Sequence[str]) -> str | None:
    return next((found[n] for n in names if n in found), None)


def parse_check(
    body: bytes, zone: Zone = Zone.INTERNAL, address: str | None = None
) -> DeviceRequest:
    """The device's request; CheckError(400) for anything that is not a usable check."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise CheckError(400, "DTDs and entities are not allowed") from None
    except (ET.ParseError, LookupError, ValueError) as e:  # an unknown or multi-byte encoding
        raise CheckError(400, f"malformed XML ({e})") from None
    found: dict[str, str] = {}
    modules: list[ReportedModule] = []
    in_modules: set[int] = set()
    for elem in root.iter():
        name = _local(elem.tag)
        if name == "module":
            if len(modules) >= _MAX_MODULES:
                raise CheckError(400, f"more than {_MAX_MODULES} modules")
            if id(elem) not in in_modules:  # a nested module's subtree is marked already
                in_modules.update(id(d) for d in elem.iter())
            fields = {
                n: t
                for c in elem
                if (n := _local(c.tag)) in _KNOWN_MODULE and (t := _module_text(n, c)) is not None
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
        elif name in _KNOWN and name not in found and len(elem) == 0 and id(elem) not in in_modules:
            value = _text(elem)
            if value is not None:
                found[name] = value
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


def render_response(decision: Decision, urls: BaseUrls) -> bytes:
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


def audit_line(at: datetime, client: str, request: DeviceRequest, decision: Decision) -> str:
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
    return "".join(c if c.isprintable() and c not in "\r\n" else "?" for c in field)

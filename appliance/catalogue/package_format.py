"""The codec of a package's `updateInfo.xml` (docs/protocol.md §8), in one place.

The schema is not public; this reads our reconstruction leniently: fields as attributes
or child elements in any case, vendor-style aliases, and device fields derived from the
member path `<DeviceType>/<Brand>/<Model>/<Revision>/<Locale>/<UpdateType>/<file>` when
the XML lacks them. `render_update_info` writes the canonical form.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from appliance.identifiers import is_version
from appliance.model import RULE_KEY_FIELDS, RuleKey

UPDATE_INFO = "updateInfo.xml"
SIGNATURE_SUFFIX = ".cat"

# Field -> accepted spellings (lower case, namespace-free), first one canonical.
_ALIASES: dict[str, tuple[str, ...]] = {
    "device_type": ("devicetype", "device"),
    "brand": ("brand", "vendor", "manufacturer"),
    "model": ("model",),
    "revision": ("revision", "hardwarerevision"),
    "locale": ("locale", "language", "culture"),
    "update_type": ("updatetype",),
    "version": ("version", "firmwareversion"),
    "timestamp": ("timestamp", "date", "releasedate"),
    "guid": ("guid", "id", "ruleid"),
}
_FILE_ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "filename"),
    "path": ("path", "member", "source"),
    "signature": ("signature", "signaturefile", "signaturefilename", "signaturepath"),
}
_SAFE_FIELD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")


class PackageFormatError(Exception):
    """updateInfo.xml or the member layout is not usable; str() says where and why."""


@dataclass(frozen=True)
class PackageModule:
    file_name: str  # the name a phone sees (FileName)
    member: str  # the member path inside the cabinet
    signature_member: str | None


@dataclass(frozen=True)
class PackageUpdate:
    key: RuleKey
    version: str
    timestamp: str | None
    modules: tuple[PackageModule, ...]
    guid: str | None = None  # the rule's pre-assigned GUID (`id`/`guid`), kept as spelled

    def members(self) -> Iterator[str]:
        for m in self.modules:
            yield m.member
            if m.signature_member:
                yield m.signature_member


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _field(elem: ET.Element, names: Sequence[str]) -> str | None:
    attrs = {_local(k): v for k, v in elem.attrib.items()}
    for name in names:
        if name in attrs and attrs[name].strip():
            return attrs[name].strip()
    for child in elem:
        if _local(child.tag) in names and child.text and child.text.strip():
            return child.text.strip()
    return None


def parse_update_info(data: bytes, members: Sequence[str]) -> tuple[PackageUpdate, ...]:
    """Read the updates of a package; `members` are the cabinet's (sanitised) names."""
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        raise PackageFormatError(
            f"{UPDATE_INFO}: refused: DTDs and entities are not allowed ({type(e).__name__})"
        ) from e
    except (ET.ParseError, LookupError, ValueError) as e:  # an unknown or multi-byte encoding
        raise PackageFormatError(f"{UPDATE_INFO}: not well-formed XML: {e}") from e
    by_folded = {m.casefold(): m for m in members}
    updates: list[PackageUpdate] = []
    seen: set[tuple[tuple[str, ...], str]] = set()
    for number, elem in enumerate((e for e in root.iter() if _local(e.tag) == "update"), start=1):
        update = _read_update(elem, number, by_folded)
        ident = (update.key.folded(), update.version)
        if ident in seen:
            raise PackageFormatError(
                f"{UPDATE_INFO}: update {number} repeats {update.key} {update.version}"
            )
        seen.add(ident)
        updates.append(update)
    if not updates:
        raise PackageFormatError(f"{UPDATE_INFO}: lists no <Update>")
    return tuple(updates)


def _read_update(elem: ET.Element, number: int, by_folded: dict[str, str]) -> PackageUpdate:
    where = f"{UPDATE_INFO}: update {number}"
    fields = {name: _field(elem, aliases) for name, aliases in _ALIASES.items()}
    file_elems = [e for e in elem.iter() if _local(e.tag) in ("file", "module")]
    raw_files = [{k: _field(e, a) for k, a in _FILE_ALIASES.items()} for e in file_elems]

    # Device fields missing from the XML come from the first file's member path.
    first_path = next((f["path"] for f in raw_files if f["path"]), None)
    if first_path is not None:
        parts = PurePosixPath(first_path.replace("\\", "/")).parts
        if len(parts) == 7:
            derived = dict(zip(RULE_KEY_FIELDS, parts[:6], strict=True))
            for name, value in derived.items():
                fields[name] = fields[name] or value
    missing = [n for n in (*RULE_KEY_FIELDS, "version") if not fields[n]]
    if missing:
        raise PackageFormatError(f"{where}: missing {', '.join(missing)}")
    for name in RULE_KEY_FIELDS:
        if not _SAFE_FIELD.match(fields[name] or ""):
            raise PackageFormatError(f"{where}: {name} {fields[name]!r} is not a safe name")
    version = fields["version"] or ""
    if not is_version(version):
        raise PackageFormatError(f"{where}: version {version!r} is not a dotted version")
    version = ".".join(str(int(part)) for part in version.split("."))  # 4.0.07577 -> 4.0.7577
    timestamp = fields["timestamp"]
    if timestamp is not None and (len(timestamp) > 64 or not timestamp.isprintable()):
        raise PackageFormatError(f"{where}: timestamp is not a printable date")
    guid = fields["guid"]
    if guid is not None and (len(guid) > 64 or not guid.isprintable()):
        raise PackageFormatError(f"{where}: guid is over 64 characters or not printable")
    key = RuleKey(*(fields[n] or "" for n in RULE_KEY_FIELDS))
    prefix = "/".join(fields[n] or "" for n in RULE_KEY_FIELDS)

    if not raw_files:  # no file list: every non-signature member under the prefix
        raw_files = [
            {"name": None, "path": m, "signature": None}
            for folded, m in sorted(by_folded.items())
            if folded.startswith(prefix.casefold() + "/") and not folded.endswith(SIGNATURE_SUFFIX)
        ]
    if not raw_files:
        raise PackageFormatError(f"{where} ({key}): no files, and no members under {prefix}/")
    modules = tuple(_read_module(f, prefix, where, by_folded) for f in raw_files)
    names = [m.file_name.casefold() for m in modules]
    if len(set(names)) != len(names):
        raise PackageFormatError(f"{where} ({key}): two files share a name")
    return PackageUpdate(key, version, timestamp, modules, guid)


def _read_module(
    raw: dict[str, str | None], prefix: str, where: str, by_folded: dict[str, str]
) -> PackageModule:
    name, path, signature = raw["name"], raw["path"], raw["signature"]
    if path is None and name is None:
        raise PackageFormatError(f"{where}: a <File> has neither name nor path")
    path = (path or f"{prefix}/{name}").replace("\\", "/")
    member = by_folded.get(path.casefold())
    if member is None:
        raise PackageFormatError(f"{where}: file {path!r} is not in the package")
    name = name or PurePosixPath(member).name
    if not _SAFE_FILE.match(name) or name.casefold() == UPDATE_INFO.casefold():
        raise PackageFormatError(f"{where}: file name {name!r} is not a safe name")
    folder = PurePosixPath(member).parent
    if signature is not None:
        signature = signature.replace("\\", "/")
        wanted = signature if "/" in signature else (folder / signature).as_posix()
        signature_member = by_folded.get(wanted.casefold())
        if signature_member is None:
            raise PackageFormatError(f"{where}: signature file {signature!r} is not in the package")
    else:
        guess = (folder / (PurePosixPath(member).stem + SIGNATURE_SUFFIX)).as_posix()
        signature_member = by_folded.get(guess.casefold())
    if signature_member is not None and not _SAFE_FILE.match(PurePosixPath(signature_member).name):
        raise PackageFormatError(f"{where}: signature name {signature_member!r} is not safe")
    return PackageModule(name, member, signature_member)


def render_update_info(updates: Sequence[PackageUpdate]) -> bytes:
    """The canonical updateInfo.xml for `updates` (what make-sample-package writes)."""
    root = ET.Element("Updates")
    inner = ET.SubElement(root, "Updates")
    for u in updates:
        attrs = {
            "version": u.version,
            "deviceType": u.key.device_type,
            "brand": u.key.brand,
            "model": u.key.model,
            "revision": u.key.revision,
            "locale": u.key.locale,
            "updateType": u.key.update_type,
        }
        if u.timestamp:
            attrs["timestamp"] = u.timestamp
        if u.guid:
            attrs["guid"] = u.guid
        elem = ET.SubElement(inner, "Update", attrs)
        for m in u.modules:
            file_attrs = {"name": m.file_name, "path": m.member}
            if m.signature_member:
                file_attrs["signature"] = m.signature_member
            ET.SubElement(elem, "File", file_attrs)
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body + b"\n"

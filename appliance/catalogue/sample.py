"""`ucupdates make-sample-package`: a realistic vendor-style package to try things with.

Several brands, models and locales as `UCUpdates.cab` carries them (docs/protocol.md
§8): `updateInfo.xml` at the root, then one image (`CPE.nbt`) and its signature file
(`CPE.cat`) per device. The image bytes are deterministic (seeded by path and version)
and about half compressible, like real firmware images.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from appliance.cab import CabEntry, write_cab
from appliance.catalogue.package_format import (
    UPDATE_INFO,
    PackageModule,
    PackageUpdate,
    render_update_info,
)
from appliance.model import RuleKey

DEFAULT_VERSION = "4.0.7577.4387"
DEFAULT_IMAGE_SIZE = 256 * 1024
SAMPLE_TIME = datetime(2013, 4, 2, tzinfo=UTC)

SAMPLE_DEVICES: tuple[tuple[str, str, str, str, str], ...] = (
    ("UCPhone", "Polycom", "CX600", "A", "ENU"),
    ("UCPhone", "Polycom", "CX600", "A", "DEU"),
    ("UCPhone", "Polycom", "CX500", "A", "ENU"),
    ("UCPhone", "Polycom", "CX3000", "A", "ENU"),
    ("UCPhone", "Polycom", "CX700", "A", "ENU"),
    ("UCPhone", "Aastra", "6721ip", "A", "ENU"),
    ("UCPhone", "Aastra", "6725ip", "A", "FRA"),
    ("UCPhone", "HP", "4120", "A", "ENU"),
)
_CHUNK = 64 * 1024


def _image_chunks(seed: str, size: int) -> Iterator[bytes]:
    """`size` bytes: a WinCE image signature, then alternating random and repetitive runs."""
    rng = random.Random(hashlib.sha256(seed.encode()).digest())  # noqa: S311 - not secret
    filler = (f"{seed} ".encode() * (_CHUNK // len(seed)))[: _CHUNK // 2]
    produced = 0
    header = b"B000FF\n"
    while produced < size:
        block = header + rng.randbytes(_CHUNK // 2 - len(header)) + filler
        header = b""
        block = block[: size - produced]
        produced += len(block)
        yield block


def sample_updates(version: str = DEFAULT_VERSION, guids: bool = False) -> list[PackageUpdate]:
    """The sample's updates; with `guids`, each names a rule GUID (a UUID of its key)."""
    updates = []
    for device_type, brand, model, revision, locale in SAMPLE_DEVICES:
        key = RuleKey(device_type, brand, model, revision, locale, "CPE")
        folder = f"{device_type}/{brand}/{model}/{revision}/{locale}/CPE"
        module = PackageModule("CPE.nbt", f"{folder}/CPE.nbt", f"{folder}/CPE.cat")
        guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ucupdates:{key}")) if guids else None
        updates.append(PackageUpdate(key, version, "2013-04-02T00:00:00Z", (module,), guid))
    return updates


def make_sample_package(
    out: Path,
    version: str = DEFAULT_VERSION,
    image_size: int = DEFAULT_IMAGE_SIZE,
    guids: bool = False,
) -> list[PackageUpdate]:
    """Write the sample package to `out` (MSZIP-compressed); returns what it holds."""
    updates = sample_updates(version, guids)
    xml = render_update_info(updates)
    entries = [CabEntry(UPDATE_INFO, len(xml), partial(iter, [xml]), SAMPLE_TIME)]
    for u in updates:
        for m in u.modules:
            seed = f"{m.member} {version}"
            entries.append(
                CabEntry(
                    m.member, image_size, partial(_image_chunks, seed, image_size), SAMPLE_TIME
                )
            )
            if m.signature_member:
                signature = b"0\x82" + hashlib.sha512(seed.encode()).digest() * 16
                entries.append(
                    CabEntry(
                        m.signature_member, len(signature), partial(iter, [signature]), SAMPLE_TIME
                    )
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_cab(out, entries, compression="mszip")
    return updates


SAMPLE_PHONE_MAC = "00-04-F2-00-00-01"


def sample_check(version: str = "4.0.7577.4366", mac: str = SAMPLE_PHONE_MAC) -> bytes:
    """An update check as a Polycom CX600 (ENU) running `version` would send it."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        "<Request><DeviceType>UCPhone</DeviceType>"
        f"<MacAddress>{mac}</MacAddress><SerialNumber>64167F0001</SerialNumber>"
        "<Vendor>Polycom</Vendor><Model>CX600</Model><Revision>A</Revision>"
        "<Locale>ENU</Locale><UserId></UserId><Modules><Module><FileName>CPE.nbt</FileName>"
        f"<Version>{version}</Version><Timestamp>2012-12-10T00:00:00Z</Timestamp>"
        "</Module></Modules></Request>\n"
    ).encode()

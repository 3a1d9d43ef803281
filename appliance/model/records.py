"""The appliance's plain data: rules, update files, test devices, device requests.

Nothing here does I/O; the store returns these records and the decision reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

RULE_KEY_FIELDS = ("device_type", "brand", "model", "revision", "locale", "update_type")


@dataclass(frozen=True, order=True)
class RuleKey:
    """What a rule is keyed by (docs/protocol.md §6). Matching ignores case."""

    device_type: str
    brand: str
    model: str
    revision: str
    locale: str
    update_type: str

    def folded(self) -> tuple[str, ...]:
        """The case-insensitive identity of the key."""
        return tuple(getattr(self, f).casefold() for f in RULE_KEY_FIELDS)

    def store_dir(self, version: str) -> PurePosixPath:
        """`<DeviceType>/<Brand>/<Model>/<Revision>/<Locale>/<Version>/<UpdateType>`."""
        return PurePosixPath(
            self.device_type,
            self.brand,
            self.model,
            self.revision,
            self.locale,
            version,
            self.update_type,
        )

    def __str__(self) -> str:
        return "/".join(getattr(self, f) for f in RULE_KEY_FIELDS)


class RuleState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    RESTORED = "restored"
    RESET = "reset"


@dataclass(frozen=True)
class Rule:
    id: int
    key: RuleKey
    approved_version: str | None
    pending_version: str | None
    restore_version: str | None
    state: RuleState
    updated_at: str
    guid: str | None = None  # the GUID updateInfo.xml pre-assigns to the rule, if any (§8)

    def versions(self) -> frozenset[str]:
        """Every version this rule still references (what clean-files keeps)."""
        return frozenset(
            v for v in (self.approved_version, self.pending_version, self.restore_version) if v
        )


@dataclass(frozen=True)
class UpdateFile:
    """One module of an update: the image a phone fetches, with its signature file."""

    key: RuleKey
    version: str
    file_name: str
    signature_file_name: str | None
    size: int
    sha256: str
    timestamp: str | None
    path: PurePosixPath  # relative to the DeviceUpdateStore root


class IdentifierKind(StrEnum):
    MAC = "mac"
    SERIAL = "serial"


@dataclass(frozen=True)
class TestDevice:
    __test__ = False  # not a pytest test class

    id: int
    name: str
    kind: IdentifierKind
    identifier: str  # normalised (see identifiers.py)
    scope: str
    created_at: str


class Zone(StrEnum):
    INTERNAL = "internal"
    EXTERNAL = "external"


@dataclass(frozen=True)
class ReportedModule:
    file_name: str
    version: str | None
    timestamp: str | None = None


@dataclass(frozen=True)
class DeviceRequest:
    """What a phone says about itself in an update check (docs/protocol.md §5)."""

    device_type: str
    brand: str
    model: str
    revision: str
    locale: str
    mac: str | None = None  # normalised, or None when blank
    serial: str | None = None  # normalised, or None when blank
    modules: tuple[ReportedModule, ...] = ()
    version: str | None = None  # a top-level version when there is no module list
    user_id: str | None = None
    zone: Zone = Zone.INTERNAL
    address: str | None = None


@dataclass(frozen=True)
class Catalog:
    """A snapshot of what the decision needs: rules, their files, and the test devices."""

    rules: tuple[Rule, ...] = ()
    files: tuple[UpdateFile, ...] = ()
    test_macs: frozenset[str] = frozenset()
    test_serials: frozenset[str] = frozenset()
    # updates (folded rule key, version) with a stored file that failed verification
    broken: frozenset[tuple[tuple[str, ...], str]] = frozenset()
    _files_by_update: dict[tuple[tuple[str, ...], str], tuple[UpdateFile, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        grouped: dict[tuple[tuple[str, ...], str], list[UpdateFile]] = {}
        for f in self.files:
            grouped.setdefault((f.key.folded(), f.version), []).append(f)
        for k, v in grouped.items():
            self._files_by_update[k] = tuple(sorted(v, key=lambda f: f.file_name.casefold()))

    def files_for(self, key: RuleKey, version: str) -> tuple[UpdateFile, ...]:
        return self._files_by_update.get((key.folded(), version), ())


class FileRole(StrEnum):
    """What a stored file is to its update (the `files.role` column)."""

    IMAGE = "image"  # what a phone fetches; names its signature file
    SIGNATURE = "signature"  # the signature file of an image


@dataclass(frozen=True)
class NewFile:
    role: FileRole
    file_name: str
    signature_name: str | None
    path: PurePosixPath
    size: int
    sha256: str


@dataclass(frozen=True)
class StoredFile:
    key: RuleKey
    version: str
    role: FileRole
    file_name: str
    signature_name: str | None
    path: PurePosixPath
    size: int
    sha256: str


@dataclass(frozen=True)
class Event:
    id: int
    at: str
    actor: str
    action: str
    target: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Device:
    identity: str
    mac: str | None
    serial: str | None
    device_type: str | None
    brand: str | None
    model: str | None
    revision: str | None
    locale: str | None
    version: str | None
    zone: Zone | None
    address: str | None
    user_id: str | None
    first_seen: str
    last_seen: str


@dataclass(frozen=True)
class User:
    """A local phone user (external zone); password_hash is argon2id PHC, nt_hash the hex
    NT hash for NTLM (None until the password is next set, or when NTLM is off)."""

    id: int
    name: str
    password_hash: str
    created_at: str
    updated_at: str
    disabled: bool
    nt_hash: str | None = None

    @property
    def ntlm(self) -> bool:
        """Whether the user can sign in with NTLM (an NT hash is stored)."""
        return self.nt_hash is not None


class Role(StrEnum):
    """What a Control Panel account may do."""

    ADMIN = "admin"  # may change everything
    VIEWER = "viewer"  # may read everything, change nothing


@dataclass(frozen=True)
class AdminAccount:
    """A Control Panel account; password_hash is argon2id."""

    id: int
    name: str
    role: Role
    password_hash: str
    created_at: str
    updated_at: str
    failures: int
    first_failure_at: str | None
    locked_until: str | None
    last_login_at: str | None


@dataclass(frozen=True)
class AdminSession:
    """A server-side Control Panel session, found by the SHA-256 of its cookie token."""

    token_hash: str
    account_id: int
    csrf_token: str
    created_at: str
    last_seen_at: str
    expires_at: str
    address: str | None


@dataclass(frozen=True)
class ApiToken:
    """An API token (`Authorization: Bearer`), found by the SHA-256 of its secret."""

    id: int
    name: str
    role: Role
    token_hash: str
    created_at: str
    expires_at: str | None  # None: never
    last_used_at: str | None


@dataclass(frozen=True)
class CapturedTls:
    """What the TLS layer of a captured request negotiated (None over plain HTTP)."""

    version: str  # "TLSv1", "TLSv1.2"...
    cipher: str | None  # OpenSSL's name, e.g. "AES128-SHA"
    server_name: str | None  # the SNI the client sent; None: it sent none


@dataclass(frozen=True)
class Capture:
    """One request kept by capture mode (docs/phones.md), with what the appliance answered.

    Headers are as sent, except credentials: `Authorization` keeps its scheme only and
    `Cookie` its cookie names only. `model` is `DeviceType/Brand/Model` of a parsed check.
    """

    id: str
    captured_at: str
    reason: str
    client: str
    zone: Zone
    model: str | None
    method: str
    target: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    tls: CapturedTls | None
    status: int
    answer: bytes

"""Health checks an admin or a monitoring system runs.

`checks` runs them all: the config, the server certificate (present, valid, not expiring
within `check.cert_critical_days` (a warning within `syslog.cert_warn_days`), carrying
every configured name; its signature, and whether it suits the phones of the inventory),
the store (SQLite's integrity check, the schema version, every file of a referenced update
on disk with its recorded size and SHA-256), the figures (`figures`: free space, rules,
phones still checking), each listener accepting a TCP connection, a TLS handshake on the
internal HTTPS listener that presents the certificate in use, and the DNS listener
answering for each discovery name (`dns.names`) of the first domain. `ucupdates check`
(`plugin`) prints them as a monitoring plugin. A check that passes may carry a warning
(`warning`): something not yet broken, or that keeps some phones away, such as a
certificate lacking `ucupdates.<domain>` beside `ucupdates-r2.<domain>`
(appliance.tls.review). `/health` (in `health`) runs only `process_checks`, the ones about
the process itself: it cannot usefully connect to its own listeners.
"""

from __future__ import annotations

import hashlib
import math
import socket
import ssl
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath

from appliance.config import Address, Config
from appliance.model import Device
from appliance.ops.figures import check_disk, check_phones, check_rules
from appliance.ops.perfdata import Perf, at_least
from appliance.ops.pool_check import pool_checks
from appliance.ops.results import CheckResult as CheckResult  # re-exported: /health, tests
from appliance.ops.results import guarded
from appliance.ops.results import report as report  # re-exported: /health imports it here
from appliance.store import Store, newest_schema_version
from appliance.tls import (
    CertError,
    ServerCredentials,
    certificate_problems,
    certificate_warnings,
    days_left,
    describe_certificate,
    existing_credentials,
)

TIMEOUT = 2.0  # seconds, for each connection, handshake and DNS query
_guarded = guarded


# -- the process's own state -----------------------------------------------------------------


def check_config(config: Config) -> CheckResult:
    where = str(config.source) if config.source else "the embedded defaults"
    return CheckResult("config", True, f"loaded from {where}; data in {config.data_dir}")


def check_certificate(config: Config, now: datetime, devices: Sequence[Device] = ()) -> CheckResult:
    """The certificate in use; `devices` (the inventory) for the signature warning."""
    found = existing_credentials(config.tls.cert_file, config.tls.key_file, config.tls_dir)
    if found is None:
        return CheckResult("certificate", False, f"none yet in {config.tls_dir}")
    source, creds = found
    info = describe_certificate(creds.cert_file)
    left = days_left(creds, now)
    warn_days, critical_days = config.syslog.cert_warn_days, config.check.cert_critical_days
    # whole days, rounded down, so that the thresholds compare as the check does
    figures = (
        Perf("cert_days_left", math.floor(left), "", at_least(warn_days), at_least(critical_days)),
    )
    problems = certificate_problems(config, creds.names, math.inf)  # the names; expiry here
    if left <= 0:
        problems.append("has expired")
    elif left < critical_days:
        problems.append(f"expires within {critical_days} days (check.cert_critical_days)")
    if info.not_before > now:
        problems.append(f"is not valid before {info.not_before:%Y-%m-%d %H:%M} UTC")
    summary = (
        f"{creds.cert_file} ({source}) valid until {creds.not_after:%Y-%m-%d} "
        f"({left:.0f} days), signed {info.signature}"
    )
    if problems:
        detail = f"{summary}: " + "; ".join(problems)
        return CheckResult("certificate", False, detail, perfdata=figures)
    warnings = certificate_warnings(config, creds.cert_file, devices)
    if left < warn_days:
        warnings.insert(0, f"expires within {warn_days} days (syslog.cert_warn_days)")
    if warnings:
        detail = f"{summary}: " + "; ".join(warnings)
        return CheckResult("certificate", True, detail, True, figures)
    return CheckResult("certificate", True, summary, perfdata=figures)


def check_store(store: Store) -> CheckResult:
    errors = store.integrity_errors()
    version, newest = store.schema_version, newest_schema_version()
    if errors:
        shown = "; ".join(errors[:3]) + (
            f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        )
        return CheckResult("store", False, f"integrity check: {shown}")
    if version != newest:
        return CheckResult("store", False, f"schema version {version}, expected {newest}")
    return CheckResult("store", True, f"integrity ok, schema version {version}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_files(config: Config, store: Store, hashes: bool = False) -> CheckResult:
    """Every file of an update a rule references is in the store folder, at its size, and
    with `hashes` (`ucupdates check`; not `/health`, which runs often) its bytes match the
    recorded SHA-256: that reads every referenced file, about 1 s a GB here. On a pool
    node (PostgreSQL) a missing file whose blob the store holds is one the node's cache
    has yet to fetch: a warning, not a failure."""
    referenced = {(r.key.folded(), v) for r in store.rules() for v in r.versions()}
    files = [f for f in store.stored_files() if (f.key.folded(), f.version) in referenced]
    problems = []
    hashed = 0
    to_fetch: list[int] = []  # pool mode: sizes of files whose blob the node has yet to fetch
    for f in files:
        path = config.store_dir / PurePosixPath(f.path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if not store.keeps_blobs:
                problems.append(f"{f.path} is missing")
            elif store.has_blob(f.sha256):
                to_fetch.append(f.size)  # not offered until fetched: not a fault
            else:
                problems.append(f"{f.path} is missing, and the store holds no blob of it")
            continue
        if not path.is_file():
            problems.append(f"{f.path} is not a file")
        elif size != f.size:
            problems.append(f"{f.path} has {size} bytes, {f.size} recorded")
        elif hashes:
            hashed += size
            if _sha256(path) != f.sha256:
                problems.append(f"{f.path} fails its SHA-256 (corrupt: not offered)")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return CheckResult("files", False, "; ".join(problems[:3]) + more)
    verified = f", {hashed / 1e6:.1f} MB hashed" if hashes else ""
    detail = f"{len(files)} file(s) of {len(referenced)} update(s){verified}"
    if to_fetch:
        return CheckResult(
            "files",
            True,
            f"{detail}; {len(to_fetch)} file(s), {sum(to_fetch) / 1e6:.1f} MB, not fetched "
            "from the store yet (their updates are offered once they are)",
            warning=True,
        )
    return CheckResult("files", True, detail)


# -- from outside: the listeners and the DNS answer ------------------------------------------


def _probe_host(address: Address) -> str:
    """Where to connect to reach a listener: its address, loopback for a wildcard."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104
        address.host, address.host
    )


def listener_addresses(config: Config) -> list[tuple[str, Address]]:
    """Every configured TCP listener, by name (DNS listens on TCP as well as UDP)."""
    found = [
        ("dns", config.listeners.dns),
        ("internal-https", config.listeners.internal_https),
        ("external-https", config.listeners.external_https),
        ("admin", config.listeners.admin),
    ]
    if config.listeners.internal_http is not None:
        found.insert(2, ("internal-http", config.listeners.internal_http))
    return found


def check_listener(name: str, address: Address, timeout: float = TIMEOUT) -> CheckResult:
    host = _probe_host(address)
    try:
        with socket.create_connection((host, address.port), timeout=timeout):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        return CheckResult(f"listener {name}", False, f"{address}: {reason}")
    return CheckResult(f"listener {name}", True, f"{address} accepts connections")


def check_https(
    address: Address,
    server_name: str,
    creds: ServerCredentials | None,
    timeout: float = TIMEOUT,
) -> CheckResult:
    """A TLS handshake (with SNI `server_name`) that presents the certificate in use."""
    host = _probe_host(address)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # compared with the certificate in use instead
    try:
        with (
            socket.create_connection((host, address.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True) or b""
            version, cipher = tls.version(), tls.cipher()
    except (OSError, ssl.SSLError) as e:
        reason = "timed out" if isinstance(e, TimeoutError) else str(e)
        return CheckResult("https", False, f"{address}: {reason}")
    detail = f"{address}: {version} {cipher[0] if cipher else ''}".rstrip()
    if creds is not None:
        expected = describe_certificate(creds.cert_file).sha256.replace(":", "").lower()
        if hashlib.sha256(der).hexdigest() != expected:
            return CheckResult("https", False, f"{detail}, but not the certificate in use")
        detail += f", presents {creds.cert_file.name}"
    return CheckResult("https", True, detail)


def check_dns(address: Address, name: str, timeout: float = TIMEOUT) -> CheckResult:
    """An A (else AAAA) answer for `name` from the DNS listener, over UDP."""
    from dnslib import QTYPE, RCODE, DNSRecord

    host = _probe_host(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    answers: list[str] = []
    for qtype in ("A", "AAAA"):
        question = DNSRecord.question(name, qtype)
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                sock.connect((host, address.port))
                sock.send(question.pack())
                reply = DNSRecord.parse(sock.recv(4096))
        except TimeoutError:
            return CheckResult("dns", False, f"{address}: no answer for {name} in {timeout:g} s")
        except OSError as e:
            return CheckResult("dns", False, f"{address}: no answer for {name} ({e.strerror})")
        except Exception as e:  # dnslib's parse errors
            return CheckResult("dns", False, f"{address}: unreadable answer for {name}: {e}")
        if reply.header.id != question.header.id:
            return CheckResult("dns", False, f"{address}: an answer to another question")
        if reply.header.rcode != RCODE.NOERROR:
            rcode = RCODE.get(reply.header.rcode)
            return CheckResult("dns", False, f"{address}: {rcode} for {name} {qtype}")
        answers = [
            f"{QTYPE.get(rr.rtype)} {rr.rdata}"
            for rr in reply.rr
            if rr.rtype == getattr(QTYPE, qtype)
        ]
        if answers:
            break
    if not answers:
        return CheckResult("dns", False, f"{address}: no address for {name}")
    return CheckResult("dns", True, f"{name} " + ", ".join(answers))


def check_dns_names(address: Address, names: Sequence[str], timeout: float) -> CheckResult:
    """`check_dns` for each name: passes when every one has an address."""
    results = [check_dns(address, name, timeout) for name in names]
    failed = [r for r in results if not r.ok]
    if failed or not results:
        return failed[0] if failed else CheckResult("dns", False, "no discovery name (dns.names)")
    return CheckResult("dns", True, "; ".join(r.detail for r in results))


# -- putting them together -------------------------------------------------------------------


def store_checks(
    config: Config, store: Store | None, problem: str | None = None, hashes: bool = False
) -> list[CheckResult]:
    if store is None:
        why = problem or f"no database at {config.db_path}"
        return [CheckResult("store", False, why), CheckResult("files", False, "no store")]
    return [
        _guarded("store", lambda: check_store(store)),
        _guarded("files", lambda: check_files(config, store, hashes)),
    ]


def _inventory(store: Store | None) -> list[Device]:
    """The devices seen, for the certificate's signature warning; none when the store
    cannot say (the store check reports why)."""
    if store is None:
        return []
    try:
        return store.devices()
    except Exception:
        return []


def process_checks(
    config: Config,
    store: Store | None,
    now: datetime,
    problem: str | None = None,
    hashes: bool = False,
) -> list[CheckResult]:
    """What the process can say of itself: config, certificate, store (with `hashes`, the
    stored files' SHA-256 too)."""
    return [
        check_config(config),
        _guarded("certificate", lambda: check_certificate(config, now, _inventory(store))),
        *store_checks(config, store, problem, hashes),
        *pool_checks(store, now),  # a branch node's primary, spool and replica
    ]


def checks(
    config: Config,
    store: Store | None,
    now: datetime,
    timeout: float = TIMEOUT,
    store_problem: str | None = None,
) -> list[CheckResult]:
    """Every check, in a fixed order; the network ones go to the configured listeners."""
    results = process_checks(config, store, now, store_problem, hashes=True)
    results.append(_guarded("disk", lambda: check_disk(config)))
    if store is not None:
        results.append(_guarded("rules", lambda: check_rules(store)))
        results.append(_guarded("phones", lambda: check_phones(config, store, now)))
    for name, address in listener_addresses(config):
        results.append(_guarded(f"listener {name}", _listener_probe(name, address, timeout)))
    try:
        found = existing_credentials(config.tls.cert_file, config.tls.key_file, config.tls_dir)
    except CertError:
        found = None  # the certificate check says why
    creds = found[1] if found else None
    results.append(
        _guarded(
            "https",
            lambda: check_https(
                config.listeners.internal_https, config.internal_fqdn, creds, timeout
            ),
        )
    )
    dns_names = [f"{name}.{config.domains[0]}" for name in config.dns.names]
    results.append(
        _guarded("dns", lambda: check_dns_names(config.listeners.dns, dns_names, timeout))
    )
    return results


def _listener_probe(name: str, address: Address, timeout: float) -> Callable[[], CheckResult]:
    return lambda: check_listener(name, address, timeout)

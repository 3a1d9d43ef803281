"""What the phones make of a certificate: its names and its signature (docs/protocol.md §3).

Pure: certificates, the config and device records in, findings out. `certs install`
refuses what the phones would refuse; `certs show` and `ucupdates check` report the rest.

- Names. Every name of `Config.server_names()` must be in the certificate as it is: LPE
  phones "do not support the use of wildcard entries in certificates on any Lync Server
  role" [K S50], so a name that only `*.contoso.com` covers counts as missing, and the
  message says why. The internal and external FQDNs, and at least one discovery name
  per domain, are needed (a problem: `check` fails); a discovery name missing beside
  another of the same domain (say `ucupdates.<domain>` beside `ucupdates-r2.<domain>`)
  is a warning: only the phones that look that name up are hurt.
- Signature. Tanjay-family phones (Polycom CX700, LG-Nortel IP8540) on firmware older
  than the Lync releases (4.0) say at their Client Hello that SHA-2 is not supported
  [K S3]. When the inventory holds such a phone (a version below 4.0, or none reported)
  and a certificate the appliance sends is signed with anything but SHA-1, that is a
  warning; the remedy is `tls.generated_signature = "sha1"` or a SHA-1 chain from the CA.
  Self-signed roots count too: nothing says these phones skip a root's signature.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from appliance.config import Config
from appliance.identifiers import is_version, version_tuple
from appliance.model import Device

WILDCARD_REASON = (
    "LPE phones do not accept wildcard certificates on any Lync role (docs/protocol.md §3)"
)
SHA2_FIRMWARE = (4, 0)  # Lync-era releases; 1.0.x (OCS 2007) and 3.5.x (OCS 2007 R2) before
TANJAY_MODELS = ("CX700", "8540")  # Polycom CX700; LG-Nortel IP8540 (also "LIP-8540")


def wildcard_covers(pattern: str, name: str) -> bool:
    """Whether the SAN `pattern` (`*.contoso.com`) matches `name` by its wildcard."""
    if not pattern.startswith("*.") or "." not in name:
        return False
    return name.split(".", 1)[1].lower() == pattern[2:].lower()


def missing_names(required: Iterable[str], names: Sequence[str]) -> list[str]:
    """The required names the certificate does not carry as they are, each with the
    wildcard that would have covered it: `ucupdates.contoso.com (only *.contoso.com)`."""
    present = {n.lower() for n in names}
    missing = []
    for name in required:
        if name.lower() in present:
            continue
        wildcard = next((n for n in names if wildcard_covers(n, name)), None)
        missing.append(f"{name} (only {wildcard})" if wildcard else name)
    return missing


def explain_missing(missing: Sequence[str], what: str = "name(s)") -> str:
    """`lacks the name(s) ...`, with the wildcard rule when a wildcard was the cause."""
    text = f"lacks the {what} {', '.join(missing)}"
    if any(" (only " in m for m in missing):
        text += f": {WILDCARD_REASON}"
    return text


def name_findings(config: Config, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(problems, warnings) about the certificate's DNS names (module docstring)."""
    present = {n.lower() for n in names}
    problems, warnings = [], []
    fqdns = dict.fromkeys([config.internal_fqdn, config.external_fqdn])
    discovery = [[f"{n}.{d}" for n in config.dns.names] for d in config.domains]
    hard, soft = list(fqdns), []
    for domain_names in discovery:
        if any(n in present for n in domain_names):
            soft += [n for n in domain_names if n not in present and n not in fqdns]
        else:
            hard += [n for n in domain_names if n not in fqdns]
    missing = missing_names([n for n in config.server_names() if n in hard], names)
    if missing:
        problems.append(explain_missing(missing, "configured name(s)"))
    missing = missing_names([n for n in config.server_names() if n in soft], names)
    if missing:
        because = " (phones that look it up refuse the certificate; dns.names chooses the names)"
        warnings.append(explain_missing(missing, "configured name(s)") + because)
    return problems, warnings


def signature_hash(cert: x509.Certificate) -> str:
    """The hash the certificate is signed with: `sha1`, `sha256`, ...; else the OID."""
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return cert.signature_algorithm_oid.dotted_string
    return algorithm.name if algorithm is not None else cert.signature_algorithm_oid.dotted_string


def describe_signatures(chain: Sequence[x509.Certificate]) -> str:
    """`sha256` when every certificate of the chain agrees, else `sha1 (chain: sha256)`."""
    leaf = signature_hash(chain[0])
    others = list(dict.fromkeys(signature_hash(c) for c in chain[1:]))
    if not others or others == [leaf]:
        return leaf
    return f"{leaf} (chain: {', '.join(others)})"


def is_tanjay(device: Device) -> bool:
    """A Tanjay-family phone: the Polycom CX700 or the LG-Nortel IP8540."""
    model = "".join(ch for ch in (device.model or "").upper() if ch.isalnum())
    return model == TANJAY_MODELS[0] or model.endswith(TANJAY_MODELS[1])


def before_sha2(device: Device) -> bool:
    """A Tanjay-family phone whose firmware (as last reported) may predate SHA-2."""
    if not is_tanjay(device):
        return False
    version = (device.version or "").strip()
    if not is_version(version):
        return True  # unknown: assume the worst
    return version_tuple(version)[:2] < SHA2_FIRMWARE


def signature_warnings(chain: Sequence[x509.Certificate], devices: Iterable[Device]) -> list[str]:
    """A warning when a certificate sent is SHA-2 (or other) signed while the inventory
    holds Tanjay-family phones on firmware before 4.0 (module docstring)."""
    hashes = {signature_hash(c) for c in chain}
    if hashes <= {"sha1"}:
        return []
    old = [d for d in devices if before_sha2(d)]
    if not old:
        return []
    shown = ", ".join(f"{d.model} {d.version or '(version unknown)'}" for d in old[:3])
    more = f" and {len(old) - 3} more" if len(old) > 3 else ""
    return [
        f"is signed with {', '.join(sorted(hashes - {'sha1'}))}, but {len(old)} Tanjay-family "
        f"phone(s) on firmware before 4.0 ({shown}{more}) may not support SHA-2 "
        '(docs/protocol.md §3): use tls.generated_signature = "sha1", or ask the CA '
        "for a SHA-1 chain"
    ]

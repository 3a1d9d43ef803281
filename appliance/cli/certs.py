"""`ucupdates certs`: the server certificate in use, the test CA, and the enterprise CA path.

    certs show                      the certificate in use; exit 1 when it needs attention
    certs init                      create the test CA and server certificate now
    certs csr --out FILE            a new key (kept in <data_dir>/tls) and its CSR
    certs install CERT [--chain F]  install the certificate the CA sent back

Exit status: 0 done (show: all is well); 1 the action failed or show found a problem.
The TLS area (cryptography, Twisted's TLS) loads only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from appliance.cli.exits import EX_FAILED
from appliance.config import CertSignature, Config

PENDING_KEY_NAME = "pending.key"  # tls.PENDING_KEY, named here so the parser loads no TLS


def add_certs_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `certs` and its actions to the command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "certs", help="the server certificate: show, init, csr, install"
    )
    sub = p.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    sub.add_parser("show", help="the certificate in use; exit 1 if it expires soon or lacks a name")
    sub.add_parser("init", help="create the test CA and server certificate now")
    c = sub.add_parser("csr", help="a new key and a certificate request for an enterprise CA")
    c.add_argument("--out", type=Path, required=True, metavar="FILE", help="where the CSR goes")
    c.add_argument(
        "--key-out",
        type=Path,
        metavar="FILE",
        help=f"where the new private key goes (default: <data_dir>/tls/{PENDING_KEY_NAME})",
    )
    c.add_argument(
        "--extra-name",
        action="append",
        default=[],
        metavar="NAME",
        help="another DNS name for the certificate (repeatable)",
    )
    c.add_argument("--force", action="store_true", help="replace a pending key")
    i = sub.add_parser("install", help="install the certificate the CA sent back for the CSR")
    i.add_argument("cert", type=Path, metavar="CERT.pem", help="the certificate (PEM)")
    i.add_argument("--chain", type=Path, metavar="CHAIN.pem", help="its issuers, in order")
    i.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help=f"the key of the CSR (default: <data_dir>/tls/{PENDING_KEY_NAME})",
    )
    return p


def certs_command(
    config: Config,
    args: argparse.Namespace,
    now: datetime | None = None,
    out: TextIO | None = None,
) -> int:
    """Run `certs <action>`; messages go to `out` (stdout), errors to stderr."""
    from appliance.tls import CertError

    out = out or sys.stdout
    now = now or datetime.now(UTC)
    action = {"show": _show, "init": _init, "csr": _csr, "install": _install}
    try:
        return action[args.certs_command](config, args, now, out)
    except CertError as e:
        print(f"ucupdates: {e}", file=sys.stderr)
        return EX_FAILED
    except OSError as e:
        print(f"ucupdates: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return EX_FAILED


def _show(config: Config, args: argparse.Namespace, now: datetime, out: TextIO) -> int:
    from appliance.tls import (
        certificate_problems,
        certificate_warnings,
        days_left,
        describe_certificate,
        existing_credentials,
    )

    found = existing_credentials(config.tls.cert_file, config.tls.key_file, config.tls_dir)
    if found is None:
        print(
            f"no server certificate yet in {config.tls_dir}: `ucupdates certs init` creates "
            "one (serve does at its first start)",
            file=out,
        )
        return EX_FAILED
    source, creds = found
    info = describe_certificate(creds.cert_file)
    left = days_left(creds, now)
    rows = [
        ("certificate", f"{creds.cert_file} ({source})"),
        ("key", str(creds.key_file)),
        ("subject", info.subject),
        ("issuer", info.issuer),
        ("names", ", ".join(info.names) or "(none)"),
        ("not before", f"{info.not_before:%Y-%m-%d %H:%M} UTC"),
        ("not after", f"{info.not_after:%Y-%m-%d %H:%M} UTC ({left:.0f} days left)"),
        ("signature", info.signature),
        ("sha256", info.sha256),
    ]
    if creds.ca_file is not None:
        rows.append(("phones trust", str(creds.ca_file)))
    for label, value in rows:
        print(f"{label:12} {value}", file=out)
    problems = certificate_problems(config, creds.names, left)
    problems += certificate_warnings(config, creds.cert_file)
    for problem in problems:
        print(f"WARNING: the certificate {problem}", file=out)
    return EX_FAILED if problems else 0


def _init(config: Config, args: argparse.Namespace, now: datetime, out: TextIO) -> int:
    from appliance.tls import ensure_test_certificates, existing_credentials

    found = existing_credentials(config.tls.cert_file, config.tls.key_file, config.tls_dir)
    if found is not None and found[0] != "generated":
        source, creds = found
        print(
            f"the {source} certificate {creds.cert_file} is in use: no test CA is made",
            file=out,
        )
        return EX_FAILED
    signature = config.tls.generated_signature
    creds = ensure_test_certificates(
        config.tls_dir, config.server_names(), now=now, signature=signature
    )
    print(f"server certificate {creds.cert_file} for {', '.join(creds.names)}", file=out)
    print(f"signed with {signature.value} (tls.generated_signature)", file=out)
    print(f"valid until {creds.not_after:%Y-%m-%d} UTC", file=out)
    print(f"phones must trust the CA certificate {creds.ca_file}", file=out)
    return 0


def _csr(config: Config, args: argparse.Namespace, now: datetime, out: TextIO) -> int:
    from appliance.tls import PENDING_KEY, CertError, create_csr

    names = tuple(dict.fromkeys([*config.server_names(), *args.extra_name]))
    key_file: Path = args.key_out or config.tls_dir / PENDING_KEY
    if args.out.resolve() == key_file.resolve():
        raise CertError("--out and the key file must differ")
    pem = create_csr(names, key_file, force=args.force)
    try:
        args.out.write_bytes(pem)
    except OSError:
        key_file.unlink()  # no CSR, so no use for its key
        raise
    print(f"wrote the certificate request {args.out} for {', '.join(names)}", file=out)
    print(f"its private key is {key_file} (mode 0600): it stays on this host", file=out)
    print("send the request to your CA; when the certificate comes back:", file=out)
    if config.tls.generated_signature is CertSignature.SHA1:
        print("  (for Tanjay-family phones on old firmware, ask for a SHA-1 chain)", file=out)
    key_option = f" --key {key_file}" if args.key_out else ""
    print(f"  ucupdates certs install CERT.pem [--chain CHAIN.pem]{key_option}", file=out)
    return 0


def _install(config: Config, args: argparse.Namespace, now: datetime, out: TextIO) -> int:
    from appliance.tls import (
        INSTALLED_CERT,
        INSTALLED_KEY,
        PENDING_KEY,
        CertError,
        certificate_warnings,
        check_expiry,
        describe_certificate,
        install_certificate,
    )

    key_file: Path = args.key or config.tls_dir / PENDING_KEY
    if not key_file.exists():
        raise CertError(
            f"{key_file}: no pending key; make the request with `ucupdates certs csr` "
            "first, or give --key"
        )
    creds = install_certificate(
        config.tls_dir, args.cert, key_file, config.server_names(), now, args.chain
    )
    info = describe_certificate(creds.cert_file)
    print(f"installed {creds.cert_file} and {creds.key_file}", file=out)
    print(f"  names    {', '.join(info.names)}", file=out)
    print(f"  issuer   {info.issuer}", file=out)
    print(f"  expires  {info.not_after:%Y-%m-%d} UTC", file=out)
    print(f"  signed   {info.signature}", file=out)
    warning = check_expiry(creds, now, config.syslog.cert_warn_days)
    if warning:
        print(f"WARNING: {warning}", file=out)
    for warning in certificate_warnings(config, creds.cert_file):
        print(f"WARNING: the certificate {warning}", file=out)
    if config.tls.cert_file is not None:
        print("the config names another certificate; to use this one, set:", file=out)
    else:
        print("`ucupdates serve` uses it from its next start; or name it in the config:", file=out)
    print("[tls]", file=out)
    print(f'cert_file = "{(config.tls_dir / INSTALLED_CERT).resolve()}"', file=out)
    print(f'key_file = "{(config.tls_dir / INSTALLED_KEY).resolve()}"', file=out)
    return 0

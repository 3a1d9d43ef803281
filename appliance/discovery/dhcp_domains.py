"""The DNS domains a DHCP server hands out (option 15), read from its configuration file.

Phones that never signed in look up `ucupdates-r2.<the domain DHCP gave them>`
(docs/protocol.md §3), so the responder serves every domain the DHCP server announces.
Two formats, told apart by the first character that is not blank or a comment (`{`: Kea):

- ISC dhcpd.conf: every `option domain-name "a.com";` in any scope (global, shared-network,
  subnet, pool, group, host, class); `#` comments; `option domain-name = "a.com";` too.
  A string holding several names separated by blanks or commas gives each of them.
- Kea JSON (`Dhcp4`): every `option-data` entry named `domain-name` (or code 15) at global,
  shared-network, subnet, pool, reservation and client-class level; Kea's comments (`#`,
  `//`, `/* */`) are allowed; `"csv-format": false` data is hex.

Anything else (an unreadable file, a syntax error, a value that is not a domain name, a Kea
file without Dhcp4, an `<?include?>`) is a DhcpDomainsError whose one line names the file
and, where known, the line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 8  # Kea nesting: shared-networks > subnet4 > pools > option-data is 4


class DhcpDomainsError(Exception):
    """A DHCP configuration the domains cannot be read from; str() is the one line."""


_NAME = re.compile(
    r"(?=.{1,253}$)(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?"
)


def read_domains(path: Path) -> tuple[str, ...]:
    """The domains in the ISC or Kea file at `path`, lower case, in order, each once."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise DhcpDomainsError(f"{path}: cannot read DHCP configuration: {e.strerror}") from e
    if len(data) > MAX_FILE_BYTES:
        raise DhcpDomainsError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return parse_domains(data.decode("utf-8", errors="replace"))
    except DhcpDomainsError as e:
        raise DhcpDomainsError(f"{path}: {e}") from None


def parse_domains(text: str) -> tuple[str, ...]:
    """Like read_domains, from the text of a file (for tests and previews)."""
    if _strip_kea_comments(text).lstrip().startswith("{"):
        return _unique(_kea_domains(text))
    return _unique(_isc_domains(text))


def _unique(found: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(found))


def _names(value: str, where: str) -> list[str]:
    names = [n for n in re.split(r"[\s,]+", value.strip()) if n]
    if not names:
        raise DhcpDomainsError(f"{where}: empty domain-name")
    for name in names:
        if not _NAME.fullmatch(name) or re.fullmatch(r"[\d.]+", name):
            raise DhcpDomainsError(f"{where}: {name!r} is not a DNS domain name")
    return [n.rstrip(".").lower() for n in names]


# -- ISC dhcpd.conf -------------------------------------------------------------------------

_ISC_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>\#[^\n]*)|(?P<string>"(?:[^"\\\n]|\\.)*")"""
    r"""|(?P<punct>[{};=,])|(?P<word>[^\s{};=,"\#]+)|(?P<bad>.)""",
    re.DOTALL,
)


def _isc_tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, line) of every token but blanks and comments; checks braces."""
    tokens: list[tuple[str, str, int]] = []
    line, depth = 1, 0
    for m in _ISC_TOKEN.finditer(text):  # bounded by the text's length
        kind, value = m.lastgroup or "bad", m.group()
        if kind == "bad":
            what = "unterminated string" if value == '"' else f"unexpected {value!r}"
            raise DhcpDomainsError(f"line {line}: {what}")
        if kind not in ("space", "comment"):
            tokens.append((kind, value, line))
            depth += {"{": 1, "}": -1}.get(value, 0)
            if depth < 0:
                raise DhcpDomainsError(f"line {line}: '}}' without '{{'")
        line += value.count("\n")
    if depth:
        raise DhcpDomainsError(f"line {line}: {depth} '{{' not closed")
    return tokens


def _isc_domains(text: str) -> list[str]:
    tokens = _isc_tokens(text)
    found: list[str] = []
    for i, (kind, value, line) in enumerate(tokens):
        if kind != "word" or value.lower() != "option":
            continue
        if i + 1 >= len(tokens) or tokens[i + 1][1].lower() != "domain-name":
            continue
        j = i + 2
        if j < len(tokens) and tokens[j][1] == "=":
            j += 1
        if j >= len(tokens) or tokens[j][0] != "string":
            raise DhcpDomainsError(f"line {line}: option domain-name needs a quoted name")
        if j + 1 >= len(tokens) or tokens[j + 1][1] != ";":
            raise DhcpDomainsError(f"line {tokens[j][2]}: ';' expected after option domain-name")
        value = re.sub(r"\\(.)", r"\1", tokens[j][1][1:-1])
        found += _names(value, f"line {line}")
    return found


# -- Kea JSON ---------------------------------------------------------------------------------

_KEA_COMMENT = re.compile(r'("(?:[^"\\\n]|\\.)*")|#[^\n]*|//[^\n]*|/\*.*?\*/|(/\*)', re.DOTALL)


def _strip_kea_comments(text: str) -> str:
    def blank(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return m.group(1)
        if m.group(2) is not None:
            line = text.count("\n", 0, m.start()) + 1
            raise DhcpDomainsError(f"line {line}: '/*' comment not closed")
        return "\n" * m.group().count("\n")  # keep line numbers for JSON's errors

    return _KEA_COMMENT.sub(blank, text)


def _kea_domains(text: str) -> list[str]:
    if "<?include" in text:
        raise DhcpDomainsError("Kea <?include?> is not supported: name the included file")
    try:
        document = json.loads(_strip_kea_comments(text))
    except json.JSONDecodeError as e:
        raise DhcpDomainsError(f"line {e.lineno}: not valid Kea JSON: {e.msg}") from None
    dhcp4 = document.get("Dhcp4") if isinstance(document, dict) else None
    if not isinstance(dhcp4, dict):
        raise DhcpDomainsError("no Dhcp4 object: not a Kea DHCPv4 configuration")
    found: list[str] = []
    _kea_scope(dhcp4, "Dhcp4", 0, found)
    return found


_KEA_SCOPES = ("shared-networks", "subnet4", "pools", "reservations", "client-classes")


def _kea_scope(scope: dict[str, Any], where: str, depth: int, found: list[str]) -> None:
    if depth > MAX_DEPTH:
        raise DhcpDomainsError(f"{where}: nested too deep")
    options = scope.get("option-data", [])
    if not isinstance(options, list):
        raise DhcpDomainsError(f"{where}.option-data: expected a list")
    for n, option in enumerate(options):
        found += _kea_option(option, f"{where}.option-data[{n}]")
    for key in _KEA_SCOPES:
        inner = scope.get(key, [])
        if not isinstance(inner, list):
            raise DhcpDomainsError(f"{where}.{key}: expected a list")
        for n, child in enumerate(inner):
            if not isinstance(child, dict):
                raise DhcpDomainsError(f"{where}.{key}[{n}]: expected an object")
            _kea_scope(child, f"{where}.{key}[{n}]", depth + 1, found)


def _kea_option(option: Any, where: str) -> list[str]:
    if not isinstance(option, dict):
        raise DhcpDomainsError(f"{where}: expected an object")
    if option.get("space", "dhcp4") != "dhcp4":
        return []
    if option.get("name") != "domain-name" and option.get("code") != 15:
        return []
    data = option.get("data")
    if not isinstance(data, str):
        raise DhcpDomainsError(f"{where}: domain-name needs a string 'data'")
    if option.get("csv-format", True) is False:
        try:
            data = bytes.fromhex(re.sub(r"[\s:]|^0x", "", data)).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            raise DhcpDomainsError(f"{where}: 'data' is not hex of an ASCII name") from None
    return _names(data, where)

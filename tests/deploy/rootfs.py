"""A fresh Debian 12 root made with debootstrap, cached as a tarball, and its mounts.

The mirror is this machine's own: the first `deb` source of a base suite with `main` in
/etc/apt/sources.list.d/*.sources (deb822) or the one-line lists. The finished root
(before anything is deployed) is kept as an uncompressed tar under CACHE_DIR, named by a
hash of everything that shaped it, so later runs unpack it in seconds; without the cache
the root is bootstrapped again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
# What ansible needs on a target: python3, and python3-apt for the apt module.
INCLUDE = ("python3", "python3-apt")
CACHE_DIR = Path(os.environ.get("UCUPDATES_TEST_CACHE", "/var/cache/ucupdates-tests"))
DEBOOTSTRAP_SECONDS = 900
APT_SOURCES = Path("/etc/apt")


class RootfsError(Exception):
    """The root could not be made; str() says why."""


def find_mirror(apt_dir: Path = APT_SOURCES) -> str | None:
    """The Debian mirror this machine's apt uses, or None."""
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
            fields = _deb822(stanza)
            if (
                "deb" in fields.get("types", "").split()
                and "main" in fields.get("components", "").split()
                and any("-" not in s and "/" not in s for s in fields.get("suites", "").split())
                and fields.get("enabled", "yes").lower() != "no"
            ):
                uris = fields.get("uris", "").split()
                if uris:
                    return uris[0].rstrip("/")
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if (
                len(words) >= 4
                and words[0] == "deb"
                and "-" not in words[2]
                and "main" in words[3:]
            ):
                return words[1].rstrip("/")
    return None


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and key is not None:
            fields[key] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            fields[key] = value.strip()
    return fields


def mirror_reachable(mirror: str, timeout: float = 20) -> str | None:
    """None when the mirror serves the suite's Release file, else the reason it does not."""
    url = f"{mirror}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            reply.read(64)
    except (urllib.error.URLError, OSError) as e:
        return f"{url}: {e}"
    return None


def _architecture() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def cache_path(mirror: str) -> Path:
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "debootstrap"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    key = "\n".join([SUITE, VARIANT, ",".join(INCLUDE), mirror, _architecture(), version])
    return CACHE_DIR / f"{SUITE}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.tar"


def make_root(root: Path, mirror: str) -> str:
    """Fill the empty folder `root` with a fresh Debian root; says where it came from."""
    cached = cache_path(mirror)
    if cached.is_file():
        try:
            subprocess.run(
                ["tar", "--numeric-owner", "-xpf", str(cached), "-C", str(root)],
                check=True,
                capture_output=True,
                timeout=300,
            )
            return f"unpacked {cached}"
        except subprocess.CalledProcessError:
            cached.unlink(missing_ok=True)  # a damaged cache: make it again
            _empty(root)
    command = [
        "debootstrap",
        f"--variant={VARIANT}",
        f"--include={','.join(INCLUDE)}",
        SUITE,
        str(root),
        mirror,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=DEBOOTSTRAP_SECONDS)
    if done.returncode != 0:
        raise RootfsError(f"debootstrap failed ({done.returncode}): {done.stdout[-3000:]}")
    subprocess.run(
        ["chroot", str(root), "apt-get", "clean"], check=True, capture_output=True, timeout=120
    )
    _store(root, cached)
    return f"bootstrapped from {mirror} and cached as {cached}"


def _store(root: Path, cached: Path) -> None:
    """Keep the pristine root for the next run; a failure here only costs time later."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-cpf", str(partial), "-C", str(root), "."],
            check=True,
            capture_output=True,
            timeout=300,
        )
        partial.rename(cached)
    except (OSError, subprocess.SubprocessError):
        with contextlib.suppress(OSError, UnboundLocalError):
            partial.unlink(missing_ok=True)


def _empty(root: Path) -> None:
    for child in root.iterdir():
        subprocess.run(["rm", "-rf", "--one-file-system", str(child)], check=True, timeout=120)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_all(root: Path) -> list[str]:
    """Unmount everything below `root`; returns what is still mounted (should be nothing)."""
    for _ in range(3):
        points = mounts_under(root)
        if not points:
            return []
        for point in points:
            done = subprocess.run(["umount", point], capture_output=True, timeout=60)
            if done.returncode != 0:
                subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=60)
    return mounts_under(root)


@contextlib.contextmanager
def mounted(root: Path) -> Iterator[None]:
    """/proc and /dev inside the root for apt, dpkg and the service; always unmounted."""
    try:
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True, timeout=60)
        subprocess.run(["mount", "--bind", "/dev", str(root / "dev")], check=True, timeout=60)
        # A shared /dev would pass mounts made below the bind on to the host's own /dev.
        subprocess.run(["mount", "--make-private", str(root / "dev")], check=True, timeout=60)
        yield
    finally:
        left = unmount_all(root)
    if left:  # only reached without an exception in flight, which would say more
        raise RootfsError(f"still mounted after the test: {left}")


def prepare(root: Path) -> None:
    """What the root needs from this machine to install software like this machine does:
    its resolver, its pip configuration (and nothing else), and no daemons started by
    package scripts inside the root."""
    resolv = root / "etc" / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    shutil.copyfile("/etc/resolv.conf", resolv)
    if Path("/etc/pip.conf").is_file():
        shutil.copyfile("/etc/pip.conf", root / "etc" / "pip.conf")
    if Path("/etc/xdg/pip").is_dir():
        target = root / "etc" / "xdg" / "pip"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree("/etc/xdg/pip", target)
    policy = root / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# tests/test_deploy.py: no daemons in the test root\nexit 101\n")
    policy.chmod(0o755)


def remove_root(root: Path) -> None:
    """Delete the root, never crossing into a file system still mounted inside it."""
    if mounts_under(root):
        raise RootfsError(f"not removing {root}: still mounted {mounts_under(root)}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True, timeout=300)


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def _pem_bodies(text: str) -> list[str]:
    return ["".join(m.group(1).split()) for m in _PEM.finditer(text)]


def extra_trusted_cas(
    dest: Path,
    bundle: Path = Path("/etc/ssl/certs/ca-certificates.crt"),
    packaged: Path = Path("/usr/share/ca-certificates"),
) -> list[Path]:
    """The CAs this machine trusts beyond Debian's own (a TLS-inspecting proxy's, say),
    each written to `dest` as a PEM file; none on a machine that adds none."""
    if not bundle.is_file():
        return []
    known = {
        body
        for path in packaged.rglob("*.crt")
        for body in _pem_bodies(path.read_text(errors="replace"))
    }
    extras = [b for b in _pem_bodies(bundle.read_text(errors="replace")) if b not in known]
    written = []
    for i, body in enumerate(dict.fromkeys(extras)):
        lines = [body[j : j + 64] for j in range(0, len(body), 64)]
        path = dest / f"host-ca-{i + 1}.crt"
        path.write_text(
            "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
        )
        written.append(path)
    return written

"""Deployment: the Ansible roles and playbook, the Vagrantfile, and a real converge.

The converge test takes a fresh Debian 12 root (debootstrap, cached as a tarball between
runs), reached over ansible's chroot connection. It runs ansible/site.yml --check --diff
on it; deploys the previous commit with that commit's own playbook; upgrades it in place
with this tree's playbook from a wheelhouse (the same catalogue, test device and users
after, the new version installed); starts the deployed service from its own unit file
inside a network namespace, as the unit's user with only CAP_NET_BIND_SERVICE; runs the
playbook's smoke check against it from this machine; stops it; and runs --check --diff
again, expecting no change. It needs root; it is skipped only without root or when
debootstrap cannot reach this machine's Debian mirror.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import dnslib
import pytest
from deploy import netns, playbook, release, rootfs

from appliance.catalogue.sample import make_sample_package, sample_check

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
HOST = "uc-test"  # the inventory name of the chroot
DOMAIN = "contoso.com"
FQDN = f"ucupdates-r2.{DOMAIN}"
UNIT = Path("etc/systemd/system/ucupdates.service")
DATA = Path("var/lib/ucupdates")
CONVERGE_SECONDS = 420
SMOKE_SECONDS = 120
SAMPLE_MAC = "00-04-F2-00-00-01"  # the phone of sample_check()


def _run(
    command: list[str], timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )


# -- static checks ------------------------------------------------------------------------------


def test_ansible_lint_production_profile() -> None:
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible" / "ansible.cfg")
    done = _run(
        [
            str(VENV_BIN / "ansible-lint"),
            "--profile",
            "production",
            "--nocolor",
            "roles/",
            "ansible/",
        ],
        env=env,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    assert "passed" in (done.stdout + done.stderr).lower()


@pytest.mark.parametrize(
    ("site", "inventory"),
    [("site.yml", "example"), ("pool.yml", "pool")],  # one appliance; a two-site pool
)
def test_playbook_syntax(site: str, inventory: str) -> None:
    env = playbook.ansible_env(Path(tempfile.gettempdir()))
    ansible = REPO / "ansible"
    command = [str(VENV_BIN / "ansible-playbook"), "-i", str(ansible / "inventory" / inventory)]
    done = _run([*command, "--syntax-check", str(ansible / site)], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    # each play reaches its hosts of the example inventory
    done = _run([*command, "--list-hosts", str(ansible / site)], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    plays = done.stdout.split("play #")[1:]
    assert plays and all("hosts (0)" not in play for play in plays), done.stdout
    if site == "pool.yml":
        assert "pga1.contoso.com" in plays[0] and "pgb1.contoso.com" in plays[1], done.stdout
        assert "ucupdates-b1.contoso.com" in plays[3], done.stdout


def test_every_role_variable_is_documented_and_typed() -> None:
    """defaults/main.yml and meta/argument_specs.yml name the same public variables."""
    import yaml

    for role in sorted((REPO / "roles").iterdir()):
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        typed = specs["argument_specs"]["main"]["options"]
        assert set(defaults) == set(typed), f"{role.name}: {set(defaults) ^ set(typed)}"
        assert all(name.startswith(role.name + "_") for name in defaults), role.name
        for name, spec in typed.items():
            assert "type" in spec and "description" in spec, f"{role.name}: {name}"


def test_vagrantfile_validates(tmp_path: Path) -> None:
    if shutil.which("vagrant") is None:
        pytest.skip("the vagrant command is not installed (Debian package vagrant)")
    env = dict(
        os.environ,
        VAGRANT_CHECKPOINT_DISABLE="1",  # no version check over the network
        VAGRANT_BOX_UPDATE_CHECK_DISABLE="1",
        VAGRANT_DOTFILE_PATH=str(tmp_path / ".vagrant"),  # leave no .vagrant/ in the tree
        VAGRANT_HOME=str(tmp_path / "vagrant.d"),
    )
    # No provider (VirtualBox, libvirt) is installed here: --ignore-provider validates
    # everything else, including the ansible provisioner's settings.
    done = _run(["vagrant", "validate", "--ignore-provider"], timeout=180, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout
    text = (REPO / "Vagrantfile").read_text()
    for path in re.findall(r'"(ansible/[^"]+)"', text):
        assert (REPO / path).exists(), f"the Vagrantfile names {path}, which does not exist"
    # With vagrant-libvirt installed (Debian package), its block too: validate checks every
    # setting of the provider the machine would use (unknown ones are errors).
    if "vagrant-libvirt" not in _run(["vagrant", "plugin", "list"], env=env).stdout:
        pytest.skip("the libvirt block needs vagrant-libvirt (Debian package) to validate")
    done = _run(
        ["vagrant", "validate"], timeout=180, env=env | {"VAGRANT_DEFAULT_PROVIDER": "libvirt"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout


def test_vagrant_forwards_ports_that_make_run_leaves_free() -> None:
    """`make run` serves the embedded defaults' listeners on this machine; the VM's
    forwarded ports must not take them (nor each other's)."""
    from appliance.config import Config

    text = (REPO / "Vagrantfile").read_text()
    constants = {name: int(value) for name, value in re.findall(r"^(\w+) = (\d+)", text, re.M)}
    forwards = re.findall(r":forwarded_port, guest: (\w+), host: (\w+)", text)
    assert forwards, "the Vagrantfile forwards no port"
    hosts = [int(host) if host.isdigit() else constants[host] for _, host in forwards]
    listeners = Config().listeners
    taken = {
        address.port
        for address in (
            listeners.dns,
            listeners.internal_https,
            listeners.internal_http,
            listeners.external_https,
            listeners.admin,
        )
        if address is not None
    }
    assert not set(hosts) & taken, (hosts, taken)
    assert len(set(hosts)) == len(hosts)
    assert "provider :libvirt" in text and "provider :virtualbox" in text


# -- the converge -------------------------------------------------------------------------------


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to one address, checking the certificate against FQDN (SNI and Host too)."""

    def __init__(self, address: str, context: ssl.SSLContext) -> None:
        super().__init__(FQDN, 443, timeout=15, context=context)
        self._address, self._tls = address, context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, 443), 15)
        self.sock = self._tls.wrap_socket(raw, server_hostname=FQDN)


def _dns_a(address: str, name: str, tries: int = 3) -> list[str] | None:
    """The A records `address`:53 answers for `name`; None when nothing answers."""
    query = dnslib.DNSRecord.question(name, "A")
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2.0)
            s.sendto(query.pack(), (address, 53))
            try:
                data, _ = s.recvfrom(4096)
            except (TimeoutError, ConnectionRefusedError):
                continue
        reply = dnslib.DNSRecord.parse(data)
        return [str(rr.rdata) for rr in reply.rr if rr.rtype == dnslib.QTYPE.A]
    return None


def _snapshot_source(dest: Path) -> Path:
    """The source as it is now: both converges build the same wheel even while the working
    tree changes under them."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(
        REPO / "appliance", dest / "appliance", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dest


def _in_root(root: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """The admin command in the deployed root (as root it runs as the service user)."""
    return _run(["chroot", str(root), "/usr/local/bin/ucupdates", *command], timeout=120)


def _catalogue(root: Path) -> list[tuple[object, ...]]:
    """What the rules offer: what an upgrade must keep."""
    done = _in_root(root, "rules", "--json")
    assert done.returncode == 0, done.stderr
    keys = ("id", "model", "approved_version", "pending_version", "restore_version", "state")
    return sorted(tuple(rule.get(k) for k in keys) for rule in json.loads(done.stdout))


def _newest_schema(source: Path) -> int:
    """The newest schema step a source tree carries (appliance/**/schema/NNN_*.sql)."""
    return max(int(p.name[:3]) for p in (source / "appliance").rglob("schema/[0-9]*.sql"))


def _installed_code(root: Path) -> dict[str, bytes]:
    """appliance/**/*.py as installed in the deployed venv."""
    venv = root / "opt" / "ucupdates" / "venv"
    (package,) = venv.glob("lib/python3*/site-packages/appliance")
    return {str(p.relative_to(package)): p.read_bytes() for p in package.rglob("*.py")}


def _owner_problems(root: Path, top: Path, uid: int) -> list[str]:
    found = []
    for path in [top, *top.rglob("*")]:
        if path.lstat().st_uid != uid:
            found.append(f"/{path.relative_to(root)} (uid {path.lstat().st_uid})")
    return found


def _uid_in(root: Path, user: str) -> int:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2])
    raise AssertionError(f"no user {user} in the deployed root")


def _exposure(root: Path) -> float | None:
    """systemd-analyze's overall exposure of the deployed unit (0 best, 10 worst)."""
    if shutil.which("systemd-analyze") is None:
        return None
    done = _run(
        ["systemd-analyze", "security", "--offline=true", f"--root={root}", "ucupdates.service"],
        timeout=120,
    )
    m = re.search(r"Overall exposure level for ucupdates\.service: ([\d.]+)", done.stdout)
    return float(m.group(1)) if m else None


@pytest.mark.timeout(900)
def test_converge_debian12_upgrade_serve_and_check_again(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: debootstrap, chroot, mounts and a network namespace")
    for tool in ("debootstrap", "chroot", "ip", "unshare", "dig"):
        assert shutil.which(tool), f"{tool} is missing: `make setup` installs it"
    mirror = rootfs.find_mirror()
    if mirror is None:
        pytest.skip("no Debian mirror in this machine's apt sources for debootstrap")
    unreachable = rootfs.mirror_reachable(mirror)
    if unreachable:
        pytest.skip(f"debootstrap cannot reach the Debian mirror: {unreachable}")

    timings: dict[str, float] = {}
    started = time.monotonic()
    env = playbook.ansible_env(tmp_path)
    source = _snapshot_source(tmp_path / "source")
    # The upgrade: from the previous commit, deployed by its own playbook, roles and source
    # (dependencies from the package index), to this tree, from a wheelhouse of its own.
    t = time.monotonic()
    previous_sha, previous = release.previous_commit(tmp_path / "previous")
    previous_env = dict(env, ANSIBLE_CONFIG=str(previous / "ansible" / "ansible.cfg"))
    wheelhouse = release.wheelhouse(source, tmp_path / "wheelhouse")
    timings["releases"] = time.monotonic() - t
    print(f"upgrading from {previous_sha} (its own playbook) to this tree (a wheelhouse)")
    package = tmp_path / "UCUpdates.cab"
    make_sample_package(package, image_size=4096)
    inventory = tmp_path / "inventory.yml"
    root = Path(tempfile.mkdtemp(prefix="ucupdates-test-root.", dir="/var/tmp"))
    root.chmod(0o755)  # it becomes "/" for the service user
    dns_served: bool | None = None
    ns_name = ""
    try:
        t = time.monotonic()
        how = rootfs.make_root(root, mirror)
        timings["root"] = time.monotonic() - t
        print(f"debian root: {how} in {timings['root']:.0f}s")
        rootfs.prepare(root)
        playbook.write_inventory(inventory, HOST, root)
        with rootfs.mounted(root), netns.namespace() as ns:
            ns_name = ns.name
            extra = {
                "ucupdates_appliance_source_dir": str(source),
                "ucupdates_appliance_domains": [DOMAIN],
                "ucupdates_appliance_server_name": "uc-test",
                "ucupdates_appliance_manage_service": False,  # no systemd in a chroot
                "ucupdates_appliance_dns_internal_address": ns.address,
                "ucupdates_appliance_packages": [str(package)],
                "ucupdates_appliance_users": [{"name": "CONTOSO\\phone1", "password": "pw 1"}],
                # this machine's HTTPS may pass a TLS-inspecting proxy: trust its CA too
                "ucupdates_appliance_ca_certificates": [
                    str(p) for p in rootfs.extra_trusted_cas(tmp_path)
                ],
                "ucupdates_syslog_target": "127.0.0.1",  # a loopback collector
                "ucupdates_syslog_port": 5514,
                "ucupdates_syslog_protocol": "udp",
                "ucupdates_firewall_admin_networks": [f"{ns.host_address}/32"],
                "ucupdates_firewall_external_sources": ["10.0.5.10"],
                "ucupdates_firewall_monitoring_networks": ["10.0.8.5/32"],  # may scrape
                # Control Panel accounts and tokens, set again by every run (unchanged)
                "ucupdates_appliance_admins": [
                    {"name": "ops", "role": "admin", "password": "ops password 1"}
                ],
                "ucupdates_appliance_api_tokens": [
                    {
                        "name": "ci",
                        "role": "viewer",
                        "secret": "0123456789abcdef" * 4,
                        "expires": "2099-12-31",
                    }
                ],
                # render and check the rules (nft -c) only: never load them here
                "ucupdates_firewall_manage_service": False,
            }
            # the previous commit's role builds its own source (its default source_dir)
            old_extra = {k: v for k, v in extra.items() if k != "ucupdates_appliance_source_dir"}
            old_variables = tmp_path / "vars-previous.json"
            old_variables.write_text(json.dumps(old_extra, indent=1))
            extra["ucupdates_appliance_wheelhouse"] = str(wheelhouse)
            variables = tmp_path / "vars.json"
            variables.write_text(json.dumps(extra, indent=1))
            converge = ["-i", str(inventory), "-e", f"@{variables}", str(playbook.SITE)]

            # --check --diff on the fresh root: it says what a run would do, and fails nothing
            check = playbook.run(
                [*converge, "--skip-tags", "smoke", "--check", "--diff"], env, CONVERGE_SECONDS
            )
            timings["check fresh"] = check.seconds
            assert check.returncode == 0, check.output[-12000:]
            assert check.recap()[HOST]["changed"] > 0
            assert not (root / "opt" / "ucupdates").exists()  # check mode installs nothing

            old_site = str(previous / "ansible" / "site.yml")
            old_converge = ["-i", str(inventory), "-e", f"@{old_variables}", old_site]
            first = playbook.run(
                [*old_converge, "--skip-tags", "smoke"], previous_env, CONVERGE_SECONDS
            )
            timings["converge previous"] = first.seconds
            assert first.returncode == 0, f"{previous_sha}: " + first.output[-12000:]
            assert first.recap()[HOST]["failed"] == 0
            said = _in_root(root, "--version")
            assert said.stdout == f"ucupdates {release.declared_version(previous)}\n", said
            marker = root / "opt" / "ucupdates" / "venv" / ".ucupdates-wheel.sha256"
            installed_before = marker.read_text()

            # Data made before the upgrade: the catalogue (the sample package), a test device
            # and a phone user; the upgrade keeps them all.
            added = _in_root(root, "test-device", "add", "smoke phone", "--mac", SAMPLE_MAC)
            assert added.returncode == 0, added.stderr
            catalogue = _catalogue(root)
            assert len(catalogue) == 8, catalogue  # the sample package

            upgrade = playbook.run([*converge, "--skip-tags", "smoke"], env, CONVERGE_SECONDS)
            timings["upgrade"] = upgrade.seconds
            assert upgrade.returncode == 0, upgrade.output[-12000:]
            assert upgrade.recap()[HOST]["failed"] == 0
            changed = upgrade.changed_tasks()
            (new_wheel,) = wheelhouse.glob("ucupdates-*.whl")
            new_sha = hashlib.sha256(new_wheel.read_bytes()).hexdigest()
            assert marker.read_text() == new_sha + "\n" != installed_before, changed
            assert any("Install ucupdates itself" in t for t in changed), changed
            # what was there is left alone: the package imported again changes nothing,
            # the user is not added again
            assert not any("Import the vendor packages" in t for t in changed), changed
            assert not any("Add the missing local phone users" in t for t in changed), changed
            if (previous / "roles" / "ucupdates_appliance" / "tasks" / "admins.yml").exists():
                assert not any("Control Panel accounts" in t for t in changed), changed
                assert not any("API tokens" in t for t in changed), changed
            said = _in_root(root, "--version")
            assert said.stdout == f"ucupdates {release.declared_version(source)}\n", said
            wanted = {
                str(p.relative_to(source / "appliance")): p.read_bytes()
                for p in (source / "appliance").rglob("*.py")
            }
            assert _installed_code(root) == wanted  # this tree's code, nothing left of the old
            # The wheelhouse alone installs everything on the appliance's Python (the
            # upgrade needed only what was missing): resolve it all again from it, dry.
            pip = "/opt/ucupdates/venv/bin/pip"
            house = "/opt/ucupdates/wheelhouse"
            resolved = _run(
                ["chroot", str(root), pip, "install", "--dry-run", "--ignore-installed",
                 "--no-index", "--find-links", house, f"{house}/{new_wheel.name}"],
                timeout=120,
            )  # fmt: skip
            assert resolved.returncode == 0, resolved.stdout + resolved.stderr
            assert "Would install" in resolved.stdout and "twisted" in resolved.stdout.lower()
            assert _catalogue(root) == catalogue
            users = _in_root(root, "user", "list", "--json")
            assert [u["name"] for u in json.loads(users.stdout)] == ["CONTOSO\\phone1"], users
            old, new = _newest_schema(previous), _newest_schema(source)
            if new > old:  # the schema stepped: a copy of the database from before is kept
                kept = list((root / DATA / "backups").glob(f"pre-upgrade-{old}-to-{new}-*.db"))
                assert len(kept) == 1, kept
            # The backup units are installed (the timer is off by default), and a backup of
            # the upgraded data works with the deployed software.
            for name in ("ucupdates-backup.service", "ucupdates-backup.timer"):
                assert (root / "etc" / "systemd" / "system" / name).is_file(), name
            backup = _in_root(root, "backup", "--dir", "/var/backups/ucupdates", "--keep", "1")
            assert backup.returncode == 0, backup.stdout + backup.stderr

            # Plain HTTP is open to the internal networks only (the appliance refuses others).
            rules = (root / "etc" / "nftables.conf").read_text()
            assert (
                "ip saddr { 127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 } tcp dport 80"
                in rules
            ), rules
            assert "ip6 saddr { ::1/128, fc00::/7 } tcp dport 80" in rules, rules
            # /metrics on its own listener, to loopback and the monitoring networks only
            metrics_rule = 'ip saddr { 10.0.8.5/32 } tcp dport 9150 accept comment "Prometheus'
            assert metrics_rule in rules, rules
            config = tomllib.loads((root / "etc" / "ucupdates" / "ucupdates.toml").read_text())
            assert config["metrics"]["listen"] == "0.0.0.0:9150", config["metrics"]
            assert "10.0.8.5/32" in config["metrics"]["allowed_networks"], config["metrics"]

            unit = netns.Unit.read(root / UNIT)
            assert unit.user == "ucupdates" and unit.user != "root"
            assert unit.no_new_privileges
            assert unit.ambient_capabilities == ("CAP_NET_BIND_SERVICE",)
            assert unit.bounding_set == ("CAP_NET_BIND_SERVICE",)
            unit_text = (root / UNIT).read_text()
            for setting in (
                "ProtectSystem=strict",
                "ReadWritePaths=/var/lib/ucupdates",
                "PrivateTmp=yes",
                "SystemCallFilter=@system-service",
            ):
                assert setting in unit_text
            exposure = _exposure(root)
            assert exposure is None or exposure < 2.5, f"systemd-analyze security: {exposure}"

            t = time.monotonic()
            running = netns.start(
                netns.service_command(root, ns, unit), tmp_path, "point a phone at ", timeout=90
            )
            timings["start"] = time.monotonic() - t
            try:
                status = running.status()
                uid = _uid_in(root, unit.user)
                assert status["Uid"].split() == [str(uid)] * 4, status["Uid"]
                assert int(status["CapEff"], 16) == 1 << netns.CAP_NET_BIND_SERVICE
                assert int(status["CapAmb"], 16) == 1 << netns.CAP_NET_BIND_SERVICE
                assert status["NoNewPrivs"] == "1"
                banner = running.stdout.read_text()
                for listener in (
                    "internal-https  0.0.0.0:443",
                    "external-https  0.0.0.0:4443",
                    "internal-http   0.0.0.0:80",
                ):
                    assert listener in banner, banner

                answer = _dns_a(ns.address, FQDN)
                dns_served = answer is not None
                if dns_served:
                    assert answer == [ns.address], answer

                # The appliance's own health checks, run where the service runs.
                health = _run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns.name,
                        "chroot",
                        str(root),
                        "/usr/local/bin/ucupdates",
                        "check",
                    ],
                    timeout=120,
                )
                print(health.stdout)
                if "invalid choice: 'check'" not in health.stderr:  # an older ucupdates has none
                    # the plugin's status line first, then one line a check (this machine's
                    # own disk may be filling: not the deployment's fault)
                    failed = [
                        ln
                        for ln in health.stdout.splitlines()
                        if not ln.startswith(("OK ", "UCUPDATES ", "WARNING disk: "))
                    ]
                    if not dns_served:  # covered by the xfail at the end
                        failed = [ln for ln in failed if " dns" not in ln]
                    assert health.stdout.strip() and not failed, health.stdout + health.stderr

                # The playbook's smoke check, from this machine. The FQDN resolves to the
                # namespace for that run only (its own mount namespace and /etc/hosts).
                hosts = tmp_path / "hosts"
                hosts.write_text(Path("/etc/hosts").read_text() + f"\n{ns.address} {FQDN}\n")
                in_own_hosts = [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "sh",
                    "-c",
                    'mount --bind "$0" /etc/hosts && exec "$@"',
                    str(hosts),
                ]
                smoke = playbook.run(
                    [
                        *converge,
                        "--tags",
                        "smoke",
                        "-e",
                        f"ucupdates_smoke_address={ns.address}",
                        "-e",
                        json.dumps({"ucupdates_smoke_dns": dns_served}),
                    ],
                    env,
                    SMOKE_SECONDS,
                    prefix=in_own_hosts,
                )
                timings["smoke"] = smoke.seconds
                assert smoke.returncode == 0, smoke.output[-8000:]
                assert "Send the update check" in smoke.output
                assert "Send the update check over plain HTTP" in smoke.output
                assert f"plain HTTP: <BaseURL>http://{FQDN}" in smoke.output
                if dns_served:
                    assert f"{FQDN} is {ns.address}" in smoke.output

                # The same check without ansible: TLS that trusts only the appliance's CA.
                tls = ssl.create_default_context(cafile=str(root / DATA / "tls" / "ca.pem"))
                connection = _PinnedHTTPS(ns.address, tls)
                connection.request(
                    "POST",
                    "/RequestHandler/ucdevice.upx",
                    sample_check(),
                    {"Content-Type": "text/xml"},
                )
                reply = connection.getresponse()
                body = reply.read()
                connection.close()
                assert reply.status == 200, body
                assert b"<Response>" in body and b"<Downloads>1</Downloads>" in body, body

                # Over plain HTTP on port 80, as Lync served the inside: the same answer,
                # whose BaseURL (http, no port) names the image that plain HTTP serves.
                plain = http.client.HTTPConnection(ns.address, 80, timeout=15)
                plain.request(
                    "POST",
                    "/RequestHandler/ucdevice.upx",
                    sample_check(),
                    {"Content-Type": "text/xml", "Host": FQDN},
                )
                reply = plain.getresponse()
                answer = reply.read()
                assert reply.status == 200 and answer == body, answer
                base = re.search(rb"<BaseURL>([^<]+)</BaseURL>", answer)
                name = re.search(rb"<FileName>([^<]+)</FileName>", answer)
                assert base and name, answer
                prefix = f"http://{FQDN}/DeviceUpdateFiles_Int/".encode()
                assert base.group(1).startswith(prefix), answer
                path = base.group(1)[len(prefix) - len("/DeviceUpdateFiles_Int/") :]
                plain.request("GET", (path + b"/" + name.group(1)).decode(), headers={"Host": FQDN})
                image = plain.getresponse()
                size = re.search(rb"<Size>(\d+)</Size>", answer)
                assert size and image.status == 200 and len(image.read()) == int(size.group(1))
                plain.close()
            finally:
                exit_status = netns.stop(running)
            assert exit_status == 0, running.output()
            audit = list((root / DATA / "Logs" / "Audit").glob("RequestHandlerAuditLog_uc-test_*"))
            assert audit, "the update checks left no audit file"
            problems = _owner_problems(root, root / DATA, _uid_in(root, unit.user))
            assert not problems, f"not owned by the service user: {problems[:10]}"

            # After the service ran: a run would change nothing (the commands a check run
            # skips, the import and the users, changed nothing in the upgrade above).
            check = playbook.run(
                [*converge, "--skip-tags", "smoke", "--check", "--diff"], env, CONVERGE_SECONDS
            )
            timings["check converged"] = check.seconds
            assert check.returncode == 0, check.output[-12000:]
            assert check.recap()[HOST]["changed"] == 0, f"would change: {check.changed_tasks()}"
        assert not netns.namespace_exists(ns_name)
        assert not rootfs.mounts_under(root)
    finally:
        rootfs.remove_root(root)
        timings["total"] = time.monotonic() - started
        print("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    if dns_served is False:
        pytest.xfail(
            "serve does not answer DNS on listeners.dns yet (the ucupdates-r2 responder is "
            "in progress): HTTPS and the check of the converged host passed, the DNS smoke "
            "was skipped"
        )

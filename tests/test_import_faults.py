"""Hostile packages and crashes: one clear error, and the previous state intact."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cabarchive import CabArchive, CabFile

from appliance.cab.writer import CabEntry, write_cab
from appliance.catalogue.sample import SAMPLE_DEVICES, make_sample_package
from appliance.config import Config
from appliance.testing import REPO, catalogue_state, file_tree, run_cli

MTIME = datetime(2013, 4, 2, tzinfo=UTC)
GOOD_XML = (
    b'<Updates><Updates><Update version="4.0.7577.4400" deviceType="UCPhone" brand="HP" '
    b'model="4110" revision="A" locale="ENU" updateType="CPE"/></Updates></Updates>'
)


def _cabarchive(path: Path, files: dict[str, bytes], compress: bool = False) -> None:
    arc = CabArchive()
    for name, data in files.items():
        arc[name] = CabFile(data, mtime=MTIME)
    path.write_bytes(arc.save(compress=compress))


def _ours(path: Path, files: dict[str, bytes]) -> None:
    write_cab(path, [CabEntry(n, len(d), lambda d=d: [d], MTIME) for n, d in files.items()])


def _layout(extra: dict[str, bytes], xml: bytes = GOOD_XML) -> dict[str, bytes]:
    return {"updateInfo.xml": xml, "UCPhone/HP/4110/A/ENU/CPE/CPE.nbt": b"image" * 100, **extra}


Builder = Callable[[Path, Path], None]


def _truncated(path: Path, sample: Path) -> None:
    data = sample.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupted(path: Path, sample: Path) -> None:
    # One flipped byte in the data blocks: the block checksum catches it. (An even run of
    # words flipped alike would cancel out in the XOR checksum: undetectable by design.)
    data = bytearray(sample.read_bytes())
    data[len(data) // 3] ^= 0x5A
    path.write_bytes(bytes(data))


HOSTILE: dict[str, tuple[Builder, str]] = {
    "dot-dot": (lambda p, s: _cabarchive(p, _layout({"..\\..\\etc\\evil": b"x"})), ".."),
    "absolute": (lambda p, s: _cabarchive(p, _layout({"\\etc\\evil": b"x"})), "absolute"),
    "drive": (lambda p, s: _cabarchive(p, _layout({"C:\\evil": b"x"})), ":"),
    "control-char": (lambda p, s: _cabarchive(p, _layout({"evil\x07.bin": b"x"})), "control"),
    "case-duplicate": (
        lambda p, s: _cabarchive(p, _layout({"UCPhone/HP/4110/A/ENU/CPE/cpe.NBT": b"x"})),
        "differ only by case",
    ),
    "ratio-bomb": (
        lambda p, s: _cabarchive(p, _layout({"zeros.bin": bytes(20 * 1024 * 1024)}), True),
        "ratio",
    ),
    "truncated": (_truncated, "truncated"),
    "corrupt": (_corrupted, "corrupt"),
    "not-a-cab": (lambda p, s: p.write_bytes(b"PK\x03\x04 this is a zip" * 100), "cabinet"),
    "empty-file": (lambda p, s: p.write_bytes(b""), "cabinet"),
    "no-updateinfo": (
        lambda p, s: _ours(p, {"UCPhone/HP/4110/A/ENU/CPE/CPE.nbt": b"image"}),
        "no updateInfo.xml",
    ),
    "not-xml": (lambda p, s: _ours(p, _layout({}, b"<Updates><Update")), "not well-formed"),
    "xxe": (
        lambda p, s: _ours(
            p,
            _layout(
                {},
                b'<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x '
                b'SYSTEM "file:///etc/passwd">]><Updates>&x;</Updates>',
            ),
        ),
        "DTDs and entities are not allowed",
    ),
    "billion-laughs": (
        lambda p, s: _ours(
            p,
            _layout(
                {},
                b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                + b"".join(
                    b'<!ENTITY %c "&%c;&%c;&%c;&%c;&%c;">' % ((98 + i,) + (97 + i,) * 5)
                    for i in range(9)
                )
                + b"]><Updates>&j;</Updates>",
            ),
        ),
        "DTDs and entities are not allowed",
    ),
    "missing-member": (
        lambda p, s: _ours(
            p, {"updateInfo.xml": GOOD_XML.replace(b"/>", b'><File name="CPE.nbt"/></Update>', 1)}
        ),
        "not in the package",
    ),
    "unsafe-field": (
        lambda p, s: _ours(p, _layout({}, GOOD_XML.replace(b'model="4110"', b'model=".."'))),
        "not a safe name",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_package_gets_one_clear_error_and_changes_nothing(
    case: str, config: Config, sample_cab: Path, tmp_path: Path
) -> None:
    assert run_cli(config.data_dir, "import", str(sample_cab)).returncode == 0
    before = catalogue_state(config)
    build, expected = HOSTILE[case]
    package = tmp_path / f"{case}.cab"
    build(package, sample_cab)

    result = run_cli(config.data_dir, "import", str(package))

    assert result.returncode == 65, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ucupdates: {case}.cab: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert catalogue_state(config) == before
    assert run_cli(config.data_dir, "rules").returncode == 0


def test_limits_from_the_config_are_enforced(
    config: Config, sample_cab: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "limits.toml"
    for table, expected in (
        ("max_entries = 5", "entries"),
        ("max_total_bytes = 100000", "bytes"),
        ("max_xml_bytes = 100", "updateInfo.xml"),
    ):
        cfg.write_text(f"[import]\n{table}\n")
        result = run_cli(config.data_dir, "--config", str(cfg), "import", str(sample_cab))
        assert result.returncode == 65, result.stderr
        assert expected in result.stderr
        assert file_tree(config.store_dir) == {}


# -- kill -9 during an import ------------------------------------------------------------

_KILLER = """
import os, signal, sys
from pathlib import Path
from appliance.config import load_config
from appliance.catalogue.importer import import_package
from appliance.store.database import Store

data, package, phase = sys.argv[1:]
config = load_config(None, Path(data))
config.data_dir.mkdir(parents=True, exist_ok=True)
store = Store.open(config.db_path)

def checkpoint(reached):
    if reached == phase:
        os.kill(os.getpid(), signal.SIGKILL)

import_package(store, config, Path(package), "test", checkpoint)
"""


def _assert_consistent(config: Config) -> int:
    """After the restart: the import is there whole or not at all. Returns rule count."""
    listing = run_cli(config.data_dir, "rules", "--json")
    assert listing.returncode == 0, listing.stderr
    rules = json.loads(listing.stdout)
    on_disk = file_tree(config.store_dir)
    assert len(rules) in (0, len(SAMPLE_DEVICES))
    if rules:
        from appliance.store.database import Store

        store = Store.open(config.db_path)
        try:
            listed = {f.path.as_posix(): f.sha256 for f in store.stored_files()}
        finally:
            store.close()
        assert on_disk == listed
        assert len(listed) == 2 * len(SAMPLE_DEVICES)
    else:
        assert on_disk == {}
    assert not config.staging_dir.exists() or not any(config.staging_dir.iterdir())
    return len(rules)


@pytest.mark.parametrize(
    ("phase", "survives"),
    [
        ("staged", False),
        ("extracted", False),
        ("moved", False),
        ("committing", False),
        ("committed", True),
    ],
)
def test_kill_9_at_each_phase_leaves_the_import_whole_or_absent(
    phase: str, survives: bool, config: Config, sample_cab: Path
) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", _KILLER, str(config.data_dir), str(sample_cab), phase],
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL

    count = _assert_consistent(config)

    assert count == (len(SAMPLE_DEVICES) if survives else 0)
    # and the appliance goes on: the same package imports cleanly afterwards
    assert run_cli(config.data_dir, "import", str(sample_cab)).returncode == 0
    assert _assert_consistent(config) == len(SAMPLE_DEVICES)


def test_kill_9_at_random_moments_never_leaves_a_half_import(
    config: Config, tmp_path: Path
) -> None:
    big = tmp_path / "big.cab"
    make_sample_package(big, image_size=3 * 1024 * 1024)
    outcomes = set()
    for delay in (0.05, 0.15, 0.3, 0.5, 0.8, 1.2):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance",
                "--data-dir",
                str(config.data_dir),
                "import",
                str(big),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        outcomes.add(_assert_consistent(config))
        if outcomes == {len(SAMPLE_DEVICES)}:
            break
    assert outcomes <= {0, len(SAMPLE_DEVICES)}

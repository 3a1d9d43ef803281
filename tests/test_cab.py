"""The cabinet reader and writer, checked against cabextract, gcab and cabarchive."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from cabarchive import CabArchive, CabFile

from appliance.cab.reader import CabError, CabLimits, checksum, open_package
from appliance.cab.writer import CabEntry, CabWriteError, write_cab

try:
    from tests.lzx_writer import (
        LZX_TYPE,
        TYPE_MSZIP,
        TYPE_NONE,
        RawFile,
        RawFolder,
        build_cab,
        reference_checksum,
        write_lzx_cab,
    )
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from lzx_writer import (  # type: ignore[no-redef]
        LZX_TYPE,
        TYPE_MSZIP,
        TYPE_NONE,
        RawFile,
        RawFolder,
        build_cab,
        reference_checksum,
        write_lzx_cab,
    )

REPO = Path(__file__).resolve().parent.parent
T = datetime(2013, 4, 2, 12, 30, 10)
LIMITS = CabLimits()
UTF8_NAME = "Ünïcödé/ファームウェア.bin"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries(files: dict[str, bytes], chunk: int = 7777) -> list[CabEntry]:
    """Entries whose producers hand out odd-sized chunks."""

    def producer(data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), chunk):
            yield data[i : i + chunk]

    return [CabEntry(n, len(d), lambda d=d: producer(d), T) for n, d in files.items()]


def make_cab(path: Path, files: dict[str, bytes], compression: str = "mszip") -> Path:
    write_cab(path, entries(files), compression=compression)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file below `root`, as a user listing the folder would find it."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def sample_files() -> dict[str, bytes]:
    r = random.Random(7)
    files = {
        "updateInfo.xml": b'<Updates><Updates><Update version="4.0.7577.4387"/></Updates>'
        b"</Updates>",
        "UCPhone/Polycom/CX600/A/ENU/CPE/CPE.nbt": r.randbytes(70_000) + b"firmware " * 30_000,
        "UCPhone/Polycom/CX600/A/ENU/CPE/CPE.cat": b"0\x82" + r.randbytes(3000),
        "empty.txt": b"",
        UTF8_NAME: b"utf-8 named member " * 100,
    }
    for i in range(40):
        files[f"small/file{i:03d}.txt"] = f"small file {i}\n".encode() * (i + 1)
    return files


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return sample_files()


@pytest.fixture(scope="module", params=["mszip", "none"])
def our_cab(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    files: dict[str, bytes],
) -> Path:
    return make_cab(tmp_path_factory.mktemp("ours") / "UCUpdates.cab", files, request.param)


# --- round trip ------------------------------------------------------------------------


def test_round_trip_gives_the_same_bytes(
    our_cab: Path, files: dict[str, bytes], tmp_path: Path
) -> None:
    cab = open_package(our_cab, LIMITS)
    assert [m.name for m in cab.members] == list(files)
    assert all(m.mtime == T for m in cab.members)
    assert cab.base_offset == 0 and cab.size == our_cab.stat().st_size
    dest = tmp_path / "out"
    got = cab.extract(files, dest)
    assert tree(dest) == files
    assert {n: (e.size, e.sha256, e.path) for n, e in got.items()} == {
        n: (len(d), sha(d), dest / n) for n, d in files.items()
    }


def test_compression_is_what_was_asked(tmp_path: Path) -> None:
    text = b"".join(b"line %d\n" % i for i in range(15_000))
    for compression in ("mszip", "none"):
        path = make_cab(tmp_path / f"{compression}.cab", {"a": text}, compression)
        assert open_package(path, LIMITS).compression == (compression,)
    sizes = {p.stem: p.stat().st_size for p in tmp_path.glob("*.cab")}
    assert sizes["mszip"] < len(text) / 3 < len(text) < sizes["none"]


def test_extracting_some_members_writes_only_those(
    our_cab: Path, files: dict[str, bytes], tmp_path: Path
) -> None:
    cab = open_package(our_cab, LIMITS)
    wanted = ["small/file020.txt", "UCPHONE/polycom/CX600/A/ENU/CPE/cpe.NBT", "empty.txt"]
    got = cab.extract(wanted, tmp_path / "out")
    names = ["small/file020.txt", "UCPhone/Polycom/CX600/A/ENU/CPE/CPE.nbt", "empty.txt"]
    assert sorted(got) == sorted(names)
    assert tree(tmp_path / "out") == {n: files[n] for n in names}


def test_hashing_only_writes_nothing(
    our_cab: Path, files: dict[str, bytes], tmp_path: Path
) -> None:
    cab = open_package(our_cab, LIMITS)
    tmp_path.joinpath("out").mkdir()
    got = cab.extract(files, tmp_path / "out", write=False)
    assert {n: (e.size, e.sha256, e.path) for n, e in got.items()} == {
        n: (len(d), sha(d), None) for n, d in files.items()
    }
    assert list(tmp_path.joinpath("out").iterdir()) == []


def test_lookup_ignores_case_and_missing_members_raise_key_error(
    our_cab: Path, tmp_path: Path
) -> None:
    cab = open_package(our_cab, LIMITS)
    assert cab.member("UPDATEINFO.XML").name == "updateInfo.xml"
    assert cab.member("ucphone\\polycom\\cx600\\a\\enu\\cpe\\cpe.cat").size == 3002
    assert cab.read_small("UpdateInfo.xml", 1000).startswith(b"<Updates>")
    for call in (
        lambda: cab.member("nope.xml"),
        lambda: cab.read_small("nope.xml", 10),
        lambda: cab.extract(["updateInfo.xml", "nope"], tmp_path / "out"),
    ):
        with pytest.raises(KeyError):
            call()
    assert not tmp_path.joinpath("out").exists()


def test_read_small_refuses_a_large_member(our_cab: Path) -> None:
    cab = open_package(our_cab, LIMITS)
    with pytest.raises(CabError, match=r"CPE\.nbt is 340000 bytes; at most 1000"):
        cab.read_small("UCPhone/Polycom/CX600/A/ENU/CPE/CPE.nbt", 1000)


def test_an_existing_file_is_not_overwritten_and_partial_output_is_removed(
    our_cab: Path, files: dict[str, bytes], tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    (dest / "small").mkdir(parents=True)
    (dest / "small" / "file039.txt").write_bytes(b"keep me")
    cab = open_package(our_cab, LIMITS)
    with pytest.raises(FileExistsError):
        cab.extract(["updateInfo.xml", "empty.txt", "small/file039.txt"], dest)
    assert tree(dest) == {"small/file039.txt": b"keep me"}


def test_a_write_error_propagates_as_oserror_and_removes_the_partial_file(tmp_path: Path) -> None:
    cab = make_cab(tmp_path / "big.cab", {"a.txt": b"a", "big.bin": random.randbytes(300_000)})
    script = textwrap.dedent("""
        import resource, signal, sys
        from pathlib import Path
        from appliance.cab.reader import CabLimits, open_package
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        cab = open_package(Path(sys.argv[1]), CabLimits())
        try:
            cab.extract(["a.txt", "big.bin"], Path(sys.argv[2]))
        except OSError as e:
            print("OSError", e.errno)
    """)
    dest = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(cab), str(dest)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.split() == ["OSError", "27"], proc.stderr  # EFBIG
    assert tree(dest) == {}


def test_an_fsync_error_propagates_and_every_file_is_closed_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Finished files are fsynced and closed on threads of their own: an error there still
    # fails the extraction, and no descriptor is left open.
    files = {f"f{i}.bin": random.Random(i).randbytes(50_000) for i in range(12)}
    cab = open_package(make_cab(tmp_path / "c.cab", files), LIMITS)
    real = os.fsync
    calls: list[int] = []

    def failing(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 5:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="Input/output error"):
        cab.extract(files, tmp_path / "out")
    assert len(os.listdir("/proc/self/fd")) == before
    assert tree(tmp_path / "out") == {}
    monkeypatch.setattr(os, "fsync", real)
    assert {n: e.sha256 for n, e in cab.extract(files, tmp_path / "again").items()} == {
        n: sha(d) for n, d in files.items()
    }


def test_writer_refuses_a_producer_that_lies_about_the_size(tmp_path: Path) -> None:
    out = tmp_path / "x.cab"
    out.write_bytes(b"previous")
    for produced in (b"abc", b"abcdefg"):
        bad = [CabEntry("a", 5, lambda p=produced: [p], T)]
        with pytest.raises(
            CabWriteError,
            match="'a' produced (3 bytes, but its size is 5|more than its size of 5 bytes)",
        ):
            write_cab(out, bad)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["x.cab"]


def test_writer_refuses_bad_names(tmp_path: Path) -> None:
    for name in ("", "a\0b", "x" * 256):
        with pytest.raises(CabWriteError):
            write_cab(tmp_path / "x.cab", [CabEntry(name, 0, lambda: [], T)])
    assert list(tmp_path.iterdir()) == []


def test_checksum_matches_the_word_by_word_definition() -> None:
    r = random.Random(3)
    sizes = [*range(0, 70), 4093, 32768, 32769, 32770, 32771, 32780, 65536 + 3, 100_001]
    for size in sizes:
        data = r.randbytes(size)
        seed = r.getrandbits(32)
        assert checksum(data, seed) == reference_checksum(data, seed), size
        assert checksum(memoryview(data)) == reference_checksum(data)


# --- independent tools read what we write -------------------------------------------------


def test_cabextract_verifies_and_extracts_our_cab(
    our_cab: Path, files: dict[str, bytes], tmp_path: Path
) -> None:
    test = subprocess.run(["cabextract", "-t", str(our_cab)], capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "All done, no errors." in test.stdout
    assert test.stdout.count(" OK ") == len(files)
    subprocess.run(["cabextract", "-q", "-d", str(tmp_path / "ce"), str(our_cab)], check=True)
    assert tree(tmp_path / "ce") == files


def test_gcab_lists_our_cab(our_cab: Path, files: dict[str, bytes]) -> None:
    listing = subprocess.run(
        ["gcab", "-t", str(our_cab)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert listing == [n.replace("/", "\\") for n in files]


def test_cabarchive_reads_our_cab(our_cab: Path, files: dict[str, bytes]) -> None:
    arc = CabArchive(our_cab.read_bytes())
    assert {n: f.buf or b"" for n, f in arc.items()} == {
        n.replace("/", "\\"): d for n, d in files.items()
    }


# --- we read what others write ---------------------------------------------------------


@pytest.mark.parametrize("zip_flag", [[], ["-z"]], ids=["stored", "mszip"])
def test_reads_cabs_made_by_gcab(zip_flag: list[str], tmp_path: Path) -> None:
    r = random.Random(11)
    files = {
        "updateInfo.xml": b"<Updates/>",
        "img/CPE.nbt": r.randbytes(50_000) + bytes(range(256)) * 400,
        "img/repeat.bin": r.randbytes(20_000) * 8,
        "img/empty": b"",
    }
    src = tmp_path / "src"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    cab_path = tmp_path / "g.cab"
    subprocess.run(
        ["gcab", "-c", *zip_flag, str(cab_path), *files], cwd=src, check=True, capture_output=True
    )
    cab = open_package(cab_path, LIMITS)
    assert cab.compression == ("mszip" if zip_flag else "none",)
    got = cab.extract(files, tmp_path / "out")
    assert tree(tmp_path / "out") == files
    assert {n: e.sha256 for n, e in got.items()} == {n: sha(d) for n, d in files.items()}


def test_reads_cabs_made_by_cabarchive(tmp_path: Path) -> None:
    r = random.Random(12)
    files = {
        "updateInfo.xml": b"<Updates/>",
        "a\\b\\big.bin": r.randbytes(90_000),
        "a\\zeros.bin": bytes(70_000),
    }
    arc = CabArchive()
    for name, data in files.items():
        arc[name] = CabFile(data, mtime=T)
    path = tmp_path / "ca.cab"
    path.write_bytes(arc.save(compress=True))
    cab = open_package(path, LIMITS)
    cab.extract([m.name for m in cab.members], tmp_path / "out")
    assert tree(tmp_path / "out") == {n.replace("\\", "/"): d for n, d in files.items()}


def history_blocks(data: bytes) -> list[tuple[bytes, int]]:
    """MSZIP blocks that use the previous block's output as history, as makecab does."""
    blocks, previous = [], b""
    for i in range(0, len(data), 32768):
        block = data[i : i + 32768]
        deflate = (
            zlib.compressobj(6, zlib.DEFLATED, -15, zdict=previous)
            if previous
            else zlib.compressobj(6, zlib.DEFLATED, -15)
        )
        blocks.append((b"CK" + deflate.compress(block) + deflate.flush(), len(block)))
        previous = block
    return blocks


def test_mszip_blocks_may_refer_to_the_previous_block(tmp_path: Path) -> None:
    pattern = random.Random(5).randbytes(20_000)
    data = pattern * 8  # each block repeats what the one before it ended with
    blocks = history_blocks(data)
    with pytest.raises(zlib.error):  # the fixture really needs the history
        zlib.decompressobj(-15).decompress(blocks[1][0][2:])
    path = tmp_path / "history.cab"
    path.write_bytes(
        build_cab([RawFile(b"fw\\image.bin", len(data))], [RawFolder(TYPE_MSZIP, blocks)])
    )
    subprocess.run(["cabextract", "-q", "-d", str(tmp_path / "ce"), str(path)], check=True)
    assert tree(tmp_path / "ce") == {"fw/image.bin": data}
    got = open_package(path, LIMITS).extract(["fw/image.bin"], tmp_path / "out")
    assert tree(tmp_path / "out") == {"fw/image.bin": data}
    assert got["fw/image.bin"].sha256 == sha(data)


def test_reserved_areas_are_skipped(tmp_path: Path) -> None:
    data = random.Random(6).randbytes(40_000) + bytes(50_000)
    path = tmp_path / "signed.cab"
    path.write_bytes(
        build_cab(
            [RawFile(b"a.bin", len(data))],
            [RawFolder(TYPE_MSZIP, history_blocks(data))],
            header_reserve=b"\x00\x00\x10\x00" + bytes(16),
            folder_reserve=4,
            data_reserve=8,
        )
    )
    assert subprocess.run(["cabextract", "-t", str(path)], capture_output=True).returncode == 0
    open_package(path, LIMITS).extract(["a.bin"], tmp_path / "out")
    assert tree(tmp_path / "out") == {"a.bin": data}


# --- cabinets inside self-extracting executables -------------------------------------------


def fake_exe(cab: bytes, head: int = (1 << 20) - 2) -> tuple[bytes, int]:
    """PE-looking bytes, stray 'MSCF' strings, the cabinet straddling the 1 MiB read
    boundary, then trailing bytes (e.g. an Authenticode signature)."""
    stray_plausible = struct.pack(
        "<4sIIIIIBBHHHHH", b"MSCF", 0, 1 << 30, 0, 44, 0, 3, 1, 1, 1, 0, 0, 0
    )
    prefix = (
        b"MZ\x90\x00"
        + bytes(60)
        + b"This program cannot be run in DOS mode.\r\n"
        + b"PE\0\0"
        + b"MSCF is a string here"
        + stray_plausible
    )
    prefix += random.Random(1).randbytes(head - len(prefix))
    return prefix + cab + b"\x30\x82" + bytes(5000), len(prefix)


def test_finds_the_cabinet_inside_an_exe(files: dict[str, bytes], tmp_path: Path) -> None:
    cab_bytes = make_cab(tmp_path / "in.cab", files).read_bytes()
    exe, offset = fake_exe(cab_bytes)
    path = tmp_path / "UCUpdates.exe"
    path.write_bytes(exe)
    cab = open_package(path, LIMITS)
    assert (cab.base_offset, cab.size) == (offset, len(cab_bytes))
    cab.extract(files, tmp_path / "out")
    assert tree(tmp_path / "out") == files


def test_a_file_without_a_cabinet_is_refused(tmp_path: Path) -> None:
    for content in (b"", b"MSCF", random.Random(2).randbytes(3 << 20), fake_exe(b"", 5000)[0]):
        path = tmp_path / "x.exe"
        path.write_bytes(content)
        with pytest.raises(CabError, match="not a cabinet|truncated archive"):
            open_package(path, LIMITS)


# --- hostile archives ---------------------------------------------------------------------


def raw_cab(tmp_path: Path, names: list[bytes], attribs: int = 0x20) -> Path:
    """Stored members named verbatim, 10 bytes each."""
    data = b"0123456789" * len(names)
    raw = [RawFile(n, 10, 10 * i, attribs=attribs) for i, n in enumerate(names)]
    path = tmp_path / "hostile.cab"
    path.write_bytes(build_cab(raw, [RawFolder(TYPE_NONE, [(data, len(data))])]))
    return path


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (b"..\\..\\evil.txt", "'..' component"),
        (b"a\\..\\..\\x", "'..' component"),
        (b"a/../x", "'..' component"),
        (b"a\\.\\b", "'.' component"),
        (b".", "'.' component"),
        (b"/etc/passwd", "absolute path"),
        (b"\\x", "absolute path"),
        (b"C:x", "':'"),
        (b"C:\\Windows\\x", "':'"),
        (b"file.txt:stream", "':'"),
        (b"a\x01b", "control"),
        (b"a\x7fb", "control"),
        (b"a\nb", "control"),
        (b"a\\\\b", "empty path component"),
        (b"dir\\", "empty path component"),
        (b"", "empty"),
        (b"d\\" + b"x" * 256, "longer than 255 bytes"),
    ],
)
def test_unsafe_names_are_refused(name: bytes, problem: str, tmp_path: Path) -> None:
    path = raw_cab(tmp_path, [b"ok.txt", name])
    with pytest.raises(CabError, match=f"unsafe member name .*{problem}") as e:
        open_package(path, LIMITS)
    assert repr(name.decode("cp1252")) in str(e.value)
    assert "\n" not in str(e.value)


def test_non_utf8_name_flagged_utf8_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CabError, match="not valid UTF-8"):
        open_package(raw_cab(tmp_path, [b"\xff\xfe.txt"], attribs=0xA0), LIMITS)


def test_invisible_characters_in_utf8_names_are_refused(tmp_path: Path) -> None:
    path = raw_cab(tmp_path, ["evil\u202etxt.exe".encode()], attribs=0xA0)  # RTL override
    with pytest.raises(CabError, match=r"'evil\\u202etxt.exe': .*non-printable"):
        open_package(path, LIMITS)


def test_names_without_the_utf8_flag_are_cp1252(tmp_path: Path) -> None:
    cab = open_package(raw_cab(tmp_path, [b"caf\xe9\\\x80.txt"]), LIMITS)
    assert [m.name for m in cab.members] == ["café/€.txt"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([b"Readme.txt", b"README.TXT"], "'Readme.txt' and 'README.TXT' differ only by case"),
        ([b"a\\b.txt", b"A/B.TXT"], "'a/b.txt' and 'A/B.TXT' differ only by case"),
        ([b"same.txt", b"same.txt"], "'same.txt' appears twice"),
        ([b"fw", b"FW\\image.bin"], "'fw' is also the folder of 'FW/image.bin'"),
    ],
)
def test_duplicate_names_are_refused(names: list[bytes], message: str, tmp_path: Path) -> None:
    with pytest.raises(CabError, match=message):
        open_package(raw_cab(tmp_path, names), LIMITS)


def test_more_entries_than_the_limit_are_refused(tmp_path: Path) -> None:
    path = raw_cab(tmp_path, [f"f{i}".encode() for i in range(6)])
    assert len(open_package(path, CabLimits(max_entries=6)).members) == 6
    with pytest.raises(CabError, match=r"too many entries: 6 \(the limit is 5\)"):
        open_package(path, CabLimits(max_entries=5))


def test_more_bytes_than_the_limit_are_refused(tmp_path: Path) -> None:
    path = make_cab(tmp_path / "t.cab", {"a": random.randbytes(3000), "b": random.randbytes(3000)})
    assert open_package(path, CabLimits(max_total_bytes=6000)).members
    with pytest.raises(CabError, match="too large: 6000 bytes uncompressed .*5999"):
        open_package(path, CabLimits(max_total_bytes=5999))


def test_sizes_that_lie_are_refused_before_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "lie.cab"
    path.write_bytes(
        build_cab([RawFile(b"a", 4_000_000_000)], [RawFolder(TYPE_NONE, [(b"0123456789", 10)])])
    )
    with pytest.raises(CabError, match="too large: 4000000000 bytes"):
        open_package(path, CabLimits(max_total_bytes=1 << 30))
    with pytest.raises(CabError, match="compression ratio"):
        open_package(path, LIMITS)
    with pytest.raises(
        CabError, match="'a' ends at byte 4000000000 of folder 0, which holds only 10 bytes"
    ):
        open_package(path, CabLimits(max_ratio=1e12))


def test_folders_sharing_their_data_are_refused(tmp_path: Path) -> None:
    """2000 folders over the same 200 blocks would mean 400,000 block headers to walk."""
    n_folders, n_blocks = 2000, 200
    coff_files = 36 + 8 * n_folders
    data_at = coff_files + 16 + 2
    blocks = b"".join(struct.pack("<IHH", 0, 10, 10) + b"0123456789" for _ in range(n_blocks))
    cab = (
        struct.pack(
            "<4sIIIIIBBHHHHH",
            b"MSCF",
            0,
            data_at + len(blocks),
            0,
            coff_files,
            0,
            3,
            1,
            n_folders,
            1,
            0,
            0,
            0,
        )
        + struct.pack("<IHH", data_at, n_blocks, TYPE_NONE) * n_folders
        + struct.pack("<IIHHHH", 10, 0, 0, 0, 0, 0x20)
        + b"a\0"
        + blocks
    )
    (tmp_path / "shared.cab").write_bytes(cab)
    with pytest.raises(CabError, match="folders declare more data blocks than fit"):
        open_package(tmp_path / "shared.cab", LIMITS)


def test_a_zip_bomb_is_refused_by_its_ratio(tmp_path: Path) -> None:
    path = make_cab(tmp_path / "zeros.cab", {"zeros.bin": bytes(10 << 20)})
    assert path.stat().st_size < 100_000
    with pytest.raises(CabError, match=r"compression ratio \d+:1 is over the limit of 200:1"):
        open_package(path, LIMITS)
    cab = open_package(path, CabLimits(max_ratio=10_000))
    got = cab.extract(["zeros.bin"], tmp_path / "out", write=False)
    assert got["zeros.bin"].sha256 == sha(bytes(10 << 20))


def test_spanned_cabinets_are_refused(tmp_path: Path) -> None:
    data = b"0123456789"
    folder = [RawFolder(TYPE_NONE, [(data, 10)])]
    for flags, strings in ((0x0002, b"disk2.cab\0Disk 2\0"), (0x0001, b"disk0.cab\0Disk 0\0")):
        (tmp_path / "s.cab").write_bytes(
            build_cab([RawFile(b"a", 10)], folder, flags=flags, set_strings=strings)
        )
        with pytest.raises(CabError, match="^spanned cabinet sets are not supported$"):
            open_package(tmp_path / "s.cab", LIMITS)
    (tmp_path / "c.cab").write_bytes(build_cab([RawFile(b"a", 10, folder=0xFFFD)], folder))
    with pytest.raises(CabError, match="^spanned cabinet sets are not supported$"):
        open_package(tmp_path / "c.cab", LIMITS)


def test_unknown_compression_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "u.cab"
    path.write_bytes(build_cab([RawFile(b"a", 10)], [RawFolder(0x0005, [(b"0123456789", 10)])]))
    with pytest.raises(CabError, match="unknown compression type 0x0005 in folder 0"):
        open_package(path, LIMITS)


def corrupt_last_block(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x55
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", ["mszip", "none"])
def test_a_bad_checksum_is_refused_and_nothing_is_left(compression: str, tmp_path: Path) -> None:
    r = random.Random(9)
    files = {"first.bin": r.randbytes(70_000), "second.bin": r.randbytes(40_000)}
    path = make_cab(tmp_path / "c.cab", files, compression)
    corrupt_last_block(path)
    assert subprocess.run(["cabextract", "-t", str(path)], capture_output=True).returncode != 0
    cab = open_package(path, LIMITS)  # the tables are fine
    assert cab.read_small("first.bin", 100_000) == files["first.bin"]
    with pytest.raises(
        CabError,
        match=r"^corrupt archive: bad checksum in data block 3 of "
        r"folder 0$",
    ):
        cab.extract(files, tmp_path / "out")
    assert tree(tmp_path / "out") == {}
    assert not (tmp_path / "out").exists()


def test_a_bad_checksum_is_the_error_even_when_the_block_also_breaks_inflate(
    tmp_path: Path,
) -> None:
    # The checksums are verified on a helper thread beside the inflating: a corrupt block
    # that zlib refuses first is still reported by its checksum, and nothing is left.
    data = random.Random(12).randbytes(40 * 32768)
    blocks = history_blocks(data)
    cab = bytearray(build_cab([RawFile(b"fw.bin", len(data))], [RawFolder(TYPE_MSZIP, blocks)]))
    at = cab.index(blocks[5][0]) + 2  # the first byte of block 5's deflate stream
    cab[at] = 0xFF  # BTYPE 11: no such block type
    path = tmp_path / "c.cab"
    path.write_bytes(bytes(cab))
    with pytest.raises(zlib.error, match="invalid block type"):
        zlib.decompressobj(-15, zdict=data[4 * 32768 : 5 * 32768]).decompress(
            bytes(cab[at : at + 100])
        )
    with pytest.raises(
        CabError, match=r"^corrupt archive: bad checksum in data block 5 of folder 0$"
    ):
        open_package(path, LIMITS).extract(["fw.bin"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_scan_verifies_the_blocks_in_a_second_process_and_hashes_the_package(
    tmp_path: Path,
) -> None:
    files = {"first.bin": random.Random(15).randbytes(70_000), "second.bin": b"x" * 40_000}
    path = make_cab(tmp_path / "c.cab", files)
    cab = open_package(path, LIMITS)
    scan = cab.scan()
    try:
        assert scan.checks_blocks
        got = cab.extract(files, tmp_path / "out", scan=scan)
        assert {n: e.sha256 for n, e in got.items()} == {n: sha(d) for n, d in files.items()}
        assert scan.digest() == (sha(path.read_bytes()), path.stat().st_size)
    finally:
        scan.close()

    corrupt_last_block(path)
    cab = open_package(path, LIMITS)
    scan = cab.scan()
    try:
        with pytest.raises(CabError, match=r"^corrupt archive: bad checksum in data block 3 of"):
            cab.extract(files, tmp_path / "bad", scan=scan)
        assert not (tmp_path / "bad").exists()
        with pytest.raises(CabError, match="bad checksum in data block 3"):
            scan.digest()
    finally:
        scan.close()


def test_a_scan_hashes_the_whole_file_around_an_embedded_cabinet(tmp_path: Path) -> None:
    files = {"a.bin": random.Random(18).randbytes(90_000), "b.bin": b"z" * 5_000}
    cab_bytes = make_cab(tmp_path / "c.cab", files).read_bytes()
    exe = tmp_path / "setup.exe"
    exe.write_bytes(b"MZ" + random.Random(19).randbytes(3 * 1024 * 1024) + cab_bytes + b"sig" * 99)
    cab = open_package(exe, LIMITS)
    scan = cab.scan()
    try:
        cab.extract(files, tmp_path / "out", scan=scan)
        assert scan.digest() == (sha(exe.read_bytes()), exe.stat().st_size)
    finally:
        scan.close()
    assert tree(tmp_path / "out") == files


def test_a_scan_names_the_bad_block_before_the_inflate_error_it_causes(tmp_path: Path) -> None:
    data = random.Random(12).randbytes(40 * 32768)
    blocks = history_blocks(data)
    cab_bytes = bytearray(
        build_cab([RawFile(b"fw.bin", len(data))], [RawFolder(TYPE_MSZIP, blocks)])
    )
    cab_bytes[cab_bytes.index(blocks[5][0]) + 2] = 0xFF  # BTYPE 11 in block 5
    path = tmp_path / "c.cab"
    path.write_bytes(bytes(cab_bytes))
    cab = open_package(path, LIMITS)
    scan = cab.scan()
    try:
        with pytest.raises(CabError, match=r"^corrupt archive: bad checksum in data block 5 of"):
            cab.extract(["fw.bin"], tmp_path / "out", scan=scan)
    finally:
        scan.close()
    assert not (tmp_path / "out").exists()


def test_an_earlier_error_of_the_extraction_is_not_masked_by_a_later_bad_block(
    tmp_path: Path,
) -> None:
    r = random.Random(16)
    blocks = []
    for _ in range(4):
        deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        blocks.append((b"CK" + deflate.compress(r.randbytes(32768)) + deflate.flush(), 32768))
    blocks[0] = (blocks[0][0], 30_000)  # block 0 inflates to more than it declares
    cab_bytes = bytearray(
        build_cab([RawFile(b"a.bin", 30_000 + 3 * 32768)], [RawFolder(TYPE_MSZIP, blocks)])
    )
    cab_bytes[cab_bytes.index(blocks[3][0]) + 100] ^= 0x55  # and block 3's checksum fails
    path = tmp_path / "c.cab"
    path.write_bytes(bytes(cab_bytes))
    cab = open_package(path, LIMITS)
    scan = cab.scan()
    try:
        with pytest.raises(CabError, match="data block 0 of folder 0 gives more than 30000"):
            cab.extract(["a.bin"], tmp_path / "out", scan=scan)
    finally:
        scan.close()


def test_without_a_python_to_run_it_the_scan_is_done_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "")
    files = {"first.bin": random.Random(17).randbytes(70_000), "second.bin": b"y" * 40_000}
    path = make_cab(tmp_path / "c.cab", files)
    scan = open_package(path, LIMITS).scan()
    assert not scan.checks_blocks
    assert scan.digest() == (sha(path.read_bytes()), path.stat().st_size)
    corrupt_last_block(path)
    cab = open_package(path, LIMITS)
    scan = cab.scan()
    with pytest.raises(CabError, match=r"^corrupt archive: bad checksum in data block 3 of"):
        cab.extract(files, tmp_path / "out", scan=scan)
    scan.close()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("declared", "message"),
    [(30_000, "gives more than 30000 bytes"), (32_000, "gives more than 32000 bytes")],
)
def test_a_block_that_inflates_to_more_than_it_declares_is_refused(
    declared: int, message: str, tmp_path: Path
) -> None:
    data = random.Random(13).randbytes(32768)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = b"CK" + deflate.compress(data) + deflate.flush()
    path = tmp_path / "more.cab"
    path.write_bytes(
        build_cab([RawFile(b"a.bin", declared)], [RawFolder(TYPE_MSZIP, [(payload, declared)])])
    )
    with pytest.raises(CabError, match=rf"^corrupt archive: data block 0 of folder 0 {message}$"):
        open_package(path, LIMITS).extract(["a.bin"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_block_that_inflates_to_less_than_it_declares_is_refused(tmp_path: Path) -> None:
    data = random.Random(14).randbytes(20_000)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = b"CK" + deflate.compress(data) + deflate.flush()
    path = tmp_path / "less.cab"
    path.write_bytes(
        build_cab([RawFile(b"a.bin", 30_000)], [RawFolder(TYPE_MSZIP, [(payload, 30_000)])])
    )
    with pytest.raises(
        CabError,
        match=r"^corrupt archive: data block 0 of folder 0 gives 20000 bytes instead of 30000$",
    ):
        open_package(path, LIMITS).extract(["a.bin"], tmp_path / "out")


def test_truncated_archives_are_refused(files: dict[str, bytes], tmp_path: Path) -> None:
    whole = make_cab(tmp_path / "whole.cab", files).read_bytes()
    cuts = sorted(
        {*range(0, 120, 7), *range(120, len(whole), max(1, len(whole) // 40)), len(whole) - 1}
    )
    assert len(cuts) >= 55
    path = tmp_path / "cut.cab"
    for cut in cuts:
        path.write_bytes(whole[:cut])
        with pytest.raises(CabError, match="^(truncated archive|not a cabinet)"):
            open_package(path, LIMITS)
        if cut >= 36:  # the same, with a header that agrees with the cut (cbCabinet)
            path.write_bytes(whole[:8] + struct.pack("<I", cut) + whole[12:cut])
            dest = tmp_path / f"out{cut}"
            with pytest.raises(CabError, match="^(truncated archive|corrupt archive|not a cab)"):
                open_package(path, LIMITS).extract(files, dest)
            assert tree(dest) == {}


def test_corrupted_archives_fail_cleanly_or_extract_correctly(tmp_path: Path) -> None:
    r = random.Random(2026)
    stream = r.randbytes(20_000) * 3 + b"tail"
    files = {
        "updateInfo.xml": b"<Updates/>",
        "a\\image.bin": stream[:50_000],
        "b.bin": stream[50_000:],
    }
    pristine = build_cab(
        [
            RawFile(n.encode(), len(d), o)
            for (n, d), o in zip(files.items(), (0, 10, 50_010), strict=True)
        ],
        [RawFolder(TYPE_MSZIP, history_blocks(b"".join(files.values())))],
    )
    folder_stream = b"".join(files.values())
    header_end = pristine.index(b"b.bin") + 6
    outcomes = {"error": 0, "ok": 0}
    for i in range(300):
        data = bytearray(pristine)
        for _ in range(r.randint(1, 4)):
            at = r.randrange(header_end) if r.random() < 0.6 else r.randrange(len(data))
            data[at] = r.randrange(256)
        path = tmp_path / "fuzz.cab"
        path.write_bytes(bytes(data))
        dest = tmp_path / f"out{i}"
        try:
            cab = open_package(path, LIMITS)
            got = cab.extract([m.name for m in cab.members], dest)
        except CabError as e:
            assert str(e) and "\n" not in str(e)
            assert tree(dest) == {}
            outcomes["error"] += 1
            continue
        for m in cab.members:  # what came out is what the (possibly edited) tables say
            expected = folder_stream[m.offset : m.offset + m.size]
            assert (dest / m.name).read_bytes() == expected
            assert got[m.name].sha256 == sha(expected)
        outcomes["ok"] += 1
    assert outcomes["error"] > 50 and outcomes["ok"] > 10, outcomes


# --- LZX, through cabextract ---------------------------------------------------------------


@pytest.fixture
def lzx_files() -> dict[str, bytes]:
    r = random.Random(4)
    return {
        "updateInfo.xml": b"<Updates/>",
        "fw/CPE.nbt": r.randbytes(100_001),
        "fw/odd.bin": b"xyz" * 12_345,
        "fw/empty": b"",
        "last.txt": b"last",
    }


def test_our_lzx_test_cabs_are_valid_for_cabextract(
    lzx_files: dict[str, bytes], tmp_path: Path
) -> None:
    path = tmp_path / "lzx.cab"
    write_lzx_cab(path, lzx_files)
    test = subprocess.run(["cabextract", "-t", str(path)], capture_output=True, text=True)
    assert test.returncode == 0 and "All done, no errors." in test.stdout, test.stdout
    subprocess.run(["cabextract", "-q", "-d", str(tmp_path / "ce"), str(path)], check=True)
    assert tree(tmp_path / "ce") == lzx_files


def test_lzx_members_are_extracted_through_cabextract(
    lzx_files: dict[str, bytes], tmp_path: Path
) -> None:
    path = tmp_path / "lzx.cab"
    write_lzx_cab(path, lzx_files)
    cab = open_package(path, LIMITS)
    assert cab.compression == ("lzx",)
    assert cab.read_small("UPDATEINFO.XML", 100) == b"<Updates/>"
    wanted = ["fw/CPE.nbt", "fw/empty", "last.txt"]
    got = cab.extract(wanted, tmp_path / "out")
    assert tree(tmp_path / "out") == {n: lzx_files[n] for n in wanted}
    assert {n: (e.sha256, e.path) for n, e in got.items()} == {
        n: (sha(lzx_files[n]), tmp_path / "out" / n) for n in wanted
    }
    hashed = cab.extract(lzx_files, tmp_path / "out", write=False)
    assert {n: e.sha256 for n, e in hashed.items()} == {n: sha(d) for n, d in lzx_files.items()}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fw", "last.txt"]
    assert tree(tmp_path / "out") == {n: lzx_files[n] for n in wanted}  # nothing else left


def test_lzx_cab_inside_an_exe(lzx_files: dict[str, bytes], tmp_path: Path) -> None:
    write_lzx_cab(tmp_path / "lzx.cab", lzx_files)
    exe, offset = fake_exe((tmp_path / "lzx.cab").read_bytes(), head=5000)
    (tmp_path / "UCUpdates.exe").write_bytes(exe)
    cab = open_package(tmp_path / "UCUpdates.exe", LIMITS)
    assert cab.base_offset == offset
    cab.extract(lzx_files, tmp_path / "out")
    assert tree(tmp_path / "out") == lzx_files


def test_garbage_lzx_data_is_a_clean_error(tmp_path: Path) -> None:
    garbage = random.Random(8).randbytes(5000)
    path = tmp_path / "bad.cab"
    path.write_bytes(
        build_cab(
            [RawFile(b"a.txt", 10), RawFile(b"b.bin", 30_000, 10)],
            [RawFolder(LZX_TYPE, [(garbage, 30_010)])],
        )
    )
    cab = open_package(path, LIMITS)
    with pytest.raises(CabError, match="^cabextract failed: .+"):
        cab.extract(["a.txt", "b.bin"], tmp_path / "out")
    assert tree(tmp_path / "out") == {}


def test_lzx_needs_cabextract(
    lzx_files: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_lzx_cab(tmp_path / "lzx.cab", lzx_files)
    cab = open_package(tmp_path / "lzx.cab", LIMITS)
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    assert shutil.which("cabextract") is None
    with pytest.raises(CabError, match="^LZX-compressed packages need the 'cabextract' program$"):
        cab.extract(["fw/CPE.nbt"], tmp_path / "out")
    assert tree(tmp_path / "out") == {}


# --- memory ------------------------------------------------------------------------------


def test_memory_stays_flat_while_extracting_a_large_cab(tmp_path: Path) -> None:
    size = 64 << 20

    def text() -> Iterator[bytes]:
        line = 0
        for _ in range(size // (1 << 20)):
            chunk = b"".join(
                b"%08d firmware record %08x\n" % (line + i, (line + i) * 2654435761 & 0xFFFFFFFF)
                for i in range(34_953)
            )
            line += 34_953
            yield chunk[: 1 << 20].ljust(1 << 20, b"\n")

    path = tmp_path / "big.cab"
    write_cab(
        path, [CabEntry("fw/big.nbt", size, text, T), CabEntry("b.txt", 1, lambda: [b"b"], T)]
    )
    # Peak RSS from VmHWM: ru_maxrss would start at pytest's own size, as Linux carries
    # it across fork and exec, and hide anything smaller.
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from appliance.cab.reader import CabLimits, open_package
        def peak_kib():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        cab = open_package(Path(sys.argv[1]), CabLimits())
        before = peak_kib()
        got = cab.extract(["fw/big.nbt", "b.txt"], Path(sys.argv[2]))
        after = peak_kib()
        if len(sys.argv) > 3:  # self-check: holding the data must show up
            data = (Path(sys.argv[2]) / "fw/big.nbt").read_bytes()
            print(before, peak_kib(), got["fw/big.nbt"].size)
        else:
            print(before, after, got["fw/big.nbt"].size)
    """)

    def peak_growth(*check: str) -> int:
        out = tmp_path / f"out{len(check)}"
        proc = subprocess.run(
            [sys.executable, "-c", script, str(path), str(out), *check],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        before, after, extracted = map(int, proc.stdout.split())
        assert extracted == size == (out / "fw" / "big.nbt").stat().st_size
        return (after - before) * 1024

    growth = peak_growth()
    assert growth < 60 << 20
    assert peak_growth("hold") > 60 << 20  # the measurement does see a whole image

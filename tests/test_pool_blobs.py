"""Image bytes in PostgreSQL and each pool node's cache of them (docs/pool.md, Blobs).

Two nodes share a throwaway PostgreSQL database, each with its own data folder: A imports
the sample package (images a little over 1 MiB: two chunks each), B starts with an empty
files folder and fills it from the blobs. Phones are answered through B's Answers with a
pool verifier, as serve wires them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.catalogue import (
    Action,
    FileVerifier,
    NodeCache,
    Reason,
    apply_action,
    import_package,
    make_sample_package,
    recover,
)
from appliance.cli.packages import run_clean_files
from appliance.config import Config, load_config
from appliance.ops.checks import check_files
from appliance.ops.results import CheckResult
from appliance.phones.answers import Answers
from appliance.phones.codec import BaseUrls
from appliance.store import BLOB_CHUNK, RuleFilter, Store, StoreError
from appliance.testing import CU7, CX600, device_request

IMAGE_SIZE = BLOB_CHUNK + 4096  # two chunks per image
URLS = BaseUrls.of("ucupdates.example.com", 443, "ucupdates-ext.example.com", 4443)
CHECK = device_request(serial=None, version=CU7)


@dataclass
class Node:
    config: Config
    store: Store

    def file(self, relative: Path | str) -> Path:
        return self.config.store_dir / relative


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "UCUpdates.cab"
    make_sample_package(path, image_size=IMAGE_SIZE)
    return path


@pytest.fixture
def nodes(new_postgres_database: Callable[[], str], tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    """Nodes A and B: one database, a data folder each."""
    dsn = new_postgres_database()
    made = []
    for name in ("a", "b"):
        config = load_config(None, tmp_path / name)
        config.data_dir.mkdir(parents=True)
        made.append(Node(config, Store.open_postgresql(dsn)))
    yield made[0], made[1]
    for node in made:
        node.store.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_import_stores_every_file_as_a_blob_and_another_node_fills_its_files_from_them(
    nodes: tuple[Node, Node], package: Path
) -> None:
    a, b = nodes
    import_package(a.store, a.config, package, "alice")
    files = a.store.stored_files()
    assert len(files) == 16  # 8 images and their signature files
    assert a.store.blob_hashes() == {f.sha256 for f in files}
    image = next(f for f in files if f.size == IMAGE_SIZE)
    assert a.store.blob_size(image.sha256) == IMAGE_SIZE
    assert b"".join(b.store.blob_chunks(image.sha256)) == a.file(image.path).read_bytes()
    assert not b.config.store_dir.exists()
    waiting = check_files(b.config, b.store)  # `ucupdates check` on B before its fill
    assert waiting.ok and waiting.warning
    assert "16 file(s), 8.4 MB, not fetched from the store yet" in waiting.detail

    cache = NodeCache(b.store, b.config.store_dir, b.config.staging_dir)
    filled = cache.fill()
    assert filled is not None and filled.complete
    assert sorted(filled.fetched) == sorted(f.path.as_posix() for f in files)
    assert filled.bytes == sum(f.size for f in files)
    for f in files:
        assert b.file(f.path).read_bytes() == a.file(f.path).read_bytes(), f.path
    assert list(b.config.staging_dir.iterdir()) == []  # no temporary file left

    again = cache.fill()  # everything here and verified: nothing fetched twice
    assert again is not None and again.present == 16 and again.fetched == ()
    assert again.bytes == 0
    assert check_files(b.config, b.store, hashes=True) == CheckResult(
        "files", True, "16 file(s) of 8 update(s), 8.4 MB hashed"
    )


def test_two_workers_of_a_node_fill_one_folder_without_fetching_a_file_twice(
    nodes: tuple[Node, Node], package: Path
) -> None:
    a, b = nodes
    import_package(a.store, a.config, package, "alice")
    other = Store.open_postgresql(b.store._conn.conninfo)  # the second worker's own store
    try:
        workers = [
            NodeCache(store, b.config.store_dir, b.config.staging_dir) for store in (b.store, other)
        ]
        for cache in workers:
            cache.fill_soon()
        assert all(cache.wait(60) for cache in workers)
        first, second = (cache.last for cache in workers)
        assert first is not None and second is not None
        assert first.complete and second.complete
        assert not set(first.fetched) & set(second.fetched)
        assert len(first.fetched) + len(second.fetched) == 16
        assert first.bytes + second.bytes == sum(f.size for f in b.store.stored_files())
        for f in b.store.stored_files():
            assert _sha256(b.file(f.path)) == f.sha256
    finally:
        for cache in workers:
            cache.close()
        other.close()


def test_a_fetch_killed_midway_is_left_to_the_cache_by_recover_and_cleaned_by_it(
    nodes: tuple[Node, Node], package: Path
) -> None:
    a, b = nodes
    import_package(a.store, a.config, package, "alice")
    left = b.config.staging_dir / "fetch-4242-0badf00d"  # a serve killed while it fetched
    left.mkdir(parents=True)
    (left / "blob").write_bytes(b"half")
    config = b.config
    assert recover(b.store, config.store_dir, config.staging_dir, config.lock_path) == ()
    assert left.exists()  # a command's recovery never pulls a running fetch away

    filled = NodeCache(b.store, config.store_dir, config.staging_dir).fill()
    assert filled is not None and filled.complete
    assert list(config.staging_dir.iterdir()) == []


def test_a_damaged_copy_on_the_node_is_found_and_fetched_again(
    nodes: tuple[Node, Node], package: Path
) -> None:
    a, b = nodes
    import_package(a.store, a.config, package, "alice")
    cache = NodeCache(b.store, b.config.store_dir, b.config.staging_dir)
    cache.fill()
    images = [f for f in b.store.stored_files() if f.size == IMAGE_SIZE]

    # A byte flipped while the node runs: its time changes, the cache hashes it again.
    first = b.file(images[0].path)
    with first.open("r+b") as f:
        f.seek(IMAGE_SIZE // 2)
        byte = f.read(1)
        f.seek(IMAGE_SIZE // 2)
        f.write(bytes([byte[0] ^ 1]))
    filled = cache.fill()
    assert filled is not None and filled.repaired == (images[0].path.as_posix(),)
    assert _sha256(first) == images[0].sha256

    # A byte flipped with the file's time put back, found by a node starting again.
    second = b.file(images[1].path)
    before = second.stat()
    data = bytearray(second.read_bytes())
    data[7] ^= 0x80
    second.write_bytes(bytes(data))
    os.utime(second, ns=(before.st_atime_ns, before.st_mtime_ns))
    restarted = NodeCache(b.store, b.config.store_dir, b.config.staging_dir)
    filled = restarted.fill()
    assert filled is not None and filled.repaired == (images[1].path.as_posix(),)
    assert filled.present == 15
    assert _sha256(second) == images[1].sha256


def test_a_rule_is_offered_on_a_node_only_once_its_files_are_fetched_and_verified(
    nodes: tuple[Node, Node], package: Path
) -> None:
    a, b = nodes
    import_package(a.store, a.config, package, "alice")
    rule = a.store.rule_by_key(CX600)
    assert rule is not None and rule.pending_version is not None
    apply_action(a.store, Action.APPROVE, RuleFilter(ids=(rule.id,)), "alice")
    files = a.store.update_files(CX600, rule.pending_version)
    image = next(f for f in files if f.file_name == "CPE.nbt")
    kept = b"".join(a.store.blob_chunks(image.sha256))
    a.store.delete_blob(image.sha256)  # the pool lost this blob (or it has not arrived)

    verifier = FileVerifier(b.config.store_dir, cached=True)
    answers = Answers(b.store, URLS, verifier)
    decision, body = answers.answer(CHECK)  # an empty files folder: nothing offered yet
    assert decision.reason is Reason.BROKEN_FILES
    assert b"<Downloads>0</Downloads>" in body

    cache = NodeCache(b.store, b.config.store_dir, b.config.staging_dir, verifier)
    filled = cache.fill()
    assert filled is not None and filled.waiting == (image.path.as_posix(),)
    assert not b.file(image.path).exists()
    lost = check_files(b.config, b.store)
    assert not lost.ok and "the store holds no blob of it" in lost.detail
    decision, body = answers.answer(CHECK)
    assert decision.reason is Reason.BROKEN_FILES and decision.downloads == 0

    assert a.store.put_blob(image.sha256, [kept]) == image.size  # the blob arrives
    cache.fill_soon()  # as serve calls it after the catalogue change: in its own thread
    assert cache.wait(60)
    filled = cache.last
    assert filled is not None and filled.fetched == (image.path.as_posix(),)
    assert filled.complete
    decision, body = answers.answer(CHECK)
    assert decision.reason is Reason.APPROVED and decision.downloads == 1
    assert b"<Downloads>1</Downloads>" in body

    # The copy damaged later, found when it is about to be served: fetched again at once.
    with b.file(image.path).open("r+b") as f:
        f.write(b"X")
    assert not answers.intact(image)  # its download refused; the cache wakes up
    assert cache.wait(60)
    assert cache.last is not None and cache.last.repaired == (image.path.as_posix(),)
    assert _sha256(b.file(image.path)) == image.sha256
    assert answers.answer(CHECK)[0].reason is Reason.APPROVED
    cache.close()


def test_a_fetch_that_fails_is_tried_again(nodes: tuple[Node, Node], package: Path) -> None:
    a, b = nodes
    import_package(a.store, a.config, package, "alice")
    b.config.staging_dir.parent.mkdir(parents=True, exist_ok=True)
    b.config.staging_dir.write_bytes(b"")  # a file where the staging folder goes
    cache = NodeCache(b.store, b.config.store_dir, b.config.staging_dir)
    cache.fill_soon()
    for _ in range(600):  # the first pass ends with every fetch failed
        if cache.last is not None:
            break
        cache.wait(0.1)
    assert cache.last is not None and len(cache.last.failed) == 16
    assert not cache.wait(0)  # not idle: it tries again

    b.config.staging_dir.unlink()
    cache.fill_soon()  # the next catalogue change, before the retry's time
    assert cache.wait(60)
    assert cache.last is not None and cache.last.complete
    for f in b.store.stored_files():
        assert _sha256(b.file(f.path)) == f.sha256
    cache.close()


def test_put_blob_refuses_bytes_that_are_not_the_hash_and_leaves_nothing(
    nodes: tuple[Node, Node],
) -> None:
    store = nodes[0].store
    data = os.urandom(2 * BLOB_CHUNK + 10)
    sha256 = hashlib.sha256(data).hexdigest()
    wrong = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(StoreError, match="nothing was stored"):
        store.put_blob(sha256, [wrong])
    assert not store.has_blob(sha256) and store.blob_hashes() == set()
    assert store._conn.execute("SELECT count(*) FROM blob_chunks").fetchone()[0] == 0

    with store.transaction():  # in a caller's transaction, which goes on and commits
        with pytest.raises(StoreError, match="nothing was stored"):
            store.put_blob(sha256, [wrong[:100], wrong[100:]])
        store.append_event("test", "test", "blob", None, None)
    assert store.blob_hashes() == set()
    assert store._conn.execute("SELECT count(*) FROM blob_chunks").fetchone()[0] == 0

    assert store.put_blob(sha256, [data[:5], data[5:]]) == len(data)
    assert b"".join(store.blob_chunks(sha256)) == data
    chunks = [len(c) for c in store.blob_chunks(sha256)]
    assert chunks == [BLOB_CHUNK, BLOB_CHUNK, 10]

    def unread() -> Iterator[bytes]:
        raise AssertionError("a stored blob's bytes are read again")
        yield b""

    assert store.put_blob(sha256, unread()) == len(data)  # stored already: not read
    with pytest.raises(StoreError, match="not a SHA-256"):
        store.put_blob(sha256.upper(), [data])


def test_an_import_that_fails_before_its_commit_leaves_no_blob(
    nodes: tuple[Node, Node], package: Path
) -> None:
    a, _ = nodes

    def fail(phase: str) -> None:
        if phase == "committing":  # inside the transaction, after the blobs are written
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        import_package(a.store, a.config, package, "alice", fail)
    assert a.store.blob_hashes() == set()
    assert a.store.rules() == [] and a.store.stored_files() == []


def test_a_reimport_that_repairs_a_file_stores_its_lost_blob_again(
    nodes: tuple[Node, Node], package: Path
) -> None:
    a, _ = nodes
    import_package(a.store, a.config, package, "alice")
    image = next(f for f in a.store.stored_files() if f.size == IMAGE_SIZE)
    a.store.delete_blob(image.sha256)
    a.file(image.path).unlink()  # and the importing node's copy is lost too
    result = import_package(a.store, a.config, package, "alice")
    assert result.repaired == ((image.path.as_posix(), "missing"),)
    assert a.store.blob_hashes() == {f.sha256 for f in a.store.stored_files()}
    assert b"".join(a.store.blob_chunks(image.sha256)) == a.file(image.path).read_bytes()


def test_clean_files_removes_the_blobs_no_file_lists(
    nodes: tuple[Node, Node], package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = nodes
    import_package(a.store, a.config, package, "alice")
    rule = a.store.rule_by_key(CX600)
    assert rule is not None
    files = a.store.update_files(CX600, rule.pending_version or "")
    apply_action(a.store, Action.REMOVE, RuleFilter(ids=(rule.id,)), "alice")
    assert run_clean_files(argparse.Namespace(), a.config, a.store, "alice") == 0
    assert "deleted 2 blob(s) from the store" in capsys.readouterr().out
    assert a.store.blob_hashes() == {f.sha256 for f in a.store.stored_files()}
    assert not {f.sha256 for f in files} & a.store.blob_hashes()
    assert len(a.store.blob_hashes()) == 14


def test_on_sqlite_an_import_stores_no_blob_and_the_cache_has_nothing_to_do(
    store: Store, config: Config, package: Path
) -> None:
    import_package(store, config, package, "alice")
    assert store.blob_hashes() == set() and not store.keeps_blobs
    filled = NodeCache(store, config.store_dir, config.staging_dir).fill()
    assert filled is not None and filled.present == 0 and filled.fetched == ()

"""An import's folders reach the disk before its commit: each one fsynced, several at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appliance.catalogue import durable
from appliance.catalogue.importer import import_package
from appliance.config import Config
from appliance.store.database import Store


def test_every_store_folder_on_the_way_to_a_new_file_is_fsynced_before_the_commit(
    config: Config, store: Store, sample_cab: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    lock = threading.Lock()
    real = durable.fsync_folder

    def recording(path: Path) -> None:
        real(path)
        with lock:
            synced.append(path)

    monkeypatch.setattr(durable, "fsync_folder", recording)
    at_commit: list[Path] = []

    def checkpoint(phase: str) -> None:
        if phase == "committing":  # inside the transaction, before it commits
            at_commit.extend(synced)

    import_package(store, config, sample_cab, "alice", checkpoint)

    expected = {config.store_dir}
    for f in store.stored_files():
        folder = (config.store_dir / f.path).parent
        while folder != config.store_dir:
            expected.add(folder)
            folder = folder.parent
    assert len(expected) > 30
    assert sorted(at_commit) == sorted(expected)  # each once, all before the commit


def test_fsync_folders_syncs_them_all_and_raises_the_first_error(tmp_path: Path) -> None:
    folders = [tmp_path / f"d{i}" for i in range(20)]
    for folder in folders:
        folder.mkdir()
    durable.fsync_folders(folders)
    durable.fsync_folders(folders[:1])
    durable.fsync_folders([])
    with pytest.raises(FileNotFoundError):
        durable.fsync_folders([*folders[:5], tmp_path / "gone", *folders[5:]])

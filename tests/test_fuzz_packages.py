"""Fuzzing the package path: hostile cabinets, built in code from a seed corpus (the
sample package and small cabinets of our writer, mutated), through the cabinet reader
alone and through the whole import. A refused package changes nothing: the store, the
image folder and the staging folder are compared before and after (catalogue_state)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given

from appliance.cab import CabLimits
from appliance.cab import open_package as open_cab
from tests.fuzz import targets
from tests.fuzz.strategies import budget, inputs


def test_the_cab_seeds_open_and_extract(tmp_path: Path) -> None:
    for i, seed in enumerate(targets.cab_seeds()):
        path = tmp_path / f"{i}.cab"
        path.write_bytes(seed)
        assert open_cab(path, CabLimits()).members
        targets.cab(seed)


def test_a_seed_package_imports_and_a_second_time_changes_nothing() -> None:
    from appliance.testing import catalogue_state

    cat = targets._catalogue()
    seed = targets.importer_seeds()[0]
    targets.importer(seed)  # a new version: imported
    after = catalogue_state(cat.config)
    assert any(r.pending_version == "4.0.7577.4400" for r in after[0])
    targets.importer(seed)
    assert catalogue_state(cat.config) == after


@budget(300)
@given(inputs("cab"))
def test_fuzzed_cabinets_raise_only_cab_error_and_leave_nothing(data: bytes) -> None:
    targets.cab(data)


@budget(60)
@given(inputs("importer"))
def test_fuzzed_packages_are_imported_or_refused_changing_nothing(data: bytes) -> None:
    targets.importer(data)

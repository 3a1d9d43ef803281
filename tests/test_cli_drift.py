"""`ucupdates drift` in process: the table, --json, --csv and --unseen-days over a data
folder with rules, devices and an offer record."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.cli.main import build_parser, main
from appliance.cli.remote import REMOTE_COMMANDS
from appliance.config import load_config
from appliance.model import OfferRecord, Outcome
from appliance.store import Store
from appliance.testing.records import CU6, CU7, CU8, CX600, rule_key, seen_device
from appliance.testing.stores import add_rule


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    config = load_config(None, tmp_path / "data")
    config.data_dir.mkdir(parents=True)
    recent = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    store = Store.open(config.db_path)
    try:
        rule = add_rule(store, CX600, approved=CU8, restore=CU7)
        add_rule(store, rule_key(model="CX700"), approved=CU8, restore=CU6)
        for n, version in enumerate((CU8, CU7, CU7, CU6), start=1):
            store.record_device(seen_device(f"00-04-F2-00-00-0{n}", version, last_seen=recent))
        store.record_device(seen_device("00-04-F2-00-00-09", CU8, model="CX700"))  # long ago
        store.record_device(seen_device("00-04-F2-00-00-0A", CU7, model="CX3000"))
        stuck = OfferRecord(
            "00-04-F2-00-00-02", rule.id, CU8, CU7, recent, recent, 3, Outcome.STUCK, recent,
            recent, CU7,
        )  # fmt: skip
        with store.transaction():
            store.save_offers([stuck])
    finally:
        store.close()
    return config.data_dir


def test_the_drift_command(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = ["--data-dir", str(data_dir)]
    assert main([*folder, "drift"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:6] == [
        "MODEL",
        "REV",
        "LOCALE",
        "TYPE",
        "APPROVED",
        "DEVICES",
    ]
    assert "Polycom CX600" in text and "(no rule)" in text
    assert "totals (a device counts once per update type): 6 devices" in text
    assert main([*folder, "drift", "--json", "--unseen-days", "3650"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["unseen_days"], body["totals"]["unseen"]) == (3650, 0)
    assert main([*folder, "drift", "--csv"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("device_type,brand,model,")
    assert len(list(csv.reader(io.StringIO(out)))) == 1 + len(body["rows"])


@pytest.mark.parametrize("bad", ["0", "many", "4000"])
def test_unseen_days_must_be_a_sensible_number(bad: str) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["drift", "--unseen-days", bad])
    assert e.value.code == 2


def test_json_and_csv_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["drift", "--json", "--csv"])


def test_drift_is_available_with_server() -> None:
    assert "drift" in REMOTE_COMMANDS

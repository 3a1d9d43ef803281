"""/metrics of a real `ucupdates serve`, read by curl, promtool and a real Prometheus server.

The appliance runs as a process with the sample package approved and its metrics on a
plain-HTTP listener of their own, open to 127.0.0.1 alone: curl from 127.0.0.2 is a
stranger. A phone's check made with curl must show in what Prometheus (Debian's
`prometheus`, scraping every second into a temporary folder) stores.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.catalogue import sample_check
from appliance.config import load_config
from appliance.testing import Serving, approved_sample, free_port, serving

REPO = Path(__file__).resolve().parent.parent
INSIDE, STRANGER = "127.0.0.1", "127.0.0.2"
RUNNING, APPROVED = "4.0.7577.4366", "4.0.7577.4400"
CURL_SECONDS = 10
PROMETHEUS_SECONDS = 30.0  # its start, two scrapes and a query, on a loaded machine
CONFIG = """\
[listeners]
dns = "127.0.0.1:0"
internal_https = "127.0.0.1:0"
internal_http = "127.0.0.1:0"
external_https = "127.0.0.1:0"
admin = "127.0.0.1:0"

[metrics]
listen = "127.0.0.1:0"
allowed_networks = ["127.0.0.1/32"]
"""

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("promtool") and shutil.which("curl")),
    reason="needs Debian's prometheus (prometheus, promtool) and curl",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    folder = tmp_path_factory.mktemp("metrics")
    config_file = folder / "ucupdates.toml"
    config_file.write_text(f'data_dir = "data"\n{CONFIG}')
    approved_sample(load_config(config_file), version=APPROVED).close()
    with serving(config_file, folder / "serve.log", "--log-format", "json") as server:
        yield server


def curl(url: str, *, source: str = INSIDE, body: bytes | None = None) -> tuple[int, bytes]:
    argv = ["curl", "-sS", "--max-time", str(CURL_SECONDS), "--interface", source]
    argv += ["-o", "-", "-w", "\n%{http_code}"]
    if body is not None:
        argv += ["-H", "Content-Type: text/xml", "--data-binary", "@-"]
    done = subprocess.run(
        [*argv, url], input=body, capture_output=True, timeout=CURL_SECONDS + 5, check=True
    )
    text, _, code = done.stdout.rpartition(b"\n")
    return int(code), text


def check(served: Serving) -> None:
    """One update check as a CX600 on an old version sends it, over plain HTTP."""
    url = f"http://{INSIDE}:{served.ports['internal-http']}/RequestHandler/ucdevice.upx"
    code, body = curl(url, body=sample_check(RUNNING))
    assert code == 200 and APPROVED.encode() in body


def test_promtool_passes_the_real_output_and_strangers_get_403(served: Serving) -> None:
    check(served)
    url = f"http://{INSIDE}:{served.ports['metrics']}/metrics"
    code, text = curl(url)
    assert code == 200
    assert b'ucupdates_checks_total{outcome="approved",zone="internal"} ' in text
    linted = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    code, text = curl(url, source=STRANGER)
    assert code == 403 and b"ucupdates_" not in text


def query(port: int, expression: str) -> list[Any]:
    url = f"http://{INSIDE}:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.loads(response.read())
    except OSError:
        return []  # not listening yet
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_a_prometheus_server_scrapes_a_check_made_with_curl(
    served: Serving, tmp_path: Path
) -> None:
    before = _approved_checks(served)
    check(served)
    target = f"{INSIDE}:{served.ports['metrics']}"
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: ucupdates\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={INSIDE}:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        approved = 'ucupdates_checks_total{job="ucupdates",zone="internal",outcome="approved"}'
        deadline = time.monotonic() + PROMETHEUS_SECONDS
        up: list[Any] = []
        seen: list[Any] = []
        while time.monotonic() < deadline:
            assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
            up = query(port, 'up{job="ucupdates"}')
            seen = query(port, approved)
            if up and up[0]["value"][1] == "1" and seen:
                break
            time.sleep(0.25)
        assert up and up[0]["value"][1] == "1", (up, (tmp_path / "prometheus.log").read_text())
        assert seen and float(seen[0]["value"][1]) == before + 1
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(timeout=15)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait(timeout=15)


def _approved_checks(served: Serving) -> float:
    """The approved internal checks /metrics shows now (the other test may have made one)."""
    _, text = curl(f"http://{INSIDE}:{served.ports['metrics']}/metrics")
    line = next(
        line
        for line in text.decode().splitlines()
        if line.startswith('ucupdates_checks_total{outcome="approved",zone="internal"}')
    )
    return float(line.rsplit(" ", 1)[1])


def test_the_documented_alert_rules_pass_promtool(tmp_path: Path) -> None:
    """docs/operations.md's alert rules, as an admin would copy them."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Monitoring: Prometheus metrics", 1)[1].split("\n## ", 1)[0]
    rules = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if "groups:" in b]
    assert len(rules) == 1
    (tmp_path / "rules.yml").write_text(rules[0])
    checked = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "rules.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "UcupdatesCertificateExpiresSoon" in rules[0] and "UcupdatesNoChecks" in rules[0]


def test_with_workers_the_first_process_alone_serves_its_own_listener(tmp_path: Path) -> None:
    """`serve --workers 2`: the second process shares the phones' ports, not the metrics
    listener, and starts (its phone listener answers a check)."""
    config_file = tmp_path / "ucupdates.toml"
    config_file.write_text(f'data_dir = "data"\n{CONFIG}')
    approved_sample(load_config(config_file), version=APPROVED).close()
    with serving(config_file, tmp_path / "serve.log", "--workers", "2") as server:
        deadline = time.monotonic() + 20
        while "listener internal-http on" not in _second_start(server) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert "listener internal-http on" in _second_start(server), server.log.read_text()
        check(server)
        code, text = curl(f"http://{INSIDE}:{server.ports['metrics']}/metrics")
        assert code == 200 and b"ucupdates_checks_total" in text


def _second_start(server: Serving) -> str:
    """The log lines of the second process's listeners (the first logs its own too)."""
    lines = server.log.read_text().splitlines()
    starts = [line for line in lines if "listener internal-http on" in line]
    return starts[1] if len(starts) > 1 else ""

"""The monitoring that ships (monitoring/): the alerting rules pass `promtool check rules`
(Debian's `prometheus` package), and every metric the rules and the Grafana dashboard name is
one the programs really export, read from the `/metrics` of a running worker process and of
the served API.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from python_worker.config import DEFAULT_PROJECT_DIR
from tests.support.worker import Workers

MONITORING = DEFAULT_PROJECT_DIR / "monitoring"
RULES = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
NAME = re.compile(r"\b(callpanion_[a-z_]+)")
#: Series a histogram family exports besides its name.
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def exported(text: str) -> set[str]:
    """Every series name a /metrics page can have (counters also as <name>_total)."""
    names: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"]:
            name, kind = parts[2], parts[3]
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in HISTOGRAM_SERIES)
            if kind == "counter":
                names.add(name.removesuffix("_total") + "_total")
    return names


def named_in_rules() -> set[str]:
    return set(NAME.findall(RULES.read_text()))


def named_in_dashboard() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return {name for expr in exprs for name in NAME.findall(expr)}


def test_promtool_accepts_the_alerting_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: run `make os-packages`"
    proc = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 6 rules found" in proc.stdout


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The check bites: a rule with a bad expression fails it."""
    broken = tmp_path / "alerts.yml"
    broken.write_text(RULES.read_text().replace("> 5\n", "> > 5\n", 1))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(broken)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0


def test_the_rules_and_the_dashboard_name_only_metrics_the_programs_export(
    workers: Workers, api: object
) -> None:
    worker = workers.start()
    status, body = worker.get("/metrics")
    assert status == 200
    served = getattr(api, "client")  # noqa: B009 - ServedApi, typed in tests.api_support
    assert served.get("/healthz").status_code == 200
    scraped = served.get("/metrics")
    assert scraped.status_code == 200
    names = exported(body.decode()) | exported(scraped.text)
    wanted = named_in_rules() | named_in_dashboard()
    assert len(wanted) >= 10
    assert sorted(wanted - names) == []
    # The API counts by route template, never by a concrete path.
    assert 'callpanion_api_requests_total{method="GET",route="/healthz",status="200"}' in (
        scraped.text
    )


def test_the_dashboard_covers_lateness_outcomes_queue_depth_and_give_backs() -> None:
    names = named_in_dashboard()
    for metric in (
        "callpanion_push_lateness_seconds_bucket",
        "callpanion_pushes_total",
        "callpanion_queue_rows",
        "callpanion_released_rows_total",
        "callpanion_api_requests_total",
        "callpanion_alert_messages_total",
        "callpanion_alert_lateness_seconds_bucket",
        "callpanion_outbox_rows",
    ):
        assert metric in names

"""The Grafana dashboard and the Prometheus files in deploy/ against promtool and live services.

promtool (Debian package ``prometheus``) checks the rules and the scrape configuration and runs
the rules' unit tests; a live gateway and inference service are scraped so that every metric
the dashboard or an alert names is one they export: renaming a metric breaks this test, not a
hospital's alerting.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dicomweb_client.api import DICOMwebClient
from prometheus_client.parser import text_string_to_metric_families

from fedgate.phantom import Phantom
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.requirements import require_executable

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy/grafana/fedgate.json"
PROMETHEUS = REPO_ROOT / "deploy/prometheus"

#: Series Prometheus makes itself, not the services.
PROMETHEUS_OWN = {"up"}
#: What each metric type exports besides its own name (text exposition format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_executable("promtool", "/usr/bin/promtool")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS
    )


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    rules = _promtool("check", "rules", "alerts.yaml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_fires_on_its_trouble_and_not_on_a_healthy_site() -> None:
    result = _promtool("test", "rules", "alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert of alerts.yaml has its firing case in the unit tests.
    alerts = {rule["alert"] for rule in _rules()}
    tested = yaml.safe_load((PROMETHEUS / "alerts.test.yaml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tested
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert alerts == fired
    assert {"FedgateDeadJobs", "FedgateDiskNearlyFull", "FedgateTargetDown"} <= alerts


def test_the_dashboard_asks_for_a_prometheus_data_source_on_import() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboard and the rules, by where it is."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = {
        f"dashboard panel {panel['title']!r}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found[f"dashboard variable {variable['name']}"] = variable["definition"]
    found.update({f"alert {rule['alert']}": rule["expr"] for rule in _rules()})
    return found


def _metric_names(expression: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers followed by a selector or used bare,
    not label names, functions or keywords (this file's and deploy/'s expressions only)."""
    without_strings = re.sub(r'"[^"]*"', '""', expression)
    without_matchers = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_matchers)
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", without_groupings))
    return {name for name in names if name.startswith("fedgate_") or name in PROMETHEUS_OWN}


def _exported(metrics_text: str) -> set[str]:
    """Every series name the exposition offers (a family with no sample yet counts: a
    labelled metric appears with its first label value, e.g. the first dead job)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, small_phantom: Phantom
) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("monitoring")
    inference = InferenceProcess(workdir / "inference", models_dir).start()
    gateway = GatewayProcess(workdir / "gateway").start()
    try:
        DICOMwebClient(gateway.dicomweb_url).store_instances(list(small_phantom.instances()))
        yield {
            "gateway": gateway,
            "gateway_metrics": httpx.get(f"{gateway.url}/metrics", timeout=10).text,
            "inference_metrics": httpx.get(f"{inference.url}/metrics", timeout=10).text,
        }
    finally:
        gateway.stop()
        inference.stop()


def test_every_metric_the_dashboard_and_alerts_use_is_exported(live: dict[str, Any]) -> None:
    exported = (
        _exported(live["gateway_metrics"]) | _exported(live["inference_metrics"]) | PROMETHEUS_OWN
    )
    used = {where: _metric_names(expression) for where, expression in _expressions().items()}
    assert all(used.values()), [where for where, names in used.items() if not names]
    unknown = {where: sorted(names - exported) for where, names in used.items() if names - exported}
    assert not unknown, f"metrics no live service exports: {unknown}"
    everything = set().union(*used.values())
    # What the brief asks the dashboard to show is there.
    for needed in (
        "fedgate_jobs",
        "fedgate_job_wait_seconds_bucket",
        "fedgate_stow_failures_total",
        "fedgate_upstream_errors_total",
        "fedgate_inference_analyses_total",
        "fedgate_http_request_duration_seconds_bucket",
        "fedgate_data_dir_free_bytes",
        "fedgate_store_bytes",
    ):
        assert needed in everything, needed


def _value(metrics_text: str, name: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in the scrape")


def test_disk_gauges_report_data_dir_and_the_store(live: dict[str, Any]) -> None:
    gateway: GatewayProcess = live["gateway"]
    text = live["gateway_metrics"]
    usage = shutil.disk_usage(gateway.data_dir)
    free = _value(text, "fedgate_data_dir_free_bytes")
    used = _value(text, "fedgate_data_dir_used_bytes")
    # Other engineers' processes write to this disk too: within 1 % of the filesystem.
    assert abs(free - usage.free) < usage.total / 100
    assert abs(used - usage.used) < usage.total / 100
    held = sum(
        path.stat().st_size
        for path in (gateway.data_dir / "store" / "instances").rglob("*")
        if path.is_file()
    )
    assert held > 0
    assert _value(text, "fedgate_store_bytes") == held


def test_the_index_copy_reports_ready(live: dict[str, Any]) -> None:
    # The site's findings index is small: its columnar copy is built within the scrape's wait.
    assert _value(live["gateway_metrics"], "fedgate_index_copy_ready") == 1.0

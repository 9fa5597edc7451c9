"""The hub as a real process (``fedgate hub``) over three real sites: sums, merges, statuses."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.federated.settings import FederatedSettings
from gateway.index import FindingsIndex, IndexSettings
from tests.federated.conftest import EXACT_TOKEN, QUERY_TOKEN, sha256, site_auth
from tests.federated.servers import HangingServer, ThreadedServer, site_app
from tests.federated.synthetic import (
    DIAMETER,
    NODULE,
    SyntheticFinding,
    SyntheticPatient,
    SyntheticStudy,
    write_patients,
)
from tests.support.ports import free_port, wait_for_http

REPO_ROOT = Path(__file__).resolve().parents[2]
HUB_TOKEN = "hub-analyst-token"


def site_patients(prefix: str, women: int, men: int, nodules: int) -> list[SyntheticPatient]:
    """``women`` + ``men`` CT patients; the first ``nodules`` women have a 12 mm nodule."""
    patients = []
    for i in range(women):
        findings = [SyntheticFinding(NODULE, 12.0)] if i < nodules else []
        patients.append(
            SyntheticPatient(
                f"{prefix}F{i}", "F", [SyntheticStudy(age=40 + i % 40, findings=findings)]
            )
        )
    for i in range(men):
        patients.append(SyntheticPatient(f"{prefix}M{i}", "M", [SyntheticStudy(age=40 + i % 40)]))
    return patients


@contextmanager
def hub_process(
    workdir: Path,
    sites: list[dict[str, Any]],
    port: int | None = None,
    tls: dict[str, Any] | None = None,
    verify: ssl.SSLContext | None = None,
    **extra: Any,
) -> Iterator[str]:
    """``fedgate hub`` over ``sites``, on ``port`` (default: a free one); ``extra`` settings.
    With ``tls`` (``listen.tls``) it serves HTTPS, checked with ``verify``."""
    port = port or free_port()
    scheme = "https" if tls else "http"
    config = {
        "listen": {"host": "127.0.0.1", "port": port, **({"tls": tls} if tls else {})},
        "sites": sites,
        "auth": {
            "clients": [{"name": "analyst", "token_sha256": sha256(HUB_TOKEN), "roles": ["query"]}]
        },
        **extra,
    }
    path = workdir / f"hub-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(workdir / f"hub-{port}.log", "wb")  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(
        [sys.executable, "-m", "fedgate", "hub", "--config", str(path)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_http(
            f"{scheme}://127.0.0.1:{port}/healthz",
            timeout=30,
            process=process,
            verify=verify or True,
        )
        yield f"{scheme}://127.0.0.1:{port}/federated/v1"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


class Sites:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.indexes: list[FindingsIndex] = []
        self.servers: list[Any] = []

    def site(
        self,
        name: str,
        patients: list[SyntheticPatient],
        token: str = EXACT_TOKEN,
        **settings: Any,
    ) -> dict[str, Any]:
        """A site answering the hub with ``token``'s role: exact (the research office's
        token) unless a ``query`` token is given."""
        index = FindingsIndex.open(IndexSettings(), self.tmp_path / name)
        write_patients(index, patients)
        federated = FederatedSettings.model_validate(settings)
        server = ThreadedServer(site_app(index, federated, site_auth())).start()
        self.indexes.append(index)
        self.servers.append(server)
        return {"name": name, "url": f"{server.url}/federated/v1", "token": token}

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        for index in self.indexes:
            index.close()


def _ask(
    hub: str, params: dict[str, Any] | None = None, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {HUB_TOKEN}"}
    if body is None:
        response = httpx.get(f"{hub}/count", params=params, headers=headers, timeout=60)
    else:
        response = httpx.post(f"{hub}/aggregate", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_hub_sums_counts_and_merges_histograms(tmp_path: Path) -> None:
    sites = Sites(tmp_path)
    try:
        truth = {"a": (30, 20, 15), "b": (25, 40, 12), "c": (25, 11, 3)}
        configs = [sites.site(name, site_patients(name, *t)) for name, t in truth.items()]
        audit_path = tmp_path / "hub-audit.jsonl"
        with hub_process(tmp_path, configs, audit_log=str(audit_path)) as hub:
            women = _ask(hub, {"PatientSex": "F"})
            assert women["count"] == 30 + 25 + 25
            assert [s["status"] for s in women["sites"]] == ["ok", "ok", "ok"]
            assert women["complete"] is True
            # Site c has 3 nodules: suppressed there; the combined answer is an interval.
            nodules = _ask(hub, {"finding": NODULE, "measurement": f"{DIAMETER}:10-:mm"})
            statuses = {s["name"]: s["status"] for s in nodules["sites"]}
            assert statuses == {"a": "ok", "b": "ok", "c": "suppressed"}
            assert nodules["count"] is None
            assert (nodules["lower"], nodules["upper"]) == (15 + 12, 15 + 12 + 9)
            # Histogram of sex over all sites: released cells are sums of the sites' truth.
            histogram = _ask(
                hub,
                body={
                    "aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "sex"}}
                },
            )
            assert "cells" in histogram, histogram
            cells = {c["value"]: c for c in histogram["cells"]}
            assert histogram["total"]["count"] == sum(w + m for w, m, _ in truth.values())
            assert cells["O"]["count"] is None and cells["O"]["lower"] == 0
            for value, column in (("F", 0), ("M", 1)):
                cell = cells[value]
                exact = sum(t[column] for t in truth.values())
                if cell["count"] is not None:
                    assert cell["count"] == exact
                else:  # suppressed somewhere: bounds that hold the truth, never a guess
                    assert cell["lower"] <= exact
                    assert cell["upper"] is None or exact <= cell["upper"]
            # Pooled mean age from per-site n, mean, sd.
            summary = _ask(
                hub,
                body={
                    "aggregate": {"kind": "summary", "of": "age", "lower": 0, "upper": 120},
                    "cohort": {"attributes": {"PatientSex": "M"}},
                },
            )
            ages = [40 + i % 40 for _, m, _ in truth.values() for i in range(m)]
            assert summary["n"] == len(ages)
            assert abs(summary["mean"] - sum(ages) / len(ages)) < 1e-9
        # The hub's own audit log: every relayed question, its client, the answer released.
        entries = [json.loads(line) for line in audit_path.read_text().splitlines()]
        assert len(entries) == 4
        assert {entry["client"] for entry in entries} == {"analyst"}
        assert entries[0]["answer"]["count"] == women["count"]
        assert entries[1]["answer"]["sites"][2]["status"] == "suppressed"
    finally:
        sites.close()


def test_hub_reports_a_stopped_and_a_hanging_site(tmp_path: Path) -> None:
    sites = Sites(tmp_path)
    hanging = HangingServer().start()
    try:
        configs = [sites.site("up", site_patients("u", 20, 20, 0))]
        configs.append(
            {
                "name": "stopped",
                "url": f"http://127.0.0.1:{free_port()}/federated/v1",
                "token": QUERY_TOKEN,
            }
        )
        configs.append(
            {
                "name": "hung",
                "url": f"{hanging.url}/federated/v1",
                "token": QUERY_TOKEN,
                "timeout_seconds": 1.5,
            }
        )
        with hub_process(tmp_path, configs, timeout_seconds=20) as hub:
            started = time.monotonic()
            answer = _ask(hub, {"PatientSex": "F"})
            elapsed = time.monotonic() - started
            statuses = {s["name"]: s["status"] for s in answer["sites"]}
            assert statuses == {"up": "ok", "stopped": "error", "hung": "timeout"}
            assert answer["count"] == 20 and answer["complete"] is False
            assert elapsed < 1.5 + 1.0, "a hung site must cost no more than its timeout"
    finally:
        hanging.stop()
        sites.close()


def test_hub_relays_refusals_and_rejects_bad_questions(tmp_path: Path) -> None:
    """A site's refusal (here: its budget, the only data-independent reason a valid question
    has) is relayed with its reason; a bad question is a 400 before any site is asked."""
    sites = Sites(tmp_path)
    try:
        configs = [
            sites.site(
                "a",
                site_patients("a", 31, 0, 0),
                token=QUERY_TOKEN,
                dp={"epsilon_per_query": 1.0, "epsilon_per_person": 1.0},
            )
        ]
        with hub_process(tmp_path, configs) as hub:
            first = _ask(hub, {"PatientSex": "F"})
            assert first["sites"][0]["status"] == "ok" and first["count"] is not None
            second = _ask(hub, {"PatientSex": "F", "PatientAge": "40-69"})
            assert second["sites"][0]["status"] == "refused"
            assert "budget" in second["sites"][0]["error"]
            headers = {"Authorization": f"Bearer {HUB_TOKEN}"}
            bad = httpx.get(f"{hub}/count", params={"PatientID": "aF1"}, headers=headers)
            assert bad.status_code == 400 and bad.json()["field"] == "PatientID"
            assert httpx.get(f"{hub}/count").status_code == 401
    finally:
        sites.close()


def test_noisy_answers_of_three_sites_combine_every_site(tmp_path: Path) -> None:
    """With noise (the query role), nothing is suppressed: a count and a sex histogram at a
    hub of three sites include every site's contribution, with an interval."""
    sites = Sites(tmp_path)
    try:
        truth = {"a": (30, 20, 0), "b": (8, 3, 0), "c": (25, 11, 0)}
        configs = [
            sites.site(name, site_patients(name, *t), token=QUERY_TOKEN)
            for name, t in truth.items()
        ]
        with hub_process(tmp_path, configs) as hub:
            women = _ask(hub, {"PatientSex": "F"})
            assert [s["status"] for s in women["sites"]] == ["ok", "ok", "ok"]
            assert women["count"] == sum(s["answer"]["count"] for s in women["sites"])
            low, high = women["interval"]
            assert low <= women["count"] <= high
            assert abs(women["count"] - 63) <= 3 * (high - low)
            histogram = _ask(
                hub,
                body={
                    "aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "sex"}}
                },
            )
            assert [s["status"] for s in histogram["sites"]] == ["ok", "ok", "ok"]
            cells = {c["value"]: c for c in histogram["cells"]}
            for value, column in (("F", 0), ("M", 1)):
                per_site = [
                    next(c for c in s["answer"]["cells"] if c["value"] == value)["count"]
                    for s in histogram["sites"]
                ]
                assert cells[value]["count"] == sum(per_site)
                exact = sum(t[column] for t in truth.values())
                assert abs(cells[value]["count"] - exact) <= 40
    finally:
        sites.close()


def test_hubs_stack(tmp_path: Path) -> None:
    sites = Sites(tmp_path)
    try:
        lower = [
            sites.site(n, site_patients(n, w, 10, k)) for n, w, k in (("a", 30, 12), ("b", 15, 4))
        ]
        with hub_process(tmp_path, lower) as inner:
            outer_sites = [
                {"name": "region", "url": inner, "token": HUB_TOKEN},
                sites.site("c", site_patients("c", 25, 10, 10)),
            ]
            with hub_process(tmp_path, outer_sites) as outer:
                women = _ask(outer, {"PatientSex": "F"})
                assert women["count"] == 70
                nodules = _ask(outer, {"finding": NODULE})
                # a: 12, b: <10 (4), c: 10 -> [22, 31]
                assert (nodules["lower"], nodules["upper"]) == (22, 31)
    finally:
        sites.close()


def test_a_tracker_through_a_hub_of_two_sites_learns_only_noise(tmp_path: Path) -> None:
    """total - women - men through a hub: with noise (the query role) each site's part is a
    noisy draw charged there, and the combined difference's interval is wider than the one
    patient it would show; exactly (a research office's hub), the suppression of small cells
    holds through the hub: the lone patient of unknown sex stays inside an interval."""
    sites = Sites(tmp_path)
    try:
        odd = [SyntheticPatient("ODD", "O", [SyntheticStudy(age=50)])]
        noisy = [sites.site(n, site_patients(n, 20, 20, 0) + odd, token=QUERY_TOKEN) for n in "ab"]
        with hub_process(tmp_path, noisy) as hub:
            answers = [
                _ask(hub, params) for params in ({}, {"PatientSex": "F"}, {"PatientSex": "M"})
            ]
            for answer in answers:
                assert [s["status"] for s in answer["sites"]] == ["ok", "ok"]
                assert all(s["answer"]["privacy"]["epsilon"] > 0 for s in answer["sites"])
            half_widths = [(a["interval"][1] - a["interval"][0]) / 2 for a in answers]
            assert sum(h * h for h in half_widths) ** 0.5 > 4  # two sites, three answers
        exact = [sites.site(f"x{n}", site_patients(f"x{n}", 20, 20, 0) + odd) for n in "ab"]
        with hub_process(tmp_path, exact) as hub:
            others = _ask(hub, {"PatientSex": "O"})
            assert others["count"] is None and others["lower"] == 0 and others["upper"] == 18
    finally:
        sites.close()


def test_the_hub_audit_says_when_no_site_answered(tmp_path: Path) -> None:
    audit_path = tmp_path / "hub-audit.jsonl"
    stopped = {
        "name": "stopped",
        "url": f"http://127.0.0.1:{free_port()}/federated/v1",
        "token": QUERY_TOKEN,
    }
    with hub_process(tmp_path, [stopped], audit_log=str(audit_path)) as hub:
        answer = _ask(hub, {"PatientSex": "F"})
        assert answer["complete"] is False and answer["sites"][0]["status"] == "error"
    (entry,) = [json.loads(line) for line in audit_path.read_text().splitlines()]
    assert entry["status"] == "no site answered"

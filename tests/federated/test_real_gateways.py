"""Three real site gateways, each with its own Orthanc, and a real hub process (issue 6).

The SRs here are written directly with sr_writer and STOWed into the sites; the pipeline's own
SRs (issue 5) reach the index through the same intake path.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import PhantomSpec, generate_phantom
from sr_writer import build_sr
from tests.federated.conftest import ADMIN_TOKEN, QUERY_TOKEN, sha256
from tests.federated.test_hub import HUB_TOKEN, hub_process
from tests.sr_writer.builders import lesion_findings
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]

NODULE = "SCT:27925004"
#: site -> (patients, of whom with a nodule SR).
SITES = {"north": (24, 12), "south": (14, 3), "east": (22, 11)}


def _auth() -> dict[str, Any]:
    return {
        "clients": [
            # The hub relays for a research office here (exact answers, compared with the
            # truth); the noisy answers the query role gets are tested in test_hub.py.
            {"name": "hub", "token_sha256": sha256(QUERY_TOKEN), "roles": ["exact"]},
            {"name": "operator", "token_sha256": sha256(ADMIN_TOKEN), "roles": ["admin"]},
        ]
    }


def _store(
    gateway: GatewayProcess, first_seed: int, patients: int, with_nodule: int
) -> dict[str, int]:
    client = DICOMwebClient(
        gateway.dicomweb_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    truth = {"F": 0, "M": 0}
    for offset in range(patients):
        lesions = (12.0,) if offset < with_nodule else ()
        phantom = generate_phantom(
            PhantomSpec(
                seed=first_seed + offset,
                rows=64,
                columns=64,
                slices=4,
                pixel_spacing_mm=4.0,
                slice_thickness_mm=5.0,
                lesion_diameters_mm=lesions,
            )
        )
        truth[phantom.truth.patient_sex] += 1
        images = list(phantom.instances())
        if lesions:
            headers = list(phantom.instances())
            for header in headers:
                del header.PixelData
            images.append(build_sr(lesion_findings(phantom, headers), headers))
        client.store_instances(images)
    return truth


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("federation")
    with ExitStack() as stack:
        started: dict[str, Any] = {}
        for number, (name, (patients, nodules)) in enumerate(SITES.items()):
            orthanc = OrthancServer(root / f"orthanc-{name}").start()
            stack.callback(orthanc.stop)
            gateway = GatewayProcess(
                root / f"gateway-{name}",
                {
                    "pacs": {"url": orthanc.dicomweb_url},
                    "ingest": {"forward_to_pacs": True},
                    "auth": _auth(),
                },
            ).start()
            stack.callback(gateway.stop)
            # An invalid question: answered 400 when mounted, and not remembered by the guard.
            probe = httpx.get(
                f"{gateway.url}/federated/v1/count",
                params={"level": "probe"},
                headers={"Authorization": f"Bearer {QUERY_TOKEN}"},
            )
            if probe.status_code == 404:
                pytest.skip(
                    "this gateway does not mount /federated/v1 yet (see the "
                    "integration note of the federated branch)"
                )
            truth = _store(gateway, 1000 * (number + 1), patients, nodules)
            started[name] = {
                "gateway": gateway,
                "orthanc": orthanc,
                "truth": truth,
                "nodules": nodules,
                "patients": patients,
            }
        yield {"root": root, **started}


def _site_configs(sites: dict[str, Any], timeout: float = 10.0) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "url": f"{sites[name]['gateway'].url}/federated/v1",
            "token": QUERY_TOKEN,
            "timeout_seconds": timeout,
        }
        for name in SITES
    ]


def _ask(
    hub: str, params: dict[str, Any] | None = None, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {HUB_TOKEN}"}
    if body is None:
        response = httpx.get(f"{hub}/count", params=params, headers=headers, timeout=60)
    else:
        response = httpx.post(f"{hub}/aggregate", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_hub_over_three_site_gateways_equals_the_sites_truth(sites: dict[str, Any]) -> None:
    with hub_process(sites["root"], _site_configs(sites)) as hub:
        everyone = _ask(hub, {"ModalitiesInStudy": "CT"})
        assert everyone["count"] == sum(p for p, _ in SITES.values())
        # Nodules: south has 3 (suppressed there); the combined answer is an interval.
        nodules = _ask(hub, {"finding": NODULE, "measurement": "SCT:81827009:10-:mm"})
        statuses = {s["name"]: s["status"] for s in nodules["sites"]}
        assert statuses == {"north": "ok", "south": "suppressed", "east": "ok"}
        assert (nodules["lower"], nodules["upper"]) == (12 + 11, 12 + 11 + 9)
        by_sex = _ask(
            hub,
            body={
                "cohort": {"attributes": {"ModalitiesInStudy": "CT"}},
                "aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "sex"}},
            },
        )
        cells = {c["value"]: c for c in by_sex["cells"]}
        for sex in ("F", "M"):
            exact = sum(sites[name]["truth"][sex] for name in SITES)
            if cells[sex]["count"] is not None:
                assert cells[sex]["count"] == exact
            else:
                assert cells[sex]["lower"] <= exact


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_request_id_follows_a_question_from_the_hub_to_every_site(
    sites: dict[str, Any],
) -> None:
    # An operator tracing a question finds it under one id in the hub's log and every site's.
    port = free_port()
    with hub_process(sites["root"], _site_configs(sites), port=port) as hub:
        response = httpx.get(
            f"{hub}/count",
            params={"ModalitiesInStudy": "CT"},
            headers={"Authorization": f"Bearer {HUB_TOKEN}", "X-Request-ID": "question-77"},
            timeout=60,
        )
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == "question-77"
        unnamed = httpx.get(f"{hub}/budget", headers={"Authorization": f"Bearer {HUB_TOKEN}"})
        assert len(unnamed.headers["X-Request-ID"]) == 32  # one made up for it
    hub_lines = _json_lines((sites["root"] / f"hub-{port}.log").read_text())
    assert {
        (line["path"], line["status"])
        for line in hub_lines
        if line.get("event") == "http.request" and line.get("request_id") == "question-77"
    } == {("/federated/v1/count", 200)}
    for name in SITES:
        gateway: GatewayProcess = sites[name]["gateway"]
        relayed = [
            line
            for line in _json_lines(gateway.log())
            if line.get("event") == "http.request" and line.get("request_id") == "question-77"
        ]
        assert [(line["path"], line["status"]) for line in relayed] == [
            ("/federated/v1/count", 200)
        ], name


def test_statuses_when_a_site_is_stopped_or_hangs(sites: dict[str, Any]) -> None:
    east: GatewayProcess = sites["east"]["gateway"]
    south: GatewayProcess = sites["south"]["gateway"]
    assert south.process is not None
    with hub_process(sites["root"], _site_configs(sites, timeout=2.0)) as hub:
        east.stop()
        os.killpg(south.process.pid, signal.SIGSTOP)  # alive, listening, answering nothing
        try:
            started = time.monotonic()
            answer = _ask(hub, {"ModalitiesInStudy": "CT"})
            elapsed = time.monotonic() - started
        finally:
            os.killpg(south.process.pid, signal.SIGCONT)
        statuses = {s["name"]: s["status"] for s in answer["sites"]}
        assert statuses == {"north": "ok", "south": "timeout", "east": "error"}
        assert answer["count"] == SITES["north"][0] and answer["complete"] is False
        assert elapsed < 2.0 + 1.5

"""A federated analysis end to end: a hub sends one model to two sites, each with its own
gateway and inference service; one site's admin approves it, the other trusts the hub's key;
the hub's status shows each site's progress and what the model found, equal to the phantoms'
truth. Real processes: two gateways, two inference services, the ``fedgate`` CLI as the hub.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519
from dicomweb_client.api import DICOMwebClient

from gateway.analysis.bundle import ModelBundle, pack_analysis, sign_analysis
from gateway.hub_assertion import write_key_pair
from tests.analysis.conftest import INSTALL_TOKEN
from tests.pipeline.conftest import chest_phantom, pipeline_settings, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.process import run_fedgate

pytestmark = pytest.mark.slow

HUB = "consortium"
HUB_TOKEN = "hub-credential-at-the-sites"
ADMIN_TOKEN = "site-admin-token"
INFERENCE_TOKEN = "the-inference-service-at-the-site"
MODEL = "nodule-detector"
COHORT = {"attributes": {"ModalitiesInStudy": "CT", "BodyPartExamined": "CHEST"}}
#: site -> (studies with a 20 mm nodule, studies without); "south" trusts the hub's key.
SITES = {"north": (3, 3), "south": (3, 2)}
AUTO_APPROVES = {"north": False, "south": True}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _site_settings(name: str, inference_url: str, hub_key: Path) -> dict[str, Any]:
    settings = pipeline_settings(inference_url)
    settings["routing"] = []  # no clinical rule: only the analysis reads these CTs
    settings["pipeline"] = {
        **settings["pipeline"],
        "research": {
            "inference_url": inference_url,
            "install_token": INSTALL_TOKEN,
            "poll_seconds": 0.5,
            "max_running": 2,
        },
        # The inference service reads the studies and writes its results with this token.
        "callback_token": INFERENCE_TOKEN,
    }
    settings["auth"] = {
        "clients": [
            {"name": "hub", "token_sha256": _sha256(HUB_TOKEN), "roles": ["hub", "query", "exact"]},
            {"name": "admin", "token_sha256": _sha256(ADMIN_TOKEN), "roles": ["admin"]},
            {"name": "inference", "token_sha256": _sha256(INFERENCE_TOKEN), "roles": ["admin"]},
        ],
        "hubs": [
            {
                "name": HUB,
                "public_key_file": str(hub_key),
                "audience": name,
                "auto_approve_analyses": AUTO_APPROVES[name],
            }
        ],
    }
    # The truth is compared exactly: cells of 2 or more patients are released to `exact`.
    settings["federated"] = {"min_cell_size": 2}
    return settings


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("analysis-federation")
    private_key, public_key = write_key_pair(root / "keys")
    with ExitStack() as stack:
        sites: dict[str, GatewayProcess] = {}
        for number, (name, (with_nodule, without)) in enumerate(SITES.items()):
            repository = root / f"models-{name}"
            shutil.copytree(models_dir, repository)
            inference = InferenceProcess(
                root / f"inference-{name}",
                repository,
                {"admin_token_sha256": _sha256(INSTALL_TOKEN)},
            ).start()
            stack.callback(inference.stop)
            gateway = GatewayProcess(
                root / f"gateway-{name}", _site_settings(name, inference.url, public_key)
            ).start()
            stack.callback(gateway.stop)
            client = DICOMwebClient(
                gateway.dicomweb_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            lesions = [(20.0,)] * with_nodule + [()] * without
            for offset, lesion in enumerate(lesions):
                client.store_instances(
                    list(chest_phantom(7000 + 100 * number + offset, lesion).instances())
                )
            sites[name] = gateway
        hub_config = root / "hub.yaml"
        hub_config.write_text(
            yaml.safe_dump(
                {
                    "name": HUB,
                    "signing_key_file": str(private_key),
                    "sites": [
                        {"name": name, "url": f"{g.url}/federated/v1", "token": HUB_TOKEN}
                        for name, g in sites.items()
                    ],
                    "timeout_seconds": 30,
                }
            )
        )
        bundle = root / "bundle"
        shutil.copytree(models_dir / MODEL, bundle)
        cohort = root / "cohort.json"
        cohort.write_text(json.dumps(COHORT))
        yield {"root": root, "sites": sites, "hub": hub_config, "bundle": bundle, "cohort": cohort}


def _status(federation: dict[str, Any], analysis_id: str) -> dict[str, Any]:
    result = run_fedgate(
        "analysis", "status", "--hub-config", str(federation["hub"]), analysis_id,
        "--exact", "--person", "research-office", "--json",
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    status: dict[str, Any] = json.loads(result.stdout)
    return status


def _states(status: dict[str, Any]) -> dict[str, str]:
    return {site["name"]: (site.get("answer") or {}).get("state") for site in status["sites"]}


def test_one_model_over_two_sites_cohorts_gives_the_truth(federation: dict[str, Any]) -> None:
    submitted = run_fedgate(
        "analysis", "submit", "--hub-config", str(federation["hub"]),
        "--model", str(federation["bundle"]), "--cohort", str(federation["cohort"]),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    analysis_id = submitted.stdout.strip()
    assert "north                pending" in submitted.stderr
    assert "south                running" in submitted.stderr

    # The auto-approving site runs it; the other waits for its admin, running nothing.
    wait_until(lambda: _states(_status(federation, analysis_id))["south"] == "done", 240, "south")
    assert _states(_status(federation, analysis_id))["north"] == "pending"
    north = federation["sites"]["north"]
    approved = run_fedgate(
        "analysis", "approve", "--config", str(north.workdir / "gateway.yaml"), analysis_id,
        "--by", "north-admin",
    )  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    status = wait_until(
        lambda: (s := _status(federation, analysis_id)) and _states(s)["north"] == "done" and s,
        240,
        "north to finish",
    )

    progress = {site["name"]: site["answer"]["progress"] for site in status["sites"]}
    for name, (with_nodule, without) in SITES.items():
        assert progress[name]["selected"] == progress[name]["done"] == with_nodule + without, (
            progress
        )
        assert progress[name]["failed"] == 0
    installed = {site["answer"]["model"]["installed_as"] for site in status["sites"]}
    assert len(installed) == 1 and installed != {MODEL}, "installed under a name of its own"

    results = {result["title"]: result for result in status["results"]}
    cohort = results["patients in the cohort"]
    assert cohort["count"] == sum(a + b for a, b in SITES.values())
    found = results["patients with a finding of the model"]
    assert found["count"] == sum(a for a, _ in SITES.values())
    assert {s["name"]: s["answer"]["count"] for s in found["sites"]} == {
        name: a for name, (a, _) in SITES.items()
    }


def _bundle_with_version(federation: dict[str, Any], version: str) -> Path:
    changed = federation["root"] / f"bundle-{version}"
    shutil.copytree(federation["bundle"], changed)
    manifest = yaml.safe_load((changed / "model.yaml").read_text())
    manifest["version"] = version
    (changed / "model.yaml").write_text(yaml.safe_dump(manifest))
    return changed


def test_a_changed_bundle_is_asked_about_again_and_the_same_one_is_not(
    federation: dict[str, Any],
) -> None:
    def submit(bundle: Path) -> str:
        result = run_fedgate(
            "analysis", "submit", "--hub-config", str(federation["hub"]),
            "--model", str(bundle), "--cohort", str(federation["cohort"]),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stderr

    changed = submit(_bundle_with_version(federation, "1.0.1"))
    assert "north                pending" in changed  # another model: north's admin decides
    assert "south                running" in changed  # south trusts what the hub signs
    # The model and cohort north approved before (first test) run without asking again.
    assert "north                running" in submit(federation["bundle"]) or pytest.fail(
        "an approved model and cohort were asked about again"
    )


def test_an_analysis_the_trusted_hub_did_not_sign_is_refused(federation: dict[str, Any]) -> None:
    south = federation["sites"]["south"]
    bundle = ModelBundle.read(federation["bundle"])
    analysis_id = secrets.token_hex(16)
    forged = sign_analysis(
        ed25519.Ed25519PrivateKey.generate(), HUB, "south", analysis_id, bundle.sha256, COHORT
    )
    body = pack_analysis(
        {"analysis_id": analysis_id, "cohort": COHORT, "signature": forged}, bundle
    )
    # The site's admin may hand an analysis in too; it still needs its trusted hub's signature.
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/x-tar"}
    answer = httpx.post(f"{south.url}/federated/v1/analyses", content=body, headers=headers)
    assert answer.status_code == 403
    assert "does not verify" in answer.json()["error"]
    unknown = httpx.get(f"{south.url}/federated/v1/analyses/{analysis_id}", headers=headers)
    assert unknown.status_code == 404
    # Not a tar, not the hub's credential: clear refusals, nothing kept.
    garbage = httpx.post(f"{south.url}/federated/v1/analyses", content=b"x" * 100, headers=headers)
    assert garbage.status_code == 400 and "not an analysis tar" in garbage.json()["error"]
    listed = httpx.get(f"{south.url}/federated/v1/analyses", headers=headers).json()["analyses"]
    assert analysis_id not in {analysis["analysis_id"] for analysis in listed}
    # A hub's credential speaks for a person (its assertion), as for questions.
    bare_hub = {**headers, "Authorization": f"Bearer {HUB_TOKEN}"}
    assert (
        httpx.post(f"{south.url}/federated/v1/analyses", content=body, headers=bare_hub).status_code
        == 401
    )
    nobody = {**headers, "Authorization": "Bearer not-a-token"}
    assert httpx.get(f"{south.url}/federated/v1/analyses", headers=nobody).status_code == 401


def test_a_site_down_is_reported_the_others_finish_and_it_catches_up_on_return(
    federation: dict[str, Any],
) -> None:
    """At the hub: a site that is down is named in the status while the others complete; once
    back, it runs what its admin approved meanwhile. (That a site stopped mid-analysis resumes
    without analysing a finished series again is tests/analysis/test_site.py's.)"""
    north = federation["sites"]["north"]
    config = str(north.workdir / "gateway.yaml")
    result = run_fedgate(
        "analysis", "submit", "--hub-config", str(federation["hub"]),
        "--model", str(_bundle_with_version(federation, "1.0.3")),
        "--cohort", str(federation["cohort"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    analysis_id = result.stdout.strip()
    north.kill()
    # The admin's approval is recorded while the gateway is down (the command needs only the
    # site's databases).
    assert run_fedgate("analysis", "approve", "--config", config, analysis_id).returncode == 0

    status = wait_until(
        lambda: (s := _status(federation, analysis_id)) and _states(s)["south"] == "done" and s,
        240,
        "south to finish while north is down",
    )
    (down,) = [site for site in status["sites"] if site["name"] == "north"]
    assert down["status"] == "error" and down["error"]

    north.start()
    status = wait_until(
        lambda: (s := _status(federation, analysis_id)) and _states(s)["north"] == "done" and s,
        240,
        "north to catch up",
    )
    (back,) = [site for site in status["sites"] if site["name"] == "north"]
    progress = back["answer"]["progress"]
    assert progress["done"] == progress["selected"] == sum(SITES["north"])

"""``fedgate index sync`` against a real Orthanc, ``fedgate index show``, ``fedgate audit``."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from dicomweb_client.api import DICOMwebClient

from gateway.federated.audit import AUDIT_FILE_NAME, AuditLog
from gateway.index import FindingsIndex, IndexSettings
from sr_writer import build_sr
from tests.federated.conftest import EXACT_TOKEN, SiteFactory
from tests.federated.synthetic import header_only, small_phantom
from tests.sr_writer.builders import lesion_findings
from tests.support.gateway import REPO_ROOT
from tests.support.orthanc import OrthancServer
from tests.support.process import run_fedgate


def _store_study(client: DICOMwebClient, seed: int) -> None:
    phantom = small_phantom(seed)
    images = list(phantom.instances())
    sr = build_sr(lesion_findings(phantom, header_only(phantom)), header_only(phantom))
    client.store_instances([*images, sr])


@pytest.mark.orthanc
def test_index_sync_rebuilds_from_the_pacs_and_resumes(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    client = DICOMwebClient(orthanc.dicomweb_url)
    for seed in (21, 22):
        _store_study(client, seed)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump({"data_dir": str(tmp_path / "data"), "pacs": {"url": orthanc.dicomweb_url}})
    )
    first = run_fedgate("index", "sync", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert "2 found, 2 indexed, 0 already indexed" in first.stdout
    assert "[##############################] 2/2 studies" in first.stderr  # the progress bar
    index = FindingsIndex.open(IndexSettings(), tmp_path / "data")
    assert index.counts() == {
        "studies": 2,
        "series": 4,
        "reports": 2,
        "findings": 2,
        "measurements": 4,
    }
    index.close()
    # A third study arrives; the next sync indexes only it.
    _store_study(client, 23)
    second = run_fedgate("index", "sync", "--config", str(config), "--quiet")
    assert "3 found, 1 indexed, 2 already indexed" in second.stdout, second.stdout
    shown = run_fedgate("index", "show", "--config", str(config))
    assert "findings: 3" in shown.stdout


def test_index_sync_without_a_pacs_says_so(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    result = run_fedgate("index", "sync", "--config", str(config))
    assert result.returncode == 2
    assert "no PACS to crawl" in result.stderr


def test_audit_shows_the_log(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.record(
        client="alice-laptop",
        person="alice",
        mode="dp",
        status="answered",
        epsilon_spent=0.75,
        request={"aggregate": {"kind": "count"}},
        answer={"kind": "count", "count": 31, "interval": [27, 35]},
    )
    log.record(
        client="hub-eu/bob",
        person="bob",
        mode="dp",
        status="refused",
        epsilon_spent=0.0,
        request={"aggregate": {"kind": "count"}},
        reason="privacy budget spent: 'bob' has 0 of epsilon 15 left",
    )
    shown = run_fedgate("audit", "--log", str(tmp_path / "audit.jsonl"))
    lines = shown.stdout.splitlines()
    assert len(lines) == 2
    assert "alice-laptop" in lines[0] and "alice " in lines[0] and " dp " in lines[0]
    assert "count=31 [27, 35]" in lines[0] and "eps=0.75" in lines[0]
    assert "refused" in lines[1] and "budget spent" in lines[1]
    only = run_fedgate("audit", "--log", str(tmp_path / "audit.jsonl"), "--person", "bob", "--json")
    assert [json.loads(line)["client"] for line in only.stdout.splitlines()] == ["hub-eu/bob"]
    by_credential = run_fedgate(
        "audit", "--log", str(tmp_path / "audit.jsonl"), "--client", "alice-laptop", "--json"
    )
    assert [json.loads(line)["person"] for line in by_credential.stdout.splitlines()] == ["alice"]


def test_audit_names_the_endpoint_of_each_question(make_site: SiteFactory, tmp_path: Path) -> None:
    site = make_site(name="audited")
    assert site.get({"PatientSex": "F"}).status_code == 200
    assert site.post({"cohort": {"attributes": {"PatientSex": "M"}}}).status_code == 200
    vocabulary = httpx.get(
        f"{site.url}/vocabulary", headers={"Authorization": f"Bearer {EXACT_TOKEN}"}
    ).json()
    shown = run_fedgate("audit", "--log", str(tmp_path / "audited" / AUDIT_FILE_NAME))
    lines = shown.stdout.splitlines()
    assert [line.split()[4] for line in lines] == ["/count", "/aggregate", "/vocabulary"]
    listed = sum(len(values) for values in vocabulary["vocabulary"].values())
    assert lines[2].split()[6] == "vocabulary" and lines[2].endswith(f"{listed} values listed")


def test_findings_piped_into_head_ends_without_a_traceback(tmp_path: Path) -> None:
    phantom = small_phantom(31, (12.0,))
    headers = header_only(phantom)
    path = tmp_path / "sr.dcm"
    build_sr(lesion_findings(phantom, headers), headers).save_as(path, enforce_file_format=True)
    result = subprocess.run(
        f"{shlex.quote(sys.executable)} -m fedgate findings --indent 2 "
        f"{' '.join([shlex.quote(str(path))] * 300)} | head -c 100",
        shell=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert len(result.stdout) == 100
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_hub_refuses_a_bad_config_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"sites": [{"name": "a", "url": "ftp://nope"}]}))
    result = run_fedgate("hub", "--config", str(config))
    assert result.returncode == 2
    assert "sites[a].url" in result.stderr  # the site by its name
    missing = run_fedgate("hub", "--config", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    config.write_text("sites: [unclosed")
    broken = run_fedgate("hub", "--config", str(config))
    assert broken.returncode == 2 and "not valid YAML" in broken.stderr

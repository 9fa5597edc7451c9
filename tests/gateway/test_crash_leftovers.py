"""kill -9 during ingest leaves no file that was never acknowledged (issue 13, item 7).

Four clients STOW continuously into a real gateway process, which is killed with SIGKILL
mid-load, then restarted, several times. A crash leaves published files whose catalog row
was never committed, and temporary files; at each start the gateway removes them, so the
store holds exactly what the catalog holds, and every acknowledged instance is still there.
``fedgate store check [--repair]`` reports and removes the same leftovers.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import generate_uid

from bench.store_scale import generate_catalog, study_uid
from gateway.store.catalog import Catalog
from gateway.store.check import StoreReport, check
from gateway.store.files import FileLayout
from tests.gateway.conftest import phantom
from tests.support.dicom import multipart_body, part10_bytes, stored_uids
from tests.support.gateway import GatewayProcess
from tests.support.process import run_fedgate
from tests.support.waiting import wait_until

CLIENTS = 4
KILLS = 6
#: Many parts per request, as a PACS forwarding a series sends: the intake commits every 64
#: parts, so a kill finds published files waiting for their commit.
PER_REQUEST = 150


def store_report(gateway: GatewayProcess) -> tuple[StoreReport, set[str]]:
    """The store's files against its catalog, and the SOP Instance UIDs catalogued."""
    root = gateway.data_dir / "store"
    catalog = Catalog.open(root / "catalog.sqlite")
    try:
        report = check(FileLayout(root), catalog)
        uids = {row[0] for row in catalog.query("SELECT sop_instance_uid FROM instances", [])}
    finally:
        catalog.close()
    return report, uids


def keep_storing(
    url: str, template: pydicom.Dataset, stop: threading.Event, acknowledged: set[str]
) -> None:
    """STOW requests of new instances until ``stop`` or until the gateway is gone."""
    while not stop.is_set():
        study, series = generate_uid(), generate_uid()
        parts = []
        for number in range(PER_REQUEST):
            template.StudyInstanceUID, template.SeriesInstanceUID = study, series
            template.SOPInstanceUID = generate_uid()
            template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
            template.InstanceNumber = number + 1
            parts.append(part10_bytes(template))
        body, content_type = multipart_body(parts)
        try:
            response = httpx.post(
                url + "/studies", content=body, headers={"Content-Type": content_type}, timeout=30
            )
        except httpx.HTTPError:
            return  # killed: whatever was not answered was not acknowledged
        if response.status_code in (200, 202):
            acknowledged.update(stored_uids(response.json()))


def test_kill_9_under_stow_load_then_restart_leaves_no_orphans(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gw")
    acknowledged: set[str] = set()
    orphans_left = temporaries_left = 0
    rng = random.Random(13)
    templates = list(phantom(seed=1700, slices=CLIENTS).instances())
    for _ in range(KILLS):
        gateway.start()
        report, catalogued = store_report(gateway)
        assert report.orphans == [] and report.temporaries == [], report
        assert report.missing == []
        assert acknowledged <= catalogued  # nothing acknowledged is lost
        stop = threading.Event()
        clients = [
            threading.Thread(
                target=keep_storing, args=(gateway.dicomweb_url, template, stop, acknowledged)
            )
            for template in templates
        ]
        before = len(acknowledged)
        for client in clients:
            client.start()
        # Killed at a random moment after a first answer of this round, however loaded the
        # machine: the other clients' requests are then mid-way.
        wait_until(
            lambda before=before: len(acknowledged) > before, 120, "a first acknowledged request"
        )
        time.sleep(rng.uniform(0.0, 1.0))
        gateway.kill()
        stop.set()
        for client in clients:
            client.join(timeout=30)
        report, _ = store_report(gateway)
        orphans_left += len(report.orphans)
        temporaries_left += len(report.temporaries)

    # The kills did leave files never acknowledged (else this test would prove nothing) ...
    assert orphans_left > 0 and temporaries_left > 0
    assert acknowledged
    # ... which `fedgate store check` reports, and --repair removes, with the gateway down.
    config = str(gateway.workdir / "gateway.yaml")
    before = store_report(gateway)[0]
    listed = run_fedgate("store", "check", "--config", config)
    if before.leftovers:
        assert listed.returncode == 1, listed.stdout + listed.stderr
        assert "never acknowledged" in listed.stdout or "temporary" in listed.stdout
    repaired = run_fedgate("store", "check", "--repair", "--config", config)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    report, catalogued = store_report(gateway)
    assert report.consistent
    assert acknowledged <= catalogued

    gateway.start()
    try:
        # While the gateway has the store, --repair refuses (it could remove a file being
        # committed); a plain check still reports.
        busy = run_fedgate("store", "check", "--repair", "--config", config)
        assert busy.returncode == 2 and "in use" in busy.stderr
        assert run_fedgate("store", "check", "--config", config).returncode == 0
        sample = sorted(acknowledged)[:: max(1, len(acknowledged) // 20)]
        for uid in sample:  # acknowledged instances are served
            found = httpx.get(
                gateway.dicomweb_url + "/instances", params={"SOPInstanceUID": uid}
            ).json()
            assert len(found) == 1, uid
    finally:
        gateway.stop()


def test_store_check_names_a_lost_file_and_a_leftover(tmp_path: Path) -> None:
    """A planted leftover and a deleted acknowledged file, as an operator would meet them."""
    gateway = GatewayProcess(tmp_path / "gw").start()
    first, second = phantom(seed=1710, slices=2).instances()
    body, content_type = multipart_body([part10_bytes(first), part10_bytes(second)])
    response = httpx.post(
        gateway.dicomweb_url + "/studies", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200
    gateway.stop()
    store = gateway.data_dir / "store" / "instances"
    series = store / first.StudyInstanceUID / first.SeriesInstanceUID
    shutil.copy(series / f"{first.SOPInstanceUID}.dcm", series / "1.2.3.4.dcm")  # no row
    (series / f"{second.SOPInstanceUID}.dcm").unlink()  # acknowledged, then lost
    config = str(gateway.workdir / "gateway.yaml")

    listed = run_fedgate("store", "check", "--config", config)
    assert listed.returncode == 1
    assert "1 file(s) never acknowledged" in listed.stdout and "1.2.3.4.dcm" in listed.stdout
    assert "whose file is missing" in listed.stdout and second.SOPInstanceUID in listed.stdout
    repaired = run_fedgate("store", "check", "--repair", "--config", config)
    assert repaired.returncode == 1  # the lost file cannot be repaired
    assert not (series / "1.2.3.4.dcm").exists()
    assert (series / f"{first.SOPInstanceUID}.dcm").exists()


def test_the_start_up_check_reads_the_studies_it_finds_and_the_full_check_every_study(
    tmp_path: Path,
) -> None:
    """Catalog rows of three studies (bench.store_scale's generator); files for one of them,
    less one, and a file nobody acknowledged. Both checks find the orphan and the missing file
    of the study on disk; only the full check (``fedgate store check``) names the studies with
    no folder at all, whose rows the start-up check never reads (issue 19: a catalog of ten
    million rows, files only for what is read)."""
    root = tmp_path / "store"
    generate_catalog(root / "catalog.sqlite", studies=3, progress=False)
    layout = FileLayout(root)
    catalog = Catalog.open(root / "catalog.sqlite")
    try:
        rows = catalog.query(
            "SELECT path, sop_instance_uid, study_instance_uid FROM instances ORDER BY path", []
        )
        on_disk = [row for row in rows if row["study_instance_uid"] == study_uid(0)]
        for row in on_disk[1:]:
            path = layout.absolute(row["path"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        orphan = layout.absolute(on_disk[1]["path"]).with_name("1.2.3.dcm")
        orphan.write_bytes(b"x")

        start_up = check(layout, catalog, whole_studies=False)
        assert start_up.orphans == [orphan]
        assert start_up.missing == [on_disk[0]["sop_instance_uid"]]

        full = check(layout, catalog)
        assert full.orphans == [orphan]
        others = [row for row in rows if row["study_instance_uid"] != study_uid(0)]
        assert len(others) == 20
        assert full.missing == sorted(
            [on_disk[0]["sop_instance_uid"]] + [row["sop_instance_uid"] for row in others]
        )
    finally:
        catalog.close()


def test_store_check_covers_the_research_store(tmp_path: Path) -> None:
    """The research store (an unvalidated model's results) is checked and repaired alike."""
    gateway = GatewayProcess(tmp_path / "gw").start()
    gateway.stop()
    instance = next(iter(phantom(seed=1711, slices=1).instances()))
    series = (
        gateway.data_dir
        / "research"
        / "instances"
        / instance.StudyInstanceUID
        / instance.SeriesInstanceUID
    )
    series.mkdir(parents=True)
    (series / "1.2.3.5.dcm").write_bytes(part10_bytes(instance))  # no catalog row
    config = str(gateway.workdir / "gateway.yaml")

    listed = run_fedgate("store", "check", "--config", config)
    assert listed.returncode == 1
    assert "the research store" in listed.stdout and "1.2.3.5.dcm" in listed.stdout
    repaired = run_fedgate("store", "check", "--repair", "--config", config)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert not (series / "1.2.3.5.dcm").exists()

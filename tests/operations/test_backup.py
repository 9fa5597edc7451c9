"""``fedgate backup`` / ``fedgate restore`` with a real gateway process: back up while it runs,
wipe, restore, and the restored gateway serves the same studies (QIDO-RS) and counts the same
patients (federated API, exact role); a new study of a known patient after the restore is still
one patient, because the index salt came back. On the embedded default and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from fedgate.phantom import PhantomSpec, generate_phantom
from tests.support.gateway import GatewayProcess
from tests.support.postgres import PostgresServer
from tests.support.process import run_fedgate

ADMIN_TOKEN = "operations-admin-token"
EXACT_TOKEN = "operations-research-office-token"
PATIENTS = 12  # above the minimum cell size (10), so the exact count is released as it is


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


AUTH = {
    "clients": [
        {"name": "operator", "token_sha256": _sha256(ADMIN_TOKEN), "roles": ["admin"]},
        {"name": "research-office", "token_sha256": _sha256(EXACT_TOKEN), "roles": ["exact"]},
    ]
}


def _phantom_instances(seed: int) -> list[Any]:
    spec = PhantomSpec(
        seed=seed,
        rows=32,
        columns=32,
        slices=2,
        pixel_spacing_mm=8.0,
        slice_thickness_mm=5.0,
        lesion_diameters_mm=(),
    )
    return list(generate_phantom(spec).instances())


def _client(gateway: GatewayProcess) -> DICOMwebClient:
    return DICOMwebClient(gateway.dicomweb_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


def _studies(gateway: GatewayProcess) -> set[str]:
    return {study["0020000D"]["Value"][0] for study in _client(gateway).search_for_studies()}


def _patients(gateway: GatewayProcess) -> int:
    response = httpx.get(
        f"{gateway.url}/federated/v1/count",
        headers={"Authorization": f"Bearer {EXACT_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    count: int = response.json()["count"]
    return count


def _round_trip(tmp_path: Path, settings: dict[str, Any], archive: Path, wipe: Any) -> None:
    gateway = GatewayProcess(tmp_path / "gateway", {"auth": AUTH, **settings}).start()
    try:
        for seed in range(PATIENTS):
            _client(gateway).store_instances(_phantom_instances(100 + seed))
        studies, patients = _studies(gateway), _patients(gateway)
        assert len(studies) == patients == PATIENTS
        config = str(gateway.workdir / "gateway.yaml")
        # While the gateway runs, as a nightly backup would.
        made = run_fedgate("backup", "--config", config, "--out", str(archive))
        assert made.returncode == 0, made.stderr
        salt = (gateway.data_dir / "index-salt").read_bytes()
        with tarfile.open(archive) as members:
            # The findings index's columnar copy is derived: left out, built again.
            assert not [n for n in members.getnames() if "findings-index.duckdb" in n]
    finally:
        gateway.stop()
    shutil.rmtree(gateway.data_dir)
    wipe()
    restored = run_fedgate("restore", "--config", config, str(archive))
    assert restored.returncode == 0, restored.stderr
    assert (gateway.data_dir / "index-salt").read_bytes() == salt
    gateway.start()
    try:
        assert _studies(gateway) == studies
        assert _patients(gateway) == PATIENTS
        if not settings.get("index", {}).get("url"):
            assert (gateway.data_dir / "findings-index.duckdb").exists()
        # A new study of a patient the site already holds: the same pseudonymous key, so
        # still 12 patients (with a new salt it would be a 13th).
        again = _phantom_instances(100)
        study, series = generate_uid(), generate_uid()
        for instance in again:
            instance.StudyInstanceUID, instance.SeriesInstanceUID = study, series
            instance.SOPInstanceUID = generate_uid()
            instance.file_meta.MediaStorageSOPInstanceUID = instance.SOPInstanceUID
        _client(gateway).store_instances(again)
        assert _studies(gateway) == studies | {study}
        assert _patients(gateway) == PATIENTS
        # The restore refuses to overwrite what the gateway now holds.
        gateway.stop()
        refused = run_fedgate("restore", "--config", config, str(archive))
        assert refused.returncode == 1
        assert "is not empty" in refused.stderr and "--force" in refused.stderr
    finally:
        gateway.stop()


def test_backup_wipe_restore_on_the_embedded_default(tmp_path: Path) -> None:
    _round_trip(tmp_path, {}, tmp_path / "site.tar.gz", wipe=lambda: None)


def test_a_backup_under_stow_load_restores_a_consistent_store(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gateway").start()
    config = str(gateway.workdir / "gateway.yaml")
    acknowledged: list[str] = []
    stop = threading.Event()

    def keep_storing() -> None:
        client = DICOMwebClient(gateway.dicomweb_url)
        seed = 500
        while not stop.is_set():
            instances = _phantom_instances(seed)
            client.store_instances(instances)
            acknowledged.append(instances[0].StudyInstanceUID)
            seed += 1

    sender = threading.Thread(target=keep_storing)
    sender.start()
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        before = set(acknowledged)
        made = run_fedgate("backup", "--config", config, "--out", str(tmp_path / "busy.tar"))
        assert made.returncode == 0, made.stderr
        during = len(acknowledged) - len(before)
    finally:
        stop.set()
        sender.join(timeout=60)
        gateway.stop()
    assert during > 0, "nothing was stored while the backup ran: the test proved nothing"
    shutil.rmtree(gateway.data_dir)
    assert run_fedgate("restore", "--config", config, str(tmp_path / "busy.tar")).returncode == 0
    gateway.start()
    try:
        restored = {
            study["0020000D"]["Value"][0]
            for study in DICOMwebClient(gateway.dicomweb_url).search_for_studies()
        }
        # Everything acknowledged before the backup began is back, nothing never sent.
        assert before <= restored <= set(acknowledged)
        # Every catalogued instance has its file (no snapshot names a file the archive lacks).
        check = run_fedgate("store", "check", "--config", config)
        assert check.returncode == 0 and "consistent" in check.stdout, check.stdout
        for study in before:
            assert len(DICOMwebClient(gateway.dicomweb_url).retrieve_study(study)) == 2
    finally:
        gateway.stop()


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_backup_wipe_restore_with_postgresql(tmp_path: Path, postgres: PostgresServer) -> None:
    def wipe() -> None:
        with psycopg.connect(postgres.url, autocommit=True) as connection:
            connection.execute("DROP SCHEMA public CASCADE")
            connection.execute("CREATE SCHEMA public")

    settings = {"queue": {"url": postgres.url}, "index": {"url": postgres.url}}
    archive = tmp_path / "site.tar"
    _round_trip(tmp_path, settings, archive, wipe)
    with tarfile.open(archive) as opened:
        names = opened.getnames()
    assert "postgresql/queue.dump" in names  # one dump: queue and index share the database
    assert not [name for name in names if name.endswith("findings-index.sqlite3")]


def test_a_damaged_or_foreign_archive_restores_nothing(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gateway").start()
    try:
        _client(gateway).store_instances(_phantom_instances(7))
        config = str(gateway.workdir / "gateway.yaml")
        archive = tmp_path / "site.tar"
        assert run_fedgate("backup", "--config", config, "--out", str(archive)).returncode == 0
    finally:
        gateway.stop()
    shutil.rmtree(gateway.data_dir)
    # One instance's bytes changed, the manifest left as it was.
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(archive) as source, tarfile.open(damaged, "w") as target:
        changed = False
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if not changed and member.name.endswith(".dcm"):
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
                changed = True
            target.addfile(member, io.BytesIO(data))
    result = run_fedgate("restore", "--config", config, str(damaged))
    assert result.returncode == 1
    assert "does not match its SHA-256" in result.stderr
    assert not gateway.data_dir.exists() or not any(gateway.data_dir.iterdir())
    foreign = tmp_path / "foreign.tar"
    with tarfile.open(foreign, "w") as target:
        target.add(__file__, arcname="data/notes.txt")
    result = run_fedgate("restore", "--config", config, str(foreign))
    assert result.returncode == 1 and "not a fedgate backup" in result.stderr
    # The intact one still restores.
    assert run_fedgate("restore", "--config", config, str(archive)).returncode == 0

"""The findings index fed with real DICOM: phantom headers and sr_writer SRs."""

from __future__ import annotations

import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from fedgate.phantom import Phantom
from gateway.federated.cohort import AggregateRequest
from gateway.federated.service import Asker, FederatedService
from gateway.federated.settings import FederatedSettings
from gateway.index import FindingsIndex, IndexSettings
from gateway.index.findings_index import SQLITE_FILE_NAME
from gateway.index.keys import SALT_FILE_NAME
from gateway.index.schema import LATEST_VERSION, SchemaError
from sr_writer import build_sr
from tests.federated.synthetic import header_only, small_phantom
from tests.sr_writer.builders import lesion_findings
from tests.support.postgres import PostgresServer

DIAMETER = "SCT:81827009"
NODULE = "SCT:27925004"


def _study_with_sr(
    seed: int, lesions: tuple[float, ...] = (12.0,)
) -> tuple[Phantom, list[Dataset]]:
    phantom = small_phantom(seed, lesions)
    headers = header_only(phantom)
    sr = build_sr(lesion_findings(phantom, headers), headers)
    return phantom, [*headers, sr]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[FindingsIndex]:
    opened = FindingsIndex.open(IndexSettings(), tmp_path / "data")
    yield opened
    opened.close()


def test_instances_and_srs_become_cohort_rows_and_findings(index: FindingsIndex) -> None:
    phantom, datasets = _study_with_sr(7, (12.0, 6.0))
    index.observe_instances(datasets)
    assert index.counts() == {
        "studies": 1,
        "series": 2,
        "reports": 1,
        "findings": 2,
        "measurements": 4,
    }  # diameter and probability per finding
    truth = phantom.truth
    (row,) = index.database.query("SELECT patient_sex, age_years, study_year FROM studies")
    assert row == (truth.patient_sex, truth.patient_age_years, int(truth.study_date[:4]))
    modalities = {r[0] for r in index.database.query("SELECT modality FROM series")}
    assert modalities == {"CT", "SR"}
    diameters = sorted(
        r[0]
        for r in index.database.query(
            "SELECT value FROM measurements WHERE concept = ? AND unit = 'mm'", (DIAMETER,)
        )
    )
    assert diameters == pytest.approx([6.0, 12.0])


def test_the_index_holds_no_identifier(index: FindingsIndex, tmp_path: Path) -> None:
    phantom, datasets = _study_with_sr(8)
    index.observe_instances(datasets)
    truth = phantom.truth
    dump = "\n".join(sqlite3.connect(tmp_path / "data" / SQLITE_FILE_NAME).iterdump())
    sr = datasets[-1]
    for identifier in (
        truth.patient_id,
        truth.patient_name,
        truth.accession_number,
        truth.patient_birth_date,
        truth.study_instance_uid,
        truth.series_instance_uid,
        truth.frame_of_reference_uid,
        *truth.sop_instance_uids,
        str(sr.SOPInstanceUID),
        str(sr.SeriesInstanceUID),
    ):
        assert identifier not in dump, identifier
    # (The study date is kept, as a number, for date-range filters; no answer returns it.)
    assert "Phantom^" not in dump


def test_the_salt_is_made_once_and_kept_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = FindingsIndex.open(IndexSettings(), data_dir)
    key = first.keys.patient("PHANTOM-000001")
    first.close()
    salt = data_dir / SALT_FILE_NAME
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600
    again = FindingsIndex.open(IndexSettings(), data_dir)
    assert again.keys.patient("PHANTOM-000001") == key  # stable: rebuilds keep their keys
    again.close()
    other = FindingsIndex.open(IndexSettings(), tmp_path / "other-site")
    assert other.keys.patient("PHANTOM-000001") != key  # useless outside the site
    other.close()


def test_a_resent_sr_replaces_its_findings(index: FindingsIndex) -> None:
    _, datasets = _study_with_sr(9)
    index.observe_instances(datasets)
    index.observe_instances(datasets[-1:])
    index.observe_instances(datasets[-1:])
    assert index.counts()["findings"] == 1


def test_a_non_tid1500_sr_and_an_instance_without_uids_do_not_fail_intake(
    index: FindingsIndex,
) -> None:
    _, datasets = _study_with_sr(10)
    sr = datasets[-1]
    del sr.ContentTemplateSequence
    sr.ContentSequence = []
    # A radiology report's title (LOINC 18748-4), not "Imaging Measurement Report": not TID 1500.
    sr.ConceptNameCodeSequence[0].CodeValue = "18748-4"
    sr.ConceptNameCodeSequence[0].CodingSchemeDesignator = "LN"
    broken = Dataset()
    broken.PatientID = "X"
    index.observe_instances([*datasets[:-1], sr, broken])
    assert index.counts()["studies"] == 1
    assert index.counts()["findings"] == 0


def test_observing_a_series_is_cheap(index: FindingsIndex) -> None:
    phantom = small_phantom(11, ())
    header = header_only(phantom)[0]
    many = [header] * 2000
    started = time.perf_counter()
    for start in range(0, len(many), 200):  # ten STOW requests of 200 instances
        index.observe_instances(many[start : start + 200])
    elapsed = time.perf_counter() - started
    assert index.counts()["series"] == 1
    assert elapsed < 1.0, f"{elapsed:.3f} s for 2000 instances of one series"


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    FindingsIndex.open(IndexSettings(), data_dir).close()
    connection = sqlite3.connect(data_dir / SQLITE_FILE_NAME)
    versions = [
        r[0]
        for r in connection.execute("SELECT version FROM fedgate_schema WHERE component='index'")
    ]
    assert versions == list(range(1, LATEST_VERSION + 1))
    connection.execute(
        "INSERT INTO fedgate_schema VALUES ('index', ?, 'future', '')", (LATEST_VERSION + 1,)
    )
    connection.commit()
    connection.close()
    with pytest.raises(SchemaError, match="newer than this fedgate"):
        FindingsIndex.open(IndexSettings(), data_dir)


def test_the_index_on_postgresql(tmp_path: Path) -> None:
    cluster = PostgresServer(database="postgres").start()
    try:
        index = FindingsIndex.open(IndexSettings(url=cluster.url), tmp_path / "data")
        for seed in range(12):
            index.observe_instances(_study_with_sr(100 + seed)[1])
        assert index.counts()["findings"] == 12
        service = FederatedService(index, FederatedSettings())
        analyst = Asker("pg-analyst", "pg-client")
        cohort = {
            "findings": [
                {"type": NODULE, "measurements": [{"concept": DIAMETER, "min": 1, "unit": "cm"}]}
            ]
        }
        answer = service.answer(
            AggregateRequest.model_validate({"level": "studies", "cohort": cohort}),
            analyst,
            "test",
        )
        assert answer["count"] is not None
        assert service.ledger.budget("pg-analyst").spent == pytest.approx(0.75)
        histogram = service.answer(
            AggregateRequest.model_validate(
                {
                    "cohort": cohort,
                    "aggregate": {
                        "kind": "histogram",
                        "by": {
                            "kind": "bins",
                            "of": "measurement",
                            "concept": DIAMETER,
                            "unit": "mm",
                            "start": 0,
                            "stop": 20,
                            "width": 5,
                        },
                    },
                }
            ),
            analyst,
            "test",
        )
        assert len(histogram["cells"]) == 5  # four bins and "(outside)"
        index.close()
        # Reopening migrates nothing twice.
        FindingsIndex.open(IndexSettings(url=cluster.url), tmp_path / "data").close()
    finally:
        cluster.stop()


def test_two_replicas_on_postgresql_share_cache_and_budget(tmp_path: Path) -> None:
    """Two gateway replicas (two services, two connections) over one PostgreSQL index."""
    from concurrent.futures import ThreadPoolExecutor

    from gateway.federated.service import Asker, Refused

    cluster = PostgresServer(database="postgres").start()
    try:
        settings = FederatedSettings(dp={"epsilon_per_query": 1.0, "epsilon_per_person": 2.0})
        replicas = [
            FindingsIndex.open(IndexSettings(url=cluster.url), tmp_path / "data") for _ in range(2)
        ]
        for seed in range(60):
            phantom = small_phantom(200 + seed, ())
            replicas[0].observe_instances(header_only(phantom)[:1])
        services = [FederatedService(index, settings) for index in replicas]
        women = AggregateRequest.model_validate({"cohort": {"attributes": {"PatientSex": "F"}}})
        everyone = AggregateRequest.model_validate({})
        count = replicas[0].database.query("SELECT COUNT(*) FROM studies WHERE patient_sex = 'F'")
        assert count[0][0] >= 10  # a cohort to answer

        def ask(number: int) -> tuple[int, object]:
            service = services[number % 2]
            request = women if number % 4 < 2 else everyone
            try:
                return number % 4 < 2, service.answer(request, Asker("client", "client"), "test")[
                    "count"
                ]
            except Refused:
                return number % 4 < 2, "refused"

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(ask, range(16)))
        # Both cohorts are far apart (women vs everyone): each answered once, with one noise
        # draw that both replicas then serve, and the ledger shared through PostgreSQL
        # charged exactly 2 (the whole budget), however the questions raced.
        assert len({count for is_women, count in outcomes if is_women}) == 1
        assert len({count for is_women, count in outcomes if not is_women}) == 1
        assert "refused" not in {count for _, count in outcomes}
        assert services[1].ledger.budget("client").spent == pytest.approx(2.0)
        with pytest.raises(Refused, match="privacy budget"):
            services[1].answer(
                AggregateRequest.model_validate({"cohort": {"attributes": {"PatientSex": "M"}}}),
                Asker("client", "client"),
                "test",
            )
        for index in replicas:
            index.close()
    finally:
        cluster.stop()

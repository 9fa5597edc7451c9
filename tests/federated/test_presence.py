"""Issue 13 item 3: "Absent" is not a finding.

The presence classifier (``nodule-presence``) writes a "Nodule" group for every study, with
Presence of property = Absent (DCM 121054) when it sees none; third parties write "Nodule" =
"Not present" (SCT 272519000) or an empty report. A nodule count must not count them, and
absence must be a question of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import highdicom as hd
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from gateway.federated.cohort import CategoryDimension, Cohort, FindingFilter
from gateway.federated.query import cells_sql, membership_sql
from gateway.index import FindingsIndex, IndexSettings
from gateway.index import schema as index_schema
from gateway.index.database import Database
from gateway.index.findings_index import SQLITE_FILE_NAME
from inference_service.manifest import load_manifest
from inference_service.postprocess import ClassResult
from inference_service.report import build_findings
from inference_service.volume import Volume
from sr_writer import build_sr
from tests.federated.conftest import SiteFactory
from tests.federated.synthetic import header_only, small_phantom
from tests.sr_writer.builders import lesion_findings

NODULE = "SCT:27925004"


def nodule_presence_sr(models_dir: Path, headers: list[Dataset], present: bool) -> Dataset:
    """The SR that nodule-presence writes (its own manifest and report code) for a study."""
    manifest = load_manifest(models_dir / "nodule-presence")
    (output,) = manifest.outputs
    score = 0.97 if present else 0.02
    result = ClassResult(output=output, probabilities={"present": score, "absent": 1 - score})  # type: ignore[arg-type]
    findings, _ = build_findings(manifest, cast(Volume, None), [result], generate_uid(), headers)
    return build_sr(findings, headers)


def third_party_sr(headers: list[Dataset], groups: list[Any], title: str = "third") -> Dataset:
    """A TID 1500 SR written with highdicom's API alone, as another vendor would."""
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Person,
                observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                    name="Reader^Third"
                ),
            )
        ),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups or [nodule_group()],
    )
    if not groups:
        # highdicom insists on one group; an empty "Imaging Measurements" is what others write.
        (container,) = [
            item
            for item in report[0].ContentSequence
            if item.ConceptNameCodeSequence[0].CodeValue == codes.DCM.ImagingMeasurements.value
        ]
        container.ContentSequence = []
    return hd.sr.Comprehensive3DSR(
        evidence=headers,
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=700,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=f"{title} party",
        is_complete=True,
    )


def nodule_group(*evaluations: tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]) -> Any:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="nodule"),
        finding_type=hd.sr.CodedConcept("27925004", "SCT", "Nodule"),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=name, value=value) for name, value in evaluations
        ],
    )


NOT_PRESENT = hd.sr.CodedConcept("272519000", "SCT", "Not present")
NODULE_NAME = hd.sr.CodedConcept("27925004", "SCT", "Nodule")


def presence_site(
    make_site: SiteFactory, data_dir: Path, models_dir: Path, lesion_free: int, with_nodule: int
) -> Any:
    """Patients with one chest CT each, as nodule-presence reports them (each SR read by the
    index as the intake path reads it), on a site with a minimum cell size of 2."""
    index = FindingsIndex.open(IndexSettings(), data_dir)
    for seed in range(lesion_free + with_nodule):
        phantom = small_phantom(900 + seed, () if seed < lesion_free else (12.0,))
        headers = header_only(phantom)
        index.observe_instances(
            [*headers, nodule_presence_sr(models_dir, headers, present=seed >= lesion_free)]
        )
    index.close()
    # The same patients asked about twice (present, then "any") is what this test does.
    return make_site([], name=data_dir.name, min_cell_size=2)


@pytest.fixture
def mixed_site(make_site: SiteFactory, tmp_path: Path, models_dir: Path) -> Any:
    """20 lesion-free patients and 12 with a nodule."""
    return presence_site(make_site, tmp_path / "mixed", models_dir, 20, 12)


def test_twenty_lesion_free_patients_are_not_twenty_with_a_nodule(
    make_site: SiteFactory, tmp_path: Path, models_dir: Path
) -> None:
    site = presence_site(make_site, tmp_path / "lesion-free", models_dir, 20, 0)
    answer = site.get({"finding": NODULE}).json()
    assert answer["count"] is None and answer["suppressed"] is True  # 0, shown as < 2
    assert site.get({"finding": f"{NODULE}:absent"}).json()["count"] == 20


def test_present_absent_and_either(mixed_site: Any) -> None:
    def count(finding: str) -> int:
        response = mixed_site.get({"finding": finding})
        assert response.status_code == 200, response.text
        return int(response.json()["count"])

    assert count(NODULE) == 12  # finding= means present: not 32
    assert count(f"{NODULE}:present") == 12
    assert count(f"{NODULE}:absent") == 20
    assert count(f"{NODULE}:any") == 32
    body = mixed_site.post(
        {"cohort": {"findings": [{"type": NODULE, "presence": "absent"}]}, "level": "studies"}
    )
    assert body.status_code == 200, body.text
    assert body.json()["count"] == 20
    # The probability the classifier wrote is a measurement of the absent finding too; a
    # number filter on "a nodule" still means a nodule that is there.
    probability = {"concept": "DCM:122157", "min": 0, "max": 1, "unit": "1"}
    body = mixed_site.post(
        {"cohort": {"findings": [{"type": NODULE, "measurements": [probability]}]}}
    )
    assert body.status_code == 200, body.text
    assert body.json()["count"] == 12
    bad = mixed_site.get({"finding": f"{NODULE}:maybe"})
    assert bad.status_code == 400 and "presence" in bad.text


def test_histograms_place_absent_findings_apart(mixed_site: Any) -> None:
    # "Of the studies the classifier looked at: how many with, how many without a nodule."
    body = mixed_site.post(
        {
            "cohort": {"findings": [{"type": NODULE, "presence": "any"}]},
            "aggregate": {
                "kind": "histogram",
                "by": {"kind": "category", "name": "qualitative", "concept": "DCM:121052"},
            },
        }
    )
    assert body.status_code == 200, body.text
    answer = body.json()
    cells = {c["value"]: c["count"] for c in answer["cells"]}
    # (Present, 12, may be held back beside the empty "(other)" cell: it would give it away.)
    assert answer["total"]["count"] == 32 and cells["DCM:121054"] == 20
    # Without a finding filter, a finding-type dimension counts only findings that are there.
    sql = cells_sql(Cohort(), "patients", [CategoryDimension(name="finding_type")])
    rows = mixed_site.index.database.query(sql.text, sql.params)
    assert [(row[0], row[2]) for row in rows] == [(NODULE, 12)]


def test_third_party_absence_and_an_empty_report(tmp_path: Path) -> None:
    index = FindingsIndex.open(IndexSettings(), tmp_path / "data")
    try:
        not_present = header_only(small_phantom(950, ()))
        calcification = header_only(small_phantom(951, (9.0,)))
        empty = header_only(small_phantom(952, ()))
        index.observe_instances(
            [*not_present, third_party_sr(not_present, [nodule_group((NODULE_NAME, NOT_PRESENT))])]
        )
        # "Calcification: Absent" describes a nodule that is there.
        absent = hd.sr.CodedConcept("2667000", "SCT", "Absent")
        calcified = hd.sr.CodedConcept("46128004", "SCT", "Calcification")
        index.observe_instances(
            [*calcification, third_party_sr(calcification, [nodule_group((calcified, absent))])]
        )
        index.observe_instances([*empty, third_party_sr(empty, [])])
        rows = index.database.query(
            "SELECT finding_type, presence FROM findings ORDER BY presence, finding_type"
        )
        # The empty report: one "found nothing" row, no type, by an algorithm it does not name.
        assert sorted(rows, key=str) == sorted(
            [(NODULE, "absent"), (None, "absent"), (NODULE, "present")], key=str
        )
    finally:
        index.close()


def test_an_index_written_before_presence_is_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "old"
    data_dir.mkdir()
    database = Database.sqlite(data_dir / SQLITE_FILE_NAME)
    with monkeypatch.context() as patch:
        patch.setattr(index_schema, "MIGRATIONS", {v: index_schema.MIGRATIONS[v] for v in (1, 2)})
        index_schema.migrate(database)
    for key, value in ((1, "DCM:121054"), (2, "DCM:121053")):
        database.execute(
            "INSERT INTO findings (finding_key, report_key, study_key, patient_key, finding_type)"
            " VALUES (?, 1, ?, ?, ?)",
            (key, key, key, NODULE),
        )
        database.execute(
            "INSERT INTO measurements (finding_key, study_key, patient_key, finding_type, "
            "concept, value, unit) VALUES (?, ?, ?, ?, 'DCM:122157', 0.5, '1')",
            (key, key, key, NODULE),
        )
        database.execute(
            "INSERT INTO qualitative (finding_key, concept, value) VALUES (?, 'DCM:121052', ?)",
            (key, value),
        )
    database.close()
    index = FindingsIndex.open(IndexSettings(), data_dir)
    try:
        assert index.database.query(
            "SELECT finding_key, presence FROM findings ORDER BY finding_key"
        ) == [(1, "absent"), (2, "present")]
        assert index.database.query(
            "SELECT finding_key, presence FROM measurements ORDER BY finding_key"
        ) == [(1, "absent"), (2, "present")]
    finally:
        index.close()


def test_an_empty_report_of_a_nodule_detector_says_no_nodule(tmp_path: Path) -> None:
    index = FindingsIndex.open(IndexSettings(), tmp_path / "data")
    try:
        for seed, lesions in ((960, (12.0,)), (961, ()), (962, ())):
            phantom = small_phantom(seed, lesions)
            headers = header_only(phantom)
            index.observe_instances(
                [*headers, build_sr(lesion_findings(phantom, headers), headers)]
            )

        def studies(presence: str) -> int:
            cohort = Cohort(findings=(FindingFilter(type=NODULE, presence=presence),))  # type: ignore[arg-type]
            sql = membership_sql(cohort, "studies")
            return len(index.database.query(sql.text, sql.params))

        # The detector reports nodules (it did in study 960): its two empty reports say none.
        assert (studies("present"), studies("absent"), studies("any")) == (1, 2, 3)
    finally:
        index.close()

"""The cohort language over HTTP: QIDO matching, presence filters, aggregates, clear 400s."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from gateway.federated.audit import AUDIT_FILE_NAME, read_audit_log
from tests.federated.conftest import QUERY_TOKEN, Site, SiteFactory
from tests.federated.synthetic import (
    DIAMETER,
    MALIGNANCY,
    MASS,
    NODULE,
    SUSPICIOUS,
    SyntheticFinding,
    SyntheticPatient,
    SyntheticStudy,
)


def _mixed_site(make_site: SiteFactory) -> Site:
    """Disjoint groups of 20: CT chest women 2024, MR head men 2023, CT+MR women 2022."""
    patients = []
    for i in range(20):
        patients.append(
            SyntheticPatient(
                f"A{i}",
                "F",
                [
                    SyntheticStudy(
                        date=20240301 + i,
                        age=30 + i,
                        modalities=("CT",),
                        body_part="CHEST",
                        findings=[SyntheticFinding(NODULE, 5.0 + i)],
                    )
                ],
            )
        )
        patients.append(
            SyntheticPatient(
                f"B{i}",
                "M",
                [
                    SyntheticStudy(
                        date=20230301 + i, age=50 + i, modalities=("MR",), body_part="HEAD"
                    )
                ],
            )
        )
        patients.append(
            SyntheticPatient(
                f"C{i}",
                "F",
                [
                    SyntheticStudy(
                        date=20220301 + i, age=70, modalities=("CT",), body_part="CHEST"
                    ),
                    SyntheticStudy(
                        date=20220901 + i,
                        age=70,
                        modalities=("MR",),
                        body_part="HEAD",
                        findings=[SyntheticFinding(MASS, 25.0, ((MALIGNANCY, SUSPICIOUS),))],
                    ),
                ],
            )
        )
    return make_site(patients)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ModalitiesInStudy": "CT"}, 40),
        ({"ModalitiesInStudy": "CT,MR"}, 60),  # list: any of them
        ({"ModalitiesInStudy": "CT\\MR", "level": "studies"}, 80),
        ({"Modality": "M?"}, 40),  # wildcard, one character
        ({"BodyPartExamined": "CH*"}, 40),  # wildcard, any sequence
        ({"StudyDate": "20240101-20241231"}, 20),  # range
        ({"StudyDate": "20230101-"}, 40),  # open range
        ({"StudyDate": "-20221231", "level": "studies"}, 40),
        ({"PatientAge": "060Y-070Y"}, 30),  # DICOM AS, inclusive: B aged 60-69 and C aged 70
        ({"PatientSex": "F", "level": "series"}, 60),
        ({"finding": NODULE, "measurement": f"{DIAMETER}:1.5-:cm"}, 10),
    ],
)
def test_qido_matching(make_site: SiteFactory, params: dict[str, str], expected: int) -> None:
    site = _mixed_site(make_site)
    response = site.get(params)
    assert response.status_code == 200, response.text
    assert response.json()["count"] == expected


def test_presence_filters_make_multimodal_cohorts(make_site: SiteFactory) -> None:
    site = _mixed_site(make_site)
    # Patients with a CT study who also have an MR study (C), and a mass somewhere (C).
    body = site.post(
        {
            "cohort": {
                "attributes": {"ModalitiesInStudy": "CT"},
                "patient_has": {"modalities": ["MR"]},
            }
        }
    )
    assert body.json()["count"] == 20
    body = site.post(
        {
            "cohort": {
                "attributes": {"ModalitiesInStudy": "CT"},
                "patient_has": {"findings": [{"type": MASS}]},
            },
            "level": "studies",
        }
    )
    assert body.json()["count"] == 20  # the CT studies of patients with a mass on MR


def test_qualitative_filter_and_histogram(make_site: SiteFactory) -> None:
    site = _mixed_site(make_site)
    body = site.post(
        {"cohort": {"findings": [{"qualitative": [{"concept": MALIGNANCY, "value": SUSPICIOUS}]}]}}
    )
    assert body.json()["count"] == 20
    histogram = site.post(
        {
            "aggregate": {
                "kind": "histogram",
                "by": {"kind": "category", "name": "qualitative", "concept": MALIGNANCY},
            }
        }
    ).json()
    cells = {c["value"]: c for c in histogram["cells"]}
    # "(other)" (every rarer value) is always listed; here it is empty, so it is suppressed,
    # and with it the only other cell, which total minus "(other)" would otherwise give away.
    assert set(cells) == {SUSPICIOUS, "(other)"}
    assert cells["(other)"]["suppressed"] and cells[SUSPICIOUS]["suppressed"]


def test_crosstab_of_modality_by_sex(make_site: SiteFactory) -> None:
    site = _mixed_site(make_site)
    body = site.post(
        {
            "level": "studies",
            "aggregate": {
                "kind": "crosstab",
                "rows": {"kind": "category", "name": "modality"},
                "columns": {"kind": "category", "name": "sex"},
            },
        }
    ).json()
    cells = {(c["row"], c["column"]): c for c in body["cells"]}
    assert body["total"]["count"] == 80
    # CT: 40 women (A, C); MR: 20 women (C) and 20 men (B). Zeros are suppressed, and so
    # is a second cell in each row and column that has one.
    assert cells[("CT", "M")]["suppressed"] is True
    assert cells[("CT", "O")]["suppressed"] is True
    released = {k: c["count"] for k, c in cells.items() if not c.get("suppressed")}
    truth = {("CT", "F"): 40, ("MR", "F"): 20, ("MR", "M"): 20}
    for key, count in released.items():
        assert count == truth[key]


def test_summary_of_a_measurement_and_quantiles_only_under_dp(make_site: SiteFactory) -> None:
    site = _mixed_site(make_site)
    spec = {
        "kind": "summary",
        "of": "measurement",
        "concept": DIAMETER,
        "unit": "mm",
        "lower": 0,
        "upper": 100,
    }
    body = site.post({"cohort": {"findings": [{"type": NODULE}]}, "aggregate": spec}).json()
    diameters = [5.0 + i for i in range(20)]
    assert body["n"] == 20
    assert body["mean"] == pytest.approx(sum(diameters) / 20)
    refused = site.post({"aggregate": {**spec, "quantiles": [0.5]}})
    assert refused.status_code == 400
    assert refused.json()["field"] == "aggregate.quantiles"


def test_age_summary_in_years(make_site: SiteFactory) -> None:
    site = _mixed_site(make_site)
    body = site.post(
        {
            "cohort": {"attributes": {"PatientSex": "M"}},
            "aggregate": {"kind": "summary", "of": "age", "lower": 0, "upper": 120},
        }
    ).json()
    assert body["mean"] == pytest.approx(59.5)


@pytest.mark.parametrize(
    "attribute",
    [
        "PatientID",
        "PatientName",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "AccessionNumber",
        "PatientBirthDate",
        "FrameOfReferenceUID",
        "IssuerOfPatientID",
    ],
)
def test_identifying_attributes_are_refused_by_name(site: Site, attribute: str) -> None:
    response = site.get({attribute: "1"})
    assert response.status_code == 400
    assert response.json()["field"] == attribute
    assert "identifying" in response.json()["error"]
    response = site.post({"cohort": {"attributes": {attribute: "1"}}})
    assert response.status_code == 400
    assert attribute in response.json()["error"]


def test_identifying_attribute_given_as_a_tag_is_refused(site: Site) -> None:
    response = site.get({"00100020": "F001"})  # PatientID
    assert response.status_code == 400
    assert response.json()["field"] == "PatientID"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"level": "instances"}, "level"),
        ({"StudyDate": "202403"}, "StudyDate"),  # neither a date nor a year
        ({"PatientAge": "old"}, "PatientAge"),
        ({"PatientSex": "X"}, "PatientSex"),
        ({"finding": "nodule"}, "finding"),
        ({"measurement": f"{DIAMETER}:8-"}, "measurement"),
        ({"measurement": f"{DIAMETER}:big-:mm"}, "measurement"),
        ({"measurement": f"{DIAMETER}:9-8:mm"}, "measurement"),
        ({"InstitutionName": "St Elsewhere"}, "InstitutionName"),
        ({"NoSuchKeyword": "1"}, "NoSuchKeyword"),
    ],
)
def test_bad_filters_get_a_400_naming_the_field(
    site: Site, params: dict[str, str], field: str
) -> None:
    response = site.get(params)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"level": "instances"}, "level"),
        (
            {
                "aggregate": {
                    "kind": "histogram",
                    "by": {"kind": "bins", "of": "age", "start": 0, "stop": 100000, "width": 1},
                }
            },
            "aggregate",
        ),
        (
            {"aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "qualitative"}}},
            "aggregate.histogram.by.category",
        ),
        (
            {"cohort": {"findings": [{"measurements": [{"concept": DIAMETER, "unit": "mm"}]}]}},
            "cohort.findings.0.measurements.0",
        ),
    ],
)
def test_bad_json_gets_a_400_naming_the_field(
    site: Site, body: dict[str, object], field: str
) -> None:
    response = site.post(body)
    assert response.status_code == 400, response.text
    assert response.json()["field"].startswith(field)


def _post_python_json(site: Site, body: dict[str, object]) -> httpx.Response:
    """POST ``body`` as Python writes JSON: NaN and Infinity as bare words (httpx refuses)."""
    return httpx.post(
        f"{site.url}/aggregate",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {QUERY_TOKEN}", "Content-Type": "application/json"},
    )


_BINS = {"kind": "bins", "of": "age", "start": 0, "stop": 100, "width": 10}
_SUMMARY = {"kind": "summary", "of": "age", "lower": 0, "upper": 100}


@pytest.mark.parametrize(
    ("aggregate", "field"),
    [
        ({"kind": "histogram", "by": {**_BINS, "width": 5e-324}}, "histogram.by.bins.width"),
        (
            {"kind": "histogram", "by": {**_BINS, "start": -1e308, "stop": 1e308}},
            "histogram.by.bins.width",
        ),
        ({"kind": "histogram", "by": {**_BINS, "start": math.nan}}, "histogram.by.bins.start"),
        ({"kind": "histogram", "by": {**_BINS, "stop": math.inf}}, "histogram.by.bins.stop"),
        ({"kind": "histogram", "by": {**_BINS, "width": math.inf}}, "histogram.by.bins.width"),
        ({**_SUMMARY, "lower": -math.inf}, "summary.lower"),
        ({**_SUMMARY, "upper": math.nan}, "summary.upper"),
        ({**_SUMMARY, "quantiles": [math.nan]}, "summary.quantiles.0"),
    ],
)
def test_unrepresentable_bins_and_clamps_are_a_400_naming_the_field_and_audited(
    site: Site, aggregate: dict[str, object], field: str
) -> None:
    response = _post_python_json(site, {"aggregate": aggregate})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == f"aggregate.{field}"
    last = list(read_audit_log(site.index.data_dir / AUDIT_FILE_NAME))[-1]
    assert (last["status"], last["field"], last["client"]) == (
        "invalid",
        f"aggregate.{field}",
        "researcher",
    )


def test_non_finite_measurement_bounds_are_a_400(site: Site) -> None:
    finding = {"measurements": [{"concept": DIAMETER, "min": math.nan, "unit": "mm"}]}
    response = _post_python_json(site, {"cohort": {"findings": [finding]}})
    assert response.status_code == 400
    assert response.json()["field"] == "cohort.findings.0.measurements.0.min"
    count = site.get({"measurement": f"{DIAMETER}:inf-:mm"})
    assert count.status_code == 400
    assert count.json()["field"] == "measurement"


def test_not_json_is_a_400(site: Site) -> None:
    response = httpx.post(
        f"{site.url}/aggregate",
        content=b"{not json",
        headers={"Authorization": "Bearer query-token-for-tests"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize("level", ["patients", "studies", "series"])
@pytest.mark.parametrize(
    "dimensions",
    [
        [
            {"kind": "category", "name": "sex"},
            {"kind": "bins", "of": "age", "start": 40, "stop": 100, "width": 7},
        ],
        [{"kind": "category", "name": "finding_type"}],
        [
            {"kind": "category", "name": "sex"},
            {
                "kind": "bins",
                "of": "measurement",
                "concept": DIAMETER,
                "unit": "mm",
                "start": 4,
                "stop": 12,
                "width": 3,
            },
        ],
        [{"kind": "category", "name": "study_year"}],
    ],
)
def test_exact_tables_count_what_sql_counts(
    tmp_path: object, level: str, dimensions: list[dict[str, object]]
) -> None:
    """Every cell an exact table releases holds what SQL's COUNT(DISTINCT) gives for it: the
    counting from fact rows (sorts of int64 arrays) against the database's own."""
    from pathlib import Path

    from gateway.federated.cohort import AggregateRequest
    from gateway.federated.exact import exact_table
    from gateway.federated.facts import category
    from gateway.federated.query import cells_sql
    from gateway.federated.service import FederatedService
    from gateway.federated.settings import FederatedSettings
    from gateway.federated.tables import dimensions_of, label
    from gateway.index import FindingsIndex, IndexSettings
    from tests.federated.conftest import standard_cohort
    from tests.federated.synthetic import write_patients

    assert isinstance(tmp_path, Path)
    index = FindingsIndex.open(IndexSettings(), tmp_path / "site")
    write_patients(index, standard_cohort())
    aggregate = (
        {"kind": "histogram", "by": dimensions[0]}
        if len(dimensions) == 1
        else {"kind": "crosstab", "rows": dimensions[0], "columns": dimensions[1]}
    )
    request = AggregateRequest.model_validate({"level": level, "aggregate": aggregate})
    service = FederatedService(index, FederatedSettings(min_cell_size=2))
    answer = exact_table(index, request, service._membership(request), 2)
    dims = dimensions_of(request)
    sql = cells_sql(request.cohort, request.level, dims)
    expected = {}
    for row in index.database.query(sql.text, sql.params):
        labels = [label(d, category(v)) for d, v in zip(dims, row[: len(dims)], strict=True)]
        expected[json.dumps(labels, sort_keys=True)] = row[-2]
    released = 0
    for cell in answer["cells"]:
        if cell["count"] is None or "(other)" in (
            cell.get("value"),
            cell.get("row"),
            cell.get("column"),
        ):
            continue
        labels = [cell["value"]] if "value" in cell else [cell["row"], cell["column"]]
        assert expected.get(json.dumps(labels, sort_keys=True), 0) == cell["count"], labels
        released += 1
    # A two-cell table with a small cell hides both (complementary suppression).
    assert released >= 1 or len(answer["cells"]) <= 2
    index.close()


def test_study_years_are_the_same_question_as_their_first_and_last_days() -> None:
    """The dashboard asks study dates as whole years: no exact date is sent (issue 15)."""
    from gateway.federated.cohort import Cohort

    years = Cohort.model_validate({"attributes": {"StudyDate": "2019-2023"}})
    days = Cohort.model_validate({"attributes": {"StudyDate": "20190101-20231231"}})
    assert years.definition() == days.definition()
    one = Cohort.model_validate({"attributes": {"StudyDate": "2021"}})
    assert one.definition()["attributes"]["StudyDate"] == [20210101.0, 20211231.0]
    assert Cohort.model_validate({"attributes": {"StudyDate": "2020-"}}).definition()["attributes"][
        "StudyDate"
    ] == [20200101.0, None]


def test_findings_of_one_algorithm_version(make_site: SiteFactory) -> None:
    """A model's 2.0 results apart from its 1.0 ones (a new version writes a new report)."""
    from tests.federated.synthetic import NODULE as NODULE_TYPE

    patients = [
        SyntheticPatient(
            f"V{i}",
            "F",
            [
                SyntheticStudy(
                    findings=[
                        SyntheticFinding(
                            NODULE_TYPE, 9.0, algorithm_version="2.0" if i < 12 else "1.0"
                        )
                    ]
                )
            ],
        )
        for i in range(30)
    ]
    site = make_site(patients)

    def count(finding: dict[str, object]) -> object:
        return site.post({"cohort": {"findings": [finding]}}).json()["count"]

    assert count({"type": NODULE_TYPE, "algorithm": "lung-nodules"}) == 30
    assert count({"algorithm": "lung-nodules", "algorithm_version": "2.0"}) == 12
    assert count({"algorithm": "lung-nodules", "algorithm_version": "1.0"}) == 18

"""The shorter SQL paths of tables (issue 19) give what the full ones give, on synthetic cohorts.

A table's fact rows are fetched without the cohort's finding filter when the measurement join
asks the same thing, and the cohort's membership is taken from the fact rows, with no query of
its own, when they hold every unit of the cohort. Both are held here to the full paths: the
fact query with every cohort filter, and the cohort's own membership query.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.federated.cohort import AggregateRequest, Cohort, Dimension, Level
from gateway.federated.facts import Facts
from gateway.federated.membership import Membership
from gateway.federated.query import (
    base_from,
    cohort_where,
    dimension_sql,
    facts_cover_cohort,
    facts_sql,
    membership_sql,
    unit_columns,
)
from gateway.federated.tables import cohort_membership, dimensions_of
from gateway.index import FindingsIndex, IndexSettings
from tests.federated.synthetic import (
    DIAMETER,
    MASS,
    NODULE,
    SyntheticFinding,
    SyntheticPatient,
    SyntheticStudy,
    write_patients,
)

DIAMETER_BINS = {
    "kind": "bins",
    "of": "measurement",
    "concept": DIAMETER,
    "unit": "mm",
    "start": 4,
    "stop": 24,
    "width": 4,
}
AGE_BINS = {"kind": "bins", "of": "age", "start": 0, "stop": 100, "width": 10}
COHORTS: list[dict[str, Any]] = [
    {},
    {"attributes": {"PatientSex": "F"}},
    {
        "findings": [
            {"type": NODULE, "measurements": [{"concept": DIAMETER, "min": 8, "unit": "mm"}]}
        ]
    },
    {
        "attributes": {"ModalitiesInStudy": "CT"},
        "findings": [
            {"type": NODULE, "measurements": [{"concept": DIAMETER, "max": 1.2, "unit": "cm"}]}
        ],
    },
    # Two ranges on one finding: the join cannot check them alone.
    {
        "findings": [
            {
                "type": NODULE,
                "measurements": [
                    {"concept": DIAMETER, "min": 6, "unit": "mm"},
                    {"concept": DIAMETER, "max": 14, "unit": "mm"},
                ],
            }
        ]
    },
    {"findings": [{"type": MASS}], "attributes": {"PatientSex": "M"}},
    {
        "findings": [
            {"type": NODULE, "measurements": [{"concept": DIAMETER, "min": 5, "unit": "mm"}]},
            {"type": MASS},
        ]
    },
    {
        "findings": [
            {
                "type": NODULE,
                "algorithm_version": "2.0",
                "measurements": [{"concept": DIAMETER, "min": 5, "unit": "mm"}],
            }
        ]
    },
]
TABLES: list[list[dict[str, Any]]] = [
    [AGE_BINS],
    [{"kind": "category", "name": "sex"}, AGE_BINS],
    [{"kind": "category", "name": "study_year"}, DIAMETER_BINS],
    [DIAMETER_BINS],
    [{"kind": "category", "name": "finding_type"}],
    [{"kind": "category", "name": "modality"}, DIAMETER_BINS],
]


def mixed_patients(seed: int) -> list[SyntheticPatient]:
    """Patients with one to three studies of zero to four findings: nodules and masses with
    and without a diameter, findings of two algorithm versions, CT and MR studies."""
    rng = random.Random(seed)
    patients = []
    for number in range(80):
        studies = []
        for study in range(rng.randint(1, 3)):
            findings = [
                SyntheticFinding(
                    rng.choice([NODULE, NODULE, MASS]),
                    rng.choice([None, round(rng.uniform(2, 26), 1)]),
                    algorithm_version=rng.choice(["1.0", "2.0"]),
                )
                for _ in range(rng.randint(0, 4))
            ]
            studies.append(
                SyntheticStudy(
                    date=20180101 + 10000 * rng.randint(0, 6) + study,
                    modalities=rng.choice([("CT",), ("MR",), ("CT", "MR")]),
                    age=rng.randint(20, 90),
                    findings=findings,
                )
            )
        patients.append(SyntheticPatient(f"P{number}", rng.choice(["F", "M"]), studies))
    return patients


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FindingsIndex]:
    index = FindingsIndex.open(IndexSettings(), Path(tmp_path_factory.mktemp("site")))
    write_patients(index, mixed_patients(19))
    yield index
    index.close()


def _full_facts_sql(cohort: Cohort, level: Level, dimensions: list[Dimension]) -> tuple[str, list]:
    """The fact query as it was before issue 19: every cohort filter, joins or not."""
    where = cohort_where(cohort, level)
    dims = dimension_sql(cohort, level, dimensions)
    return (
        f"SELECT {unit_columns(level)}, {', '.join(dims.raw)} FROM {base_from(level)} "
        f"{' '.join(j.text for j in dims.joins)} WHERE {where.text}",
        [p for j in dims.joins for p in j.params] + where.params,
    )


def table_request(
    cohort: dict[str, Any], level: str, table: list[dict[str, Any]]
) -> AggregateRequest:
    """A histogram (one dimension) or cross-tab (two) of the cohort at ``level``."""
    aggregate = (
        {"kind": "histogram", "by": table[0]}
        if len(table) == 1
        else {"kind": "crosstab", "rows": table[0], "columns": table[1]}
    )
    return AggregateRequest.model_validate(
        {"cohort": cohort, "level": level, "aggregate": aggregate}
    )


def _membership(index: FindingsIndex, request: AggregateRequest) -> Membership:
    sql = membership_sql(request.cohort, request.level)
    facts = Facts.from_rows(index.database.query(sql.text, sql.params), 0, request.level)
    return Membership.from_columns(request.level, facts.units, facts.patients)


@pytest.mark.parametrize("level", ["patients", "studies", "series"])
@pytest.mark.parametrize(
    "table", TABLES, ids=lambda t: "x".join(d.get("of", d.get("name")) for d in t)
)
@pytest.mark.parametrize("cohort", COHORTS, ids=range(len(COHORTS)))
def test_fact_rows_and_membership_equal_the_full_queries(
    index: FindingsIndex, cohort: dict[str, Any], level: str, table: list[dict[str, Any]]
) -> None:
    request = table_request(cohort, level, table)
    dimensions = dimensions_of(request)
    sql = facts_sql(request.cohort, request.level, dimensions)
    rows = index.database.query(sql.text, sql.params)
    full_text, full_params = _full_facts_sql(request.cohort, request.level, dimensions)
    assert Counter(rows) == Counter(index.database.query(full_text, full_params))

    expected = _membership(index, request)
    facts = Facts.from_rows(rows, len(dimensions), request.level)
    asked: list[bool] = []

    def query() -> Membership:
        asked.append(True)
        return expected

    found = cohort_membership(request, facts, query)
    for name in ("patients", "units", "unit_patients"):
        assert np.array_equal(getattr(found, name), getattr(expected, name)), name
    # The membership query is saved exactly where the facts are claimed to cover the cohort.
    assert asked == [] if facts_cover_cohort(request.cohort, request.level, dimensions) else [True]


def test_the_shorter_paths_are_taken_where_they_apply() -> None:
    """Sex by age, and the nodules' sizes over a cohort with a nodule of a size, need no
    membership query; two ranges on one finding, or a second finding filter, do."""
    covered = [(1, 1), (0, 1), (2, 2), (3, 3), (1, 0)]
    for cohort, table in covered:
        request = table_request(COHORTS[cohort], "studies", TABLES[table])
        assert facts_cover_cohort(request.cohort, "studies", dimensions_of(request)), (
            cohort,
            table,
        )
    for cohort in (4, 6, 7):
        request = table_request(COHORTS[cohort], "studies", TABLES[2])
        assert not facts_cover_cohort(request.cohort, "studies", dimensions_of(request)), cohort
    request = table_request(COHORTS[2], "studies", TABLES[4])
    assert not facts_cover_cohort(request.cohort, "studies", dimensions_of(request))

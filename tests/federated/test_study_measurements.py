"""A study's smallest and largest values per measurement (issue 19) decide the same cohorts as
the measurements themselves: after intake, after a report is replaced, after an upgrade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.federated import query
from gateway.federated.cohort import Cohort
from gateway.index import FindingsIndex, IndexSettings
from gateway.index.database import Database
from gateway.index.findings_index import SQLITE_FILE_NAME
from tests.federated.synthetic import (
    DIAMETER,
    MASS,
    NODULE,
    SyntheticFinding,
    SyntheticPatient,
    SyntheticStudy,
    write_patients,
)
from tests.federated.test_fact_rows import mixed_patients


def _diameter(**bounds: float) -> dict[str, Any]:
    unit = "cm" if any(v < 3 for v in bounds.values()) else "mm"
    return {"concept": DIAMETER, "unit": unit, **bounds}


FINDING_FILTERS: list[dict[str, Any]] = [
    {"type": NODULE, "measurements": [_diameter(min=8)]},
    {"type": NODULE, "measurements": [_diameter(max=1.0)]},
    {"type": MASS, "measurements": [_diameter(min=20)]},
    {"measurements": [_diameter(min=25.5)]},
    {"type": NODULE, "measurements": [_diameter(max=30)]},
    {"type": NODULE, "presence": "any", "measurements": [_diameter(min=12)]},
    {"type": NODULE, "presence": "absent", "measurements": [_diameter(min=2)]},
    # Not decided by the ranges (both bounds, a version): the measurements' own path.
    {"type": NODULE, "measurements": [_diameter(min=9, max=11)]},
    {"type": NODULE, "algorithm_version": "2.0", "measurements": [_diameter(min=8)]},
]


def _studies(index: FindingsIndex, finding: dict[str, Any]) -> list[tuple[Any, ...]]:
    sql = query.membership_sql(Cohort.model_validate({"findings": [finding]}), "studies")
    return sorted(index.database.query(sql.text, sql.params))


def _by_measurements(
    index: FindingsIndex, finding: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> list[tuple[Any, ...]]:
    """The same cohort through the measurements table, as before issue 19."""
    with monkeypatch.context() as patch:
        patch.setattr(query, "_answered_by_study_ranges", lambda _finding: False)
        return _studies(index, finding)


@pytest.fixture()
def index(tmp_path: Path) -> FindingsIndex:
    index = FindingsIndex.open(IndexSettings(), tmp_path / "site")
    write_patients(index, mixed_patients(23))
    return index


@pytest.mark.parametrize("finding", FINDING_FILTERS, ids=range(len(FINDING_FILTERS)))
def test_ranges_select_the_studies_the_measurements_select(
    index: FindingsIndex, finding: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    found = _studies(index, finding)
    assert found == _by_measurements(index, finding, monkeypatch)
    index.close()


def test_the_ranges_path_is_taken_where_it_decides() -> None:
    decided = [
        query._answered_by_study_ranges(Cohort.model_validate({"findings": [f]}).findings[0])
        for f in FINDING_FILTERS
    ]
    assert decided == [True] * 7 + [False] * 2


def test_a_replaced_report_replaces_its_ranges(tmp_path: Path) -> None:
    """A re-sent SR with smaller nodules: the study leaves "a nodule of 8 mm or more"."""
    index = FindingsIndex.open(IndexSettings(), tmp_path / "site")
    big = SyntheticPatient("R1", "F", [SyntheticStudy(findings=[SyntheticFinding(NODULE, 14.0)])])
    small = SyntheticPatient("R1", "F", [SyntheticStudy(findings=[SyntheticFinding(NODULE, 5.0)])])
    eight = {"type": NODULE, "measurements": [_diameter(min=8)]}
    write_patients(index, [big])
    assert len(_studies(index, eight)) == 1
    write_patients(index, [small])
    assert _studies(index, eight) == []
    assert index.database.query("SELECT low, high FROM study_measurements") == [(5.0, 5.0)]
    index.close()


def test_an_index_of_version_4_gets_its_ranges_on_upgrade(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    data_dir.mkdir()
    old = FindingsIndex.open(IndexSettings(), data_dir)
    write_patients(old, mixed_patients(29))
    expected = {n: _studies(old, f) for n, f in enumerate(FINDING_FILTERS)}
    old.close()
    # Back to version 4: no ranges table, as an index written before issue 19 is.
    database = Database.sqlite(data_dir / SQLITE_FILE_NAME)
    database.execute("DROP TABLE study_measurements")
    database.execute("DELETE FROM fedgate_schema WHERE component = 'index' AND version = 5")
    database.close()
    upgraded = FindingsIndex.open(IndexSettings(), data_dir)
    assert {n: _studies(upgraded, f) for n, f in enumerate(FINDING_FILTERS)} == expected
    assert upgraded.database.query("SELECT COUNT(*) FROM study_measurements")[0][0] > 0
    upgraded.close()

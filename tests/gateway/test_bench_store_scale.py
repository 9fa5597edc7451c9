"""The embedded store at scale (issue 19, items 1 and 5): the generator, paged QIDO-RS, and
``python -m bench.store_scale`` at a tiny size. The figures are docs/benchmarks.md's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.store_scale import MODALITIES, generate_catalog, patient_id, study_uid
from gateway.store.catalog import Catalog
from gateway.store.query import Query, QueryLevel, search

ROOT = Path(__file__).resolve().parents[2]
STUDIES = 300


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path = tmp_path_factory.mktemp("scale") / "catalog.sqlite"
    generate_catalog(path, STUDIES, progress=False)
    return Catalog.open(path)  # as the gateway opens it: every migration applied


def test_the_generated_catalog_holds_ten_instances_a_study(catalog: Catalog) -> None:
    assert catalog.counts()["studies"] == STUDIES
    assert catalog.counts()["instances"] == 10 * STUDIES
    rows = search(catalog, Query(QueryLevel.STUDY))
    assert {row["number_of_study_related_instances"] for row in rows} == {10}
    modalities = Counter(MODALITIES[number % 10] for number in range(STUDIES))
    found = Counter(
        next(m for m in row["modalities_in_study"].split(",") if m != "SR") for row in rows
    )
    assert found == modalities
    mine = search(catalog, Query(QueryLevel.STUDY, matches={"PatientID": patient_id(7, STUDIES)}))
    assert study_uid(7) in {row["study_instance_uid"] for row in mine}


@pytest.mark.parametrize(
    "matches",
    [
        {},
        {"ModalitiesInStudy": "MR"},
        {"StudyDate": "20170101-20201231"},
        {"ModalitiesInStudy": "US", "StudyDate": "20160101-"},
    ],
)
def test_pages_of_studies_are_the_whole_answer_in_order(
    catalog: Catalog, matches: dict[str, str]
) -> None:
    """Limit/offset pages (the page's keys found first, then its attributes and counts: issue
    19) concatenate to the unpaged answer, row for row."""
    whole = search(catalog, Query(QueryLevel.STUDY, matches=dict(matches)))
    assert whole
    pages: list[dict[str, object]] = []
    for offset in range(0, len(whole) + 7, 7):
        pages += search(
            catalog, Query(QueryLevel.STUDY, matches=dict(matches), limit=7, offset=offset)
        )
    assert pages == whole
    dates = [(row["study_date"], row["study_time"], row["study_instance_uid"]) for row in whole]
    assert dates == sorted(dates)


@pytest.mark.slow
@pytest.mark.orthanc
def test_the_benchmark_times_every_question_on_both_servers(tmp_path: Path) -> None:
    def bench() -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-W",
                "ignore",
                "-m",
                "bench.store_scale",
                *("--studies", "200", "--cache", str(tmp_path / "cache")),
                *("--orthanc-instances", "100", "--repeats", "3", "--stow-rounds", "1"),
                *("--read-series", "12", "--stow-instances", "10"),
                *("--crawl", "--page", "50"),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result.stdout

    first = bench()
    assert "generating 200 studies" in first
    for server in ("gateway, 2,", "Orthanc 1.10 (SQLite index), 100 instances"):
        table = first[first.index(f"| {server}") :]
        row = re.compile(r"^\| ([^|]+) \| [0-9.]+ \| [0-9.]+ \| (\d+) \| [0-9.]+ \|$", re.M)
        results = {name: int(count) for name, count in row.findall(table)[:8]}
        assert results["WADO-RS metadata of the 12-instance series"] == 12, table
        assert results["instance search within the 12-instance study"] == 12
        assert results["instance search within a study"] == 10
        assert results["study search by PatientID"] >= 1
        assert results["study search by modality (MR)"] >= 1
    # Every study of the store is crawled: 200 generated, the read one, the STOW-RS ones.
    crawled = re.search(r"QIDO-RS crawl: ([0-9,]+) studies", first)
    assert crawled and int(crawled.group(1).replace(",", "")) == 203
    assert re.search(r"gateway VmHWM \d+ MB before, \d+ MB after", first)
    assert re.search(r"big / empty rate [0-9.]+", first)
    # The read series' first metadata request, from what ingest kept and from the files.
    assert re.search(
        r"first request .* median of 3: [0-9.]+ ms \(p95 [0-9.]+\) from the instances' "
        r"metadata kept at ingest; [0-9.]+ ms \(median of 3\) built from the files",
        first,
    )
    # The catalog is reused, and the benchmark's STOW-RS studies were taken out again.
    second = bench()
    assert "generating" not in second
    assert "QIDO-RS crawl: 203 studies" in second

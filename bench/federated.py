"""Federated query benchmark (issue 6): single-site latency over a large index.

1. An index of ``--studies`` studies (default 100,000, about 0.6 patients per study) and
   ``--findings`` findings (default 1,000,000, each with a diameter), generated straight into a
   SQLite findings index. p50/p95 latency of a count, a histogram and a cross-tab, each over a
   cohort of three filters, through the whole disclosure control as the ``query`` role meets
   it (membership, noise, budget check and charge, answer cache, audit log with fsync); and a
   count as the ``exact`` role meets it (suppression, no noise). The answers read the index's
   columnar copy, as the gateway's do (``--no-columnar``: the index itself). The peer is the
   bare SQL count of the same cohort on the SQLite index (what a site without disclosure
   control would run), and the same count on the copy. The cost of the differential-privacy
   path (OpenDP's noise) and of the budget ledger (check and charge, over a ledger of
   ``--ledger`` earlier answers) are timed on their own too.
2. The hub: over a hundred real sites, in :mod:`bench.hub` (it was here over simulated ones).

Run: ``python -m bench.federated`` (``--studies 20000 --findings 200000`` for a quick run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.federated.cohort import AggregateRequest
from gateway.federated.privacy import NoiseMechanism, PrivacyLedger, Sensitivity
from gateway.federated.query import membership_sql
from gateway.federated.service import Asker, FederatedService
from gateway.federated.settings import DifferentialPrivacySettings, FederatedSettings
from gateway.index import FindingsIndex, IndexSettings
from gateway.index.schema import STUDY_MEASUREMENTS_SELECT

NODULE, MASS, CYST = "SCT:27925004", "SCT:4147007", "SCT:441457006"
DIAMETER = "SCT:81827009"
FINDINGS_PER_CHUNK = 1_000_000


def build_index(
    data_dir: Path, studies: int, findings: int, seed: int = 6, url: str | None = None
) -> FindingsIndex:
    """Random but plausible rows, written straight into the index tables."""
    rng = np.random.default_rng(seed)
    index = FindingsIndex.open(IndexSettings(url=url), data_dir)
    patients = int(studies * 0.6)
    study_patient = rng.integers(0, patients, studies)
    patient_sex = rng.choice(np.array(["F", "M"]), patients)
    patient_birth = rng.integers(1930, 2005, patients)
    study_year = rng.integers(2015, 2025, studies)
    study_date = (
        study_year * 10000 + rng.integers(1, 13, studies) * 100 + rng.integers(1, 29, studies)
    )
    modality = rng.choice(np.array(["CT", "MR", "CR", "US"]), studies, p=[0.5, 0.2, 0.2, 0.1])
    study_rows = [
        (
            s + 1,
            int(study_patient[s]) + 1,
            str(patient_sex[study_patient[s]]),
            int(study_year[s] - patient_birth[study_patient[s]]),
            int(study_date[s]),
            int(study_year[s]),
            int(study_date[s] // 100 % 100),
            "/" + "/".join(sorted([str(modality[s]), "SR"])) + "/",
        )
        for s in range(studies)
    ]
    series_rows: list[tuple[object, ...]] = [
        (s + 1, s + 1, int(study_patient[s]) + 1, str(modality[s]), "CHEST", "Vendor", "Model")
        for s in range(studies)
    ]
    series_rows += [
        (studies + s + 1, s + 1, int(study_patient[s]) + 1, "SR", None, None, None)
        for s in range(studies)
    ]
    finding_study = rng.integers(0, studies, findings)
    finding_type = rng.choice(np.array([NODULE, MASS, CYST]), findings, p=[0.6, 0.25, 0.15])
    diameters = np.round(rng.gamma(2.0, 4.0, findings), 1)
    report_rows = [(s + 1, s + 1, int(study_patient[s]) + 1) for s in range(studies)]
    with index.database.transaction() as cursor:
        cursor.executemany("INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?, ?, ?)", study_rows)
        cursor.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?)", series_rows)
        cursor.executemany("INSERT INTO reports VALUES (?, ?, ?)", report_rows)
    # Findings in chunks, one transaction each: ten million rows as Python tuples at once
    # would take gigabytes.
    for first in range(0, findings, FINDINGS_PER_CHUNK):
        chunk = range(first, min(first + FINDINGS_PER_CHUNK, findings))
        finding_rows = [
            (
                f + 1,
                int(finding_study[f]) + 1,
                int(finding_study[f]) + 1,
                int(study_patient[finding_study[f]]) + 1,
                str(finding_type[f]),
                "SCT:39607008",
                "bench-model",
                "1.0",
            )
            for f in chunk
        ]
        measurement_rows = [
            (
                f + 1,
                int(finding_study[f]) + 1,
                int(study_patient[finding_study[f]]) + 1,
                str(finding_type[f]),
                DIAMETER,
                float(diameters[f]),
                "mm",
            )
            for f in chunk
        ]
        with index.database.transaction() as cursor:
            # Columns named: later schema versions add some (presence, with its default).
            cursor.executemany(
                "INSERT INTO findings (finding_key, report_key, study_key, patient_key, "
                "finding_type, finding_site, algorithm_name, algorithm_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                finding_rows,
            )
            cursor.executemany(
                "INSERT INTO measurements (finding_key, study_key, patient_key, finding_type, "
                "concept, value, unit) VALUES (?, ?, ?, ?, ?, ?, ?)",
                measurement_rows,
            )
        print(f"  {chunk.stop:,} of {findings:,} findings written", file=sys.stderr, flush=True)
    # Written straight into the tables, the findings need their per-study ranges too
    # (FindingsIndex.write refreshes them for the studies it writes).
    index.database.execute("DELETE FROM study_measurements")
    index.database.execute(f"INSERT INTO study_measurements {STUDY_MEASUREMENTS_SELECT}")
    index.database.execute("ANALYZE")
    # Measure a settled index, as a site's is: not one whose 400 MB the kernel is still
    # writing back to disk while the queries run (which cost up to a third more here).
    if index.database.dialect == "sqlite":
        index.database.query("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()
    return index


def open_or_build(
    data_dir: Path, studies: int, findings: int, url: str | None = None
) -> tuple[FindingsIndex, str]:
    """The benchmark's index in ``data_dir``: reused if it holds the sizes asked (generating
    ten million findings takes minutes), else generated. Earlier runs' budget ledger and
    answer cache are cleared, so every timed question is a fresh draw again."""
    index = FindingsIndex.open(IndexSettings(url=url), data_dir)
    counts = index.counts()
    if counts["studies"] == studies and counts["findings"] == findings:
        index.database.execute("DELETE FROM privacy_ledger")
        index.database.execute("DELETE FROM answer_cache")
        return index, "reused"
    if counts["studies"] or counts["findings"]:
        index.close()
        raise SystemExit(
            f"{data_dir} (or --index-url) holds an index of other sizes "
            f"({counts['studies']:,} studies, {counts['findings']:,} findings): "
            "give an empty one"
        )
    index.close()
    started = time.perf_counter()
    index = build_index(data_dir, studies, findings, url=url)
    return index, f"generated in {time.perf_counter() - started:.1f} s"


class Times(list[float]):
    """Wall-clock times in ms, with the CPU time this process spent in each (``cpu``): on a
    machine shared with other work the wall clock waits for a core, the CPU time does not
    (SQLite runs in this process; a PostgreSQL server's own CPU time is not in it)."""

    cpu: list[float]


def _timed(function: Callable[[], Any], repeats: int) -> Times:
    function()  # warm-up (page cache, first plan)
    times = Times()
    times.cpu = []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        function()
        times.append((time.perf_counter() - started) * 1000)
        times.cpu.append((time.process_time() - cpu) * 1000)
    return times


def _p(times: list[float], q: float) -> float:
    return float(np.percentile(times, q))


def single_site(args: argparse.Namespace) -> list[str]:
    lines = []
    with contextlib.ExitStack() as stack:
        folder = args.index_dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="fedgate-bench-")
        )
        index, made = open_or_build(Path(folder), args.studies, args.findings, args.index_url)
        counts = index.counts()
        engine = "PostgreSQL" if args.index_url else "SQLite"
        lines.append(
            f"Index ({engine}): {counts['studies']:,} studies, "
            f"{counts['findings']:,} findings, {made}."
        )
        # As the gateway answers: from the index's columnar copy (embedded index only).
        copy = None if args.no_columnar else index.use_columnar_copy()
        if copy is not None:
            started = time.perf_counter()
            if not copy.wait_until_ready():
                raise SystemExit("the columnar copy of the index was not built (see the log)")
            lines.append(
                f"Columnar copy (DuckDB) ready in {time.perf_counter() - started:.1f} s "
                "(built, or caught up with the index); the answers read it."
            )
        else:
            lines.append("No columnar copy: the answers read the index itself.")
        # Budgets large enough for every timed question to be a fresh, charged answer.
        settings = FederatedSettings(
            dp={"epsilon_per_person": 1e9, "epsilon_per_site": 1e9},
            exact={"max_answers_per_person": 10**9},
        )
        service = FederatedService(index, settings)
        analyst, office = Asker("bench", "bench"), Asker("office", "office", exact=True)
        cohort = {
            "attributes": {"ModalitiesInStudy": "CT", "PatientSex": "F"},
            "findings": [
                {"type": NODULE, "measurements": [{"concept": DIAMETER, "min": 8, "unit": "mm"}]}
            ],
        }
        queries: dict[str, dict[str, Any]] = {
            "count (patients)": {"cohort": cohort},
            "histogram (age, 10 bins)": {
                "cohort": cohort,
                "aggregate": {
                    "kind": "histogram",
                    "by": {"kind": "bins", "of": "age", "start": 0, "stop": 100, "width": 10},
                },
            },
            "cross-tab (sex x age, 10 bins)": {
                "cohort": cohort,
                "aggregate": {
                    "kind": "crosstab",
                    "rows": {"kind": "category", "name": "sex"},
                    "columns": {"kind": "bins", "of": "age", "start": 0, "stop": 100, "width": 10},
                },
            },
            "cross-tab (study year x nodule diameter, studies)": {
                "cohort": cohort,
                "level": "studies",
                "aggregate": {
                    "kind": "crosstab",
                    "rows": {"kind": "category", "name": "study_year"},
                    "columns": {
                        "kind": "bins",
                        "of": "measurement",
                        "concept": DIAMETER,
                        "unit": "mm",
                        "start": 8,
                        "stop": 40,
                        "width": 4,
                    },
                },
            },
        }
        request = AggregateRequest.model_validate(queries["count (patients)"])
        bare = membership_sql(request.cohort, "patients")
        peer = _timed(
            lambda: index.database.query(
                f"SELECT COUNT(DISTINCT unit) FROM ({bare.text}) m", bare.params
            ),
            args.repeats,
        )
        counted = f"SELECT COUNT(DISTINCT unit) FROM ({bare.text}) m"
        on_copy = (
            _timed(lambda: copy.query(counted, bare.params), args.repeats)
            if copy is not None
            else None
        )
        size = service.answer(request, office, "count")["count"]
        lines.append(
            f"Cohort (3 filters: CT study, woman, nodule of 8 mm or more): {size:,} patients."
        )
        lines.append("")
        lines.append("| query | p50 ms | p95 ms | p50 / bare SQL count | CPU p50 ms |")
        lines.append("|---|---|---|---|---|")
        lines.append(
            f"| bare SQL count (peer: no disclosure control) | {_p(peer, 50):.1f} | "
            f"{_p(peer, 95):.1f} | 1.00 | {_p(peer.cpu, 50):.1f} |"
        )
        if on_copy is not None:
            lines.append(
                f"| bare SQL count on the columnar copy | {_p(on_copy, 50):.1f} | "
                f"{_p(on_copy, 95):.1f} | {_p(on_copy, 50) / _p(peer, 50):.2f} | "
                f"{_p(on_copy.cpu, 50):.1f} |"
            )
        load = os.getloadavg()[0]
        fresh = iter(range(10**9))

        def reworded(body: dict[str, Any]) -> AggregateRequest:
            """The same cohort under another wording each time: a fresh draw, charged."""
            cohort = dict(body["cohort"])
            cohort["attributes"] = {**cohort["attributes"], "PatientAge": f"0-{200 + next(fresh)}"}
            return AggregateRequest.model_validate({**body, "cohort": cohort})

        timed: dict[str, Times] = {}
        for name, body in queries.items():

            def ask(body: dict[str, Any] = body) -> Any:
                return service.answer(reworded(body), analyst, "bench")

            def ask_exact(body: dict[str, Any] = body) -> Any:
                return service.answer(AggregateRequest.model_validate(body), office, "bench")

            timed[f"{name}, noisy"] = _timed(ask, args.repeats)
            timed[f"{name}, exact role (suppression, no noise)"] = _timed(ask_exact, args.repeats)
        timed["count (patients), noisy, asked again (cached draw)"] = _timed(
            lambda: service.answer(request, analyst, "count"), args.repeats
        )
        for name, times in timed.items():
            lines.append(
                f"| {name} | {_p(times, 50):.1f} | {_p(times, 95):.1f} | "
                f"{_p(times, 50) / _p(peer, 50):.2f} | {_p(times.cpu, 50):.1f} |"
            )
        lines.append(
            f"\nLoad average (1 min) of the machine before / after the timings: {load:.1f} / "
            f"{os.getloadavg()[0]:.1f} (cores: {os.cpu_count()})."
        )
        lines.extend(["", *privacy_costs(index, args)])
        index.close()
    return lines


def privacy_costs(index: FindingsIndex, args: argparse.Namespace) -> list[str]:
    """What the DP path and the budget ledger add to one answer, timed on their own."""
    settings = DifferentialPrivacySettings(epsilon_per_person=1e9, epsilon_per_site=1e9)
    noise = NoiseMechanism(settings)
    one = Sensitivity(1, 1.0, 1.0)
    laplace = _timed(lambda: noise.release([1234.0], one, 0.75), args.repeats)
    cells = _timed(lambda: noise.release([100.0] * 11, one, 0.75), args.repeats)
    keys = {f"SCT:{n}": 50.0 for n in range(20)}
    threshold = _timed(
        lambda: noise.release_open(keys, Sensitivity(5, 1.0, 5.0), 0.75), args.repeats
    )
    ledger = PrivacyLedger(index.database, settings)
    index.database.execute("DELETE FROM privacy_ledger")
    for number in range(args.ledger):
        ledger.charge(f"person-{number % 50}", 0.75, 0.0, f"key-{number}")
    charged = iter(range(10**9))

    def check_and_charge() -> None:
        ledger.check("person-7", 0.75)
        ledger.charge("person-7", 0.75, 0.0, f"bench-{next(charged)}")

    budget = _timed(check_and_charge, args.repeats)
    return [
        f"Costs of the privacy layer alone ({args.ledger:,} earlier answers in the ledger):",
        "",
        "| step | p50 ms | p95 ms |",
        "|---|---|---|",
        f"| OpenDP Laplace noise, one count | {_p(laplace, 50):.2f} | {_p(laplace, 95):.2f} |",
        f"| OpenDP Laplace noise, 11 cells | {_p(cells, 50):.2f} | {_p(cells, 95):.2f} |",
        "| OpenDP threshold mechanism, 20 open values (threshold searched) | "
        f"{_p(threshold, 50):.2f} | {_p(threshold, 95):.2f} |",
        f"| budget ledger: check and charge | {_p(budget, 50):.2f} | {_p(budget, 95):.2f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="Federated query benchmark (issue 6)")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--findings", type=int, default=1_000_000)
    parser.add_argument(
        "--ledger", type=int, default=10_000, help="earlier answers in the budget ledger"
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--index-url",
        help="a PostgreSQL database, empty or holding this benchmark's index (default: SQLite)",
    )
    parser.add_argument(
        "--index-dir",
        help="a folder kept between runs (e.g. /work/cache/index-1m): the index is generated "
        "there once and reused by later runs of the same sizes (default: a temporary folder)",
    )
    parser.add_argument(
        "--no-columnar",
        action="store_true",
        help="answer from the index itself, without its columnar copy (the gateway's default)",
    )
    # The hub is measured by bench.hub now; the flag stays for the commands in the docs.
    parser.add_argument("--no-hub", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    print("\n".join(single_site(args)))


if __name__ == "__main__":
    main()

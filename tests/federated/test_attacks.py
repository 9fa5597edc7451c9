"""The attacks of issue 6, each against a real site over HTTP: each must fail."""

from __future__ import annotations

import json
import statistics

import pytest

from gateway.federated.audit import AUDIT_FILE_NAME, read_audit_log
from tests.federated.conftest import OTHER_QUERY_TOKEN, Site, SiteFactory
from tests.federated.synthetic import (
    DIAMETER,
    MASS,
    NODULE,
    SyntheticFinding,
    SyntheticPatient,
    SyntheticStudy,
    write_patients,
)

SUPPRESSED = {"count": None, "suppressed": True, "bound": "<10"}


def _count_fields(body: dict[str, object]) -> dict[str, object]:
    return {k: body[k] for k in ("count", "suppressed", "bound") if k in body}


def test_a_cohort_narrowed_to_one_patient_is_suppressed(site: Site) -> None:
    response = site.get({"PatientAge": "91", "ModalitiesInStudy": "MR"})
    assert response.status_code == 200
    assert _count_fields(response.json()) == SUPPRESSED


def test_eleven_studies_of_one_patient_are_one_patient(site: Site) -> None:
    # The MULTI patient has 11 studies: 11 studies, but 1 patient behind the cell.
    response = site.get({"level": "studies", "PatientAge": "45"})
    assert _count_fields(response.json()) == SUPPRESSED


def test_counts_of_one_to_nine_and_of_zero_look_the_same(make_site: SiteFactory) -> None:
    for size in (0, 1, 5, 9):
        patients = [SyntheticPatient(f"P{i}", "F", [SyntheticStudy(age=70)]) for i in range(size)]
        patients += [SyntheticPatient(f"Q{i}", "M", [SyntheticStudy(age=40)]) for i in range(20)]
        site = make_site(patients, name=f"site-{size}")
        response = site.get({"PatientSex": "F"})
        assert response.status_code == 200
        assert _count_fields(response.json()) == SUPPRESSED, size
    # ... while ten are a count.
    patients = [SyntheticPatient(f"P{i}", "F", [SyntheticStudy(age=70)]) for i in range(10)]
    assert make_site(patients, name="site-10").get({"PatientSex": "F"}).json()["count"] == 10


def test_subtracting_two_totals_is_refused_within_and_across_clients(site: Site) -> None:
    all_women = site.get({"PatientSex": "F"})
    assert all_women.json()["count"] == 31  # 30 women in their sixties and LONER
    # All women but LONER: count(F) - count(F, 60-69) would be LONER.
    narrowed = site.get({"PatientSex": "F", "PatientAge": "60-69"})
    assert narrowed.status_code == 403
    assert "fewer than 10 patients" in narrowed.json()["error"]
    # A second client (colluding) gets no further.
    assert (
        site.get({"PatientSex": "F", "PatientAge": "60-69"}, token=OTHER_QUERY_TOKEN).status_code
        == 403
    )
    # Nor does a rewording that selects the same patients as before (0 looks like 1-9).
    assert site.get({"PatientSex": "F", "PatientAge": "0-120"}).status_code == 403
    # The very same question again is answered (and is the same number).
    assert site.get({"PatientSex": "F"}).json()["count"] == 31


def test_subtracting_across_time_is_refused(site: Site) -> None:
    assert site.get({"PatientSex": "M"}).json()["count"] == 26
    # Three new men arrive; the same question now would disclose them.
    write_patients(site.index, [SyntheticPatient(f"NEW{i}", "M") for i in range(3)])
    assert site.get({"PatientSex": "M"}).status_code == 403
    # Once at least 10 more have arrived, it is a different population: answered.
    write_patients(site.index, [SyntheticPatient(f"MORE{i}", "M") for i in range(10)])
    assert site.get({"PatientSex": "M"}).json()["count"] == 39


def test_a_suppressed_cell_cannot_be_recovered_from_the_total(site: Site) -> None:
    # Age histogram of women: 30 in 60-69 (3 per year), LONER alone in 90-99.
    response = site.post(
        {
            "cohort": {"attributes": {"PatientSex": "F"}},
            "aggregate": {
                "kind": "histogram",
                "by": {"kind": "bins", "of": "age", "start": 60, "stop": 100, "width": 10},
            },
        }
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"]["count"] == 31
    cells = {
        c["value"]["low"] if isinstance(c["value"], dict) else c["value"]: c for c in body["cells"]
    }
    assert cells[90.0]["suppressed"] is True  # LONER's cell, primary suppression
    assert "(outside)" in cells  # ages outside the bins are a cell too
    suppressed = [low for low, c in cells.items() if c.get("suppressed")]
    assert len(suppressed) >= 2, "one lone suppressed cell = total minus the others"
    released = sum(c["count"] for c in cells.values() if not c.get("suppressed"))
    assert body["total"]["count"] - released >= 10


def test_sex_histogram_zero_cell_is_suppressed_like_a_small_one(site: Site) -> None:
    response = site.post(
        {"aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "sex"}}}
    )
    cells = {c["value"]: c for c in response.json()["cells"]}
    assert set(cells) == {"F", "M", "O"}
    assert cells["O"] == {"value": "O", "count": None, "suppressed": True}  # nobody: like 1-9
    # A cell suppressed only to protect another looks exactly like a small one.
    assert {
        json.dumps({k: v for k, v in c.items() if k != "value"})
        for c in cells.values()
        if c.get("suppressed")
    } == {json.dumps({"count": None, "suppressed": True})}
    # ...and not recoverable as total - F - M.
    assert sum(1 for c in cells.values() if c.get("suppressed")) >= 2


def test_a_rare_finding_type_is_not_revealed_by_its_presence(site: Site) -> None:
    # Only LONER has a mass: no cell named after it, it is inside "(other)".
    response = site.post(
        {"aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "finding_type"}}}
    )
    values = [c["value"] for c in response.json()["cells"]]
    assert MASS not in values
    assert "(other)" in values and NODULE in values


def test_averaging_100_repeats_of_a_dp_query_gains_nothing(make_site: SiteFactory) -> None:
    site = make_site(
        dp={"enabled": True, "epsilon_per_query": 0.1, "epsilon_budget_per_client": 1.0}
    )
    answers = [site.get({"PatientSex": "F"}).json()["count"] for _ in range(100)]
    assert len(set(answers)) == 1, "every repeat must return the first noisy draw"
    # The mean of the repeats is just the one draw: no averaging towards the truth.
    assert statistics.mean(answers) == answers[0]
    budget = (
        __import__("httpx")
        .get(f"{site.url}/budget", headers={"Authorization": "Bearer query-token-for-tests"})
        .json()
    )
    assert budget["epsilon_spent"] == pytest.approx(0.1)  # charged once
    # Another client asking the same question gets the same draw, not a fresh one.
    assert site.get({"PatientSex": "F"}, token=OTHER_QUERY_TOKEN).json()["count"] == answers[0]
    # A reworded question with the same patients buys no fresh draw either.
    assert site.get({"PatientSex": "F", "ModalitiesInStudy": "CT"}).status_code == 403


def test_dp_noise_is_real_noise(make_site: SiteFactory) -> None:
    # Distinct cohorts, each at least 10 patients apart: each a fresh draw around the truth.
    patients = [SyntheticPatient(f"P{i}", "F", [SyntheticStudy(age=i % 100)]) for i in range(400)]
    site = make_site(
        patients, dp={"enabled": True, "epsilon_per_query": 0.5, "epsilon_budget_per_client": 100.0}
    )
    errors = []
    for low in range(0, 100, 5):
        truth = 4 * 5  # five ages, four patients each
        answer = site.get({"PatientAge": f"{low}-{low + 4}"}).json()
        errors.append(answer["count"] - truth)
    assert any(e != 0 for e in errors), "no noise at all"
    assert max(abs(e) for e in errors) < 40  # Laplace(scale 2): 20 sigmas would be absurd


def test_spending_past_the_budget_is_refused_and_survives_a_restart(
    make_site: SiteFactory,
) -> None:
    patients = [
        SyntheticPatient(f"P{i}", "F", [SyntheticStudy(age=20 + i // 10)]) for i in range(100)
    ]
    dp = {"enabled": True, "epsilon_per_query": 1.0, "epsilon_budget_per_client": 3.0}
    site = make_site(patients, dp=dp)
    for age in ("20-21", "22-23", "24-25"):
        assert site.get({"PatientAge": age}).status_code == 200
    refused = site.get({"PatientAge": "26-27"})
    assert refused.status_code == 403
    assert "privacy budget spent" in refused.json()["error"]
    # The ledger is in the index database, not in memory: a new server sees it.
    site.server.stop()
    again = make_site([], name="site", dp=dp)  # same data_dir, same database
    assert again.get({"PatientAge": "28-29"}).status_code == 403
    assert again.get({"PatientAge": "28-29"}, token=OTHER_QUERY_TOKEN).status_code == 200


@pytest.mark.parametrize("name", ["includefield", "limit", "offset"])
def test_row_level_parameters_are_refused(site: Site, name: str) -> None:
    response = site.get({name: "PatientID"})
    assert response.status_code == 400
    assert response.json()["field"] == name


def test_row_data_cannot_be_asked_for_in_json(site: Site) -> None:
    response = site.post({"includefield": ["PatientID"], "aggregate": {"kind": "count"}})
    assert response.status_code == 400
    assert response.json()["field"] == "includefield"
    response = site.post({"aggregate": {"kind": "rows"}})
    assert response.status_code == 400


def test_every_question_is_audited(site: Site) -> None:
    site.get({"PatientSex": "F"})
    site.get({"PatientSex": "F", "PatientAge": "60-69"})  # refused
    site.get({"PatientID": "F001"})  # invalid: refused before the service sees it
    width = {"kind": "bins", "of": "age", "start": 0, "stop": 100, "width": 5e-324}
    site.post({"aggregate": {"kind": "histogram", "by": width}})
    entries = list(read_audit_log(site.index.data_dir / AUDIT_FILE_NAME))
    assert [e["status"] for e in entries] == ["answered", "refused", "invalid", "invalid"]
    assert entries[0]["client"] == "researcher"
    assert entries[0]["answer"]["count"] == 31
    assert entries[0]["epsilon_spent"] == 0.0
    assert "fewer than 10" in entries[1]["reason"]
    assert [(e["endpoint"], e["field"]) for e in entries[2:]] == [
        ("count", "PatientID"),
        ("aggregate", "aggregate.histogram.by.bins.width"),
    ]
    assert {e["client"] for e in entries} == {"researcher"}
    assert "F001" not in json.dumps(entries)


def test_measurement_filters_convert_units(site: Site) -> None:
    # Nodules of at least 8 mm: women with diameter 4+i%10 >= 8 -> i%10 in 4..9 -> 18 women;
    # men 6+i%8 >= 8 for i<20 -> i in 2..7, 10..15, 18, 19 -> 14 men. Asked in centimetres.
    in_cm = site.get({"finding": NODULE, "measurement": f"{DIAMETER}:0.8-:cm"})
    assert in_cm.json()["count"] == 32
    in_mm = site.post(
        {
            "cohort": {
                "findings": [
                    {
                        "type": NODULE,
                        "measurements": [{"concept": DIAMETER, "min": 8, "unit": "mm"}],
                    }
                ]
            },
            "level": "studies",
        }
    )
    assert in_mm.json()["count"] == 32


def test_findings_filter_on_the_same_finding(make_site: SiteFactory) -> None:
    # A study with a 5 mm nodule and a 20 mm mass has no nodule over 10 mm.
    patients = [
        SyntheticPatient(
            f"P{i}",
            "F",
            [
                SyntheticStudy(
                    findings=[SyntheticFinding(NODULE, 5.0), SyntheticFinding(MASS, 20.0)]
                )
            ],
        )
        for i in range(12)
    ]
    site = make_site(patients)
    body = site.get({"finding": NODULE, "measurement": f"{DIAMETER}:10-:mm"}).json()
    assert body == {**body, **SUPPRESSED}


def test_the_guard_forgets_cohorts_older_than_its_window(make_site: SiteFactory) -> None:
    site = make_site(differencing={"window_days": 1e-5})  # about one second
    assert site.get({"PatientSex": "F"}).json()["count"] == 31
    assert site.get({"PatientSex": "F", "PatientAge": "60-69"}).status_code == 403
    import time

    time.sleep(1.2)
    # Outside the window (a site's documented choice), the earlier cohort no longer counts.
    assert site.get({"PatientSex": "F", "PatientAge": "60-69"}).json()["count"] == 30
    rows = site.index.database.query("SELECT COUNT(*) FROM query_history")
    assert rows[0][0] == 1


def test_near_identical_questions_sent_at_once_do_not_both_pass(site: Site) -> None:
    from concurrent.futures import ThreadPoolExecutor

    questions = [{"PatientSex": "F"}, {"PatientSex": "F", "PatientAge": "60-69"}] * 10
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(site.get, questions))
    answered = {
        json.dumps(q, sort_keys=True)
        for q, r in zip(questions, responses, strict=True)
        if r.status_code == 200
    }
    assert len(answered) == 1, "both cohorts answered: their difference is one patient"


def _age_histogram(site: Site, stop: int, width: int) -> dict[object, dict[str, object]]:
    body = site.post(
        {
            "aggregate": {
                "kind": "histogram",
                "by": {"kind": "bins", "of": "age", "start": 60, "stop": stop, "width": width},
            }
        }
    )
    assert body.status_code == 200, body.text
    return {
        c["value"]["low"] if isinstance(c["value"], dict) else c["value"]: c
        for c in body.json()["cells"]
    }


def test_shifted_bins_cannot_be_subtracted(make_site: SiteFactory) -> None:
    # 30 patients aged 60-69 (three of each age) and 15 in their eighties.
    patients = [
        SyntheticPatient(f"S{i}", "F", [SyntheticStudy(age=60 + i % 10)]) for i in range(30)
    ]
    patients += [
        SyntheticPatient(f"E{i}", "M", [SyntheticStudy(age=80 + i % 10)]) for i in range(15)
    ]
    site = make_site(patients)
    one_bin = _age_histogram(site, 70, 10)
    assert one_bin[60.0]["count"] == 30 and one_bin["(outside)"]["count"] == 15
    # One bin [60, 69) would hold 27 (and "(outside)" 18): the three aged 69 by subtraction.
    # Its cell is too close to the [60, 70) cell released before: withheld, and the other
    # cell with it (a lone suppressed cell is total minus the rest).
    shifted = _age_histogram(site, 69, 9)
    assert shifted[60.0]["suppressed"] is True and shifted["(outside)"]["suppressed"] is True
    # The same bins again are the same question: answered as before.
    assert _age_histogram(site, 70, 10)[60.0]["count"] == 30
    # And the same cell asked as a count is the same question too.
    assert site.get({"PatientAge": "60-69"}).json()["count"] == 30


def test_a_cell_equal_to_an_earlier_count_is_the_same_question(site: Site) -> None:
    assert site.get({"PatientSex": "F"}).json()["count"] == 31
    body = site.post(
        {"aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "sex"}}}
    ).json()
    cells = {c["value"]: c for c in body["cells"]}
    assert cells["F"]["count"] == 31  # not withheld: it is "PatientSex=F" again


def test_overlapping_cells_of_one_answer_are_not_both_released(make_site: SiteFactory) -> None:
    # 20 patients have a nodule and a mass, 2 only a nodule: nodule - mass = 2 patients.
    both = [SyntheticFinding(NODULE, 5.0), SyntheticFinding(MASS, 20.0)]
    patients = [SyntheticPatient(f"B{i}", "F", [SyntheticStudy(findings=both)]) for i in range(20)]
    patients += [
        SyntheticPatient(f"N{i}", "F", [SyntheticStudy(findings=[SyntheticFinding(NODULE, 5.0)])])
        for i in range(2)
    ]
    # And 15 with rarer findings (five kinds, three each): an "(other)" big enough to release,
    # so that complementary suppression alone would release both cells above.
    patients += [
        SyntheticPatient(
            f"R{i}", "F", [SyntheticStudy(findings=[SyntheticFinding(f"SCT:10000{i % 5}", 5.0)])]
        )
        for i in range(15)
    ]
    site = make_site(patients)
    body = site.post(
        {"aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "finding_type"}}}
    ).json()
    cells = {c["value"]: c for c in body["cells"]}
    released = [v for v in (NODULE, MASS) if v in cells and not cells[v].get("suppressed")]
    assert len(released) <= 1, body

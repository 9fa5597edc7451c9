"""The attacks of issues 6 and 14, each against a real site over HTTP: each must fail.

The first part attacks the ``exact`` role (the site's research office): minimum cell size,
complementary suppression and rare categories are its defences. The second attacks the
``query`` role, answered with noise: refusals that depend on the data, repeats, rewordings,
before-and-after, trackers and several credentials of one person must buy nothing.
"""

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
    diameter_summary,
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


def test_invalid_questions_are_audited_with_the_field(site: Site) -> None:
    site.get({"PatientID": "F001"})  # invalid: refused before the service sees it
    width = {"kind": "bins", "of": "age", "start": 0, "stop": 100, "width": 5e-324}
    site.post({"aggregate": {"kind": "histogram", "by": width}})
    entries = list(read_audit_log(site.index.data_dir / AUDIT_FILE_NAME))
    assert [e["status"] for e in entries] == ["invalid", "invalid"]
    assert [(e["endpoint"], e["field"]) for e in entries] == [
        ("count", "PatientID"),
        ("aggregate", "aggregate.histogram.by.bins.width"),
    ]
    assert {e["client"] for e in entries} == {"research-office"}
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


def test_other_is_sized_by_distinct_patients(make_site: SiteFactory) -> None:
    """Three patients with eight rare finding types each: their "(other)" holds three
    patients, not 24 patient-types, and is suppressed."""
    rare = [SyntheticFinding(f"SCT:2000{n}", 5.0) for n in range(8)]
    patients = [SyntheticPatient(f"R{i}", "F", [SyntheticStudy(findings=rare)]) for i in range(3)]
    patients += [
        SyntheticPatient(f"N{i}", "M", [SyntheticStudy(findings=[SyntheticFinding(NODULE, 5.0)])])
        for i in range(30)
    ]
    site = make_site(patients)
    body = site.post(
        {"aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "finding_type"}}}
    ).json()
    cells = {c["value"]: c for c in body["cells"]}
    assert cells["(other)"]["suppressed"] is True
    assert not any(f"SCT:2000{n}" in json.dumps(body) for n in range(8))


def test_a_rare_category_is_never_a_column_label(make_site: SiteFactory) -> None:
    """A finding type held by three patients, spread over both sexes so that summed over
    the rows it reaches ten cells' worth, is never named in a cross-tab's header."""
    patients = [
        SyntheticPatient(
            f"P{i}",
            "F" if i % 2 else "M",
            [SyntheticStudy(findings=[SyntheticFinding(NODULE, 5.0), SyntheticFinding(MASS, 9.0)])]
            if i < 3
            else [SyntheticStudy(findings=[SyntheticFinding(NODULE, 5.0)])],
        )
        for i in range(40)
    ]
    site = make_site(patients, min_cell_size=4)
    body = site.post(
        {
            "level": "studies",
            "aggregate": {
                "kind": "crosstab",
                "rows": {"kind": "category", "name": "sex"},
                "columns": {"kind": "category", "name": "finding_type"},
            },
        }
    ).json()
    assert MASS not in json.dumps(body)


# -- the query role: noise, and nothing else that depends on the data -------------------------

TARGET = SyntheticPatient(
    "TARGET",
    "F",
    [SyntheticStudy(age=91, modalities=("CT", "MR"), findings=[SyntheticFinding(MASS, 31.0)])],
)

#: The probes of issue 14: a reference cohort, near-duplicates, rewordings, a cohort of one,
#: shifted bins, clamps moved to find a minimum or maximum, rare categories.
PROBES: list[dict[str, object]] = [
    {"cohort": {"attributes": {"PatientSex": "F"}}},
    {"cohort": {"attributes": {"PatientSex": "F", "PatientAge": "60-69"}}},
    {"cohort": {"attributes": {"PatientSex": "F", "PatientAge": "0-120"}}},
    {"cohort": {"attributes": {"PatientSex": "F", "ModalitiesInStudy": "CT"}}},
    {"cohort": {"attributes": {"PatientAge": "91", "ModalitiesInStudy": "MR"}}},
    {"cohort": {"findings": [{"type": MASS}]}},
    {"aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "sex"}}},
    {
        "aggregate": {
            "kind": "histogram",
            "by": {"kind": "bins", "of": "age", "start": 30, "stop": 100, "width": 10},
        }
    },
    {
        "aggregate": {
            "kind": "histogram",
            "by": {"kind": "bins", "of": "age", "start": 31, "stop": 101, "width": 10},
        }
    },
    {"aggregate": {"kind": "histogram", "by": {"kind": "category", "name": "modality"}}},
    {"aggregate": diameter_summary(0, 31)},
    {"aggregate": diameter_summary(0, 30.999)},
    {"aggregate": {"kind": "summary", "of": "age", "lower": 0, "upper": 95}},
    {"level": "studies", "cohort": {"attributes": {"PatientSex": "O"}}},
]


def _shape(value: object) -> object:
    """What an answer says apart from its numbers: keys, and the labels of fixed tables."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("count", "interval")}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__ if isinstance(value, int | float) else value


def test_no_status_message_or_header_depends_on_the_data(make_site: SiteFactory) -> None:
    """Two sites that differ by one patient, asked the same questions by the same analyst,
    until the budget is spent: every status, message, header name and answer shape is the
    same; only the noisy numbers (and the open tables' noisy lists) may differ."""
    from tests.federated.conftest import QUERY_TOKEN, standard_cohort

    dp = {"epsilon_per_query": 1.0, "epsilon_per_person": 10.0}
    without = make_site(standard_cohort(), name="without", dp=dp)
    with_target = make_site([*standard_cohort(), TARGET], name="with", dp=dp)
    statuses = []
    for probe in [*PROBES, *PROBES[:3]]:
        answers = [site.post(probe, token=QUERY_TOKEN) for site in (without, with_target)]
        first, second = answers
        statuses.append(first.status_code)
        assert first.status_code == second.status_code, probe
        assert set(first.headers) == set(second.headers), probe
        if first.status_code != 200:
            assert first.json() == second.json(), probe  # the same refusal, word for word
            continue
        one, two = first.json(), second.json()
        one["budget"].pop("person", None), two["budget"].pop("person", None)
        assert _shape(one) == _shape(two), probe
    # The budget ran out at the same question on both sites (the eleventh new one), and the
    # repeats at the end were still answered, free, with the draws released before.
    assert statuses == [200] * 10 + [403] * 4 + [200] * 3


def test_repeats_return_one_draw_and_rewordings_are_charged(make_site: SiteFactory) -> None:
    import httpx

    from tests.federated.conftest import QUERY_TOKEN

    site = make_site(dp={"epsilon_per_query": 0.1, "epsilon_per_person": 1.0})
    answers = [site.get({"PatientSex": "F"}, token=QUERY_TOKEN).json()["count"] for _ in range(100)]
    assert len(set(answers)) == 1, "every repeat must return the first noisy draw"
    assert statistics.mean(answers) == answers[0]  # no averaging towards the truth
    headers = {"Authorization": f"Bearer {QUERY_TOKEN}"}
    budget = httpx.get(f"{site.url}/budget", headers=headers).json()
    assert budget["epsilon_spent"] == pytest.approx(0.1)  # charged once
    # Another person asking the same question gets the same draw, free.
    other = site.get({"PatientSex": "F"}, token=OTHER_QUERY_TOKEN).json()
    assert other["count"] == answers[0] and other["privacy"]["epsilon"] == 0
    # A reworded question with the same patients is a fresh draw, and charged: averaging
    # rewordings costs budget, which is what the epsilon bound accounts for.
    reworded = site.get({"PatientSex": "F", "PatientAge": "0-150"}, token=QUERY_TOKEN).json()
    assert reworded["privacy"]["epsilon"] == 0.1 and reworded["privacy"]["cached"] is False
    assert httpx.get(f"{site.url}/budget", headers=headers).json()["epsilon_spent"] == 0.2


def test_before_and_after_new_data_gets_the_same_draw(make_site: SiteFactory) -> None:
    from tests.federated.conftest import QUERY_TOKEN

    site = make_site()
    before = site.get({"PatientSex": "M"}, token=QUERY_TOKEN)
    write_patients(site.index, [SyntheticPatient("NEW", "M")])
    after = site.get({"PatientSex": "M"}, token=QUERY_TOKEN)
    # Within the period the question is answered with the draw released before: nothing
    # is refused, and nothing tells whether the newcomer is there.
    assert before.status_code == after.status_code == 200
    assert before.json()["count"] == after.json()["count"]


def test_a_tracker_learns_only_noise(make_site: SiteFactory) -> None:
    """total - women - men = the one patient of unknown sex, exactly, without noise; with
    it, the difference's interval is wider than the one patient it would show."""
    from tests.federated.conftest import QUERY_TOKEN

    patients = [SyntheticPatient(f"P{i}", "F" if i % 2 else "M") for i in range(40)]
    site = make_site([*patients, SyntheticPatient("ODD", "O")])
    answers = [
        site.get(params, token=QUERY_TOKEN).json()
        for params in ({}, {"PatientSex": "F"}, {"PatientSex": "M"})
    ]
    difference = answers[0]["count"] - answers[1]["count"] - answers[2]["count"]
    half_widths = [(a["interval"][1] - a["interval"][0]) / 2 for a in answers]
    assert sum(h * h for h in half_widths) ** 0.5 > 3  # a 95 % interval of +-3 or more
    assert all(a["privacy"]["epsilon"] > 0 for a in answers)  # every answer was charged
    del difference


def test_spending_past_the_budget_is_refused_and_survives_a_restart(
    make_site: SiteFactory,
) -> None:
    from tests.federated.conftest import QUERY_TOKEN

    patients = [
        SyntheticPatient(f"P{i}", "F", [SyntheticStudy(age=20 + i // 10)]) for i in range(100)
    ]
    dp = {"epsilon_per_query": 1.0, "epsilon_per_person": 3.0}
    site = make_site(patients, dp=dp)
    for age in ("20-21", "22-23", "24-25"):
        assert site.get({"PatientAge": age}, token=QUERY_TOKEN).status_code == 200
    refused = site.get({"PatientAge": "26-27"}, token=QUERY_TOKEN)
    assert refused.status_code == 403
    assert "privacy budget spent" in refused.json()["error"]
    # The ledger is in the index database, not in memory: a new server sees it.
    site.server.stop()
    again = make_site([], name="site", dp=dp)  # same data_dir, same database
    assert again.get({"PatientAge": "28-29"}, token=QUERY_TOKEN).status_code == 403
    assert again.get({"PatientAge": "28-29"}, token=OTHER_QUERY_TOKEN).status_code == 200


def test_every_question_is_audited_with_its_person_and_cost(make_site: SiteFactory) -> None:
    from tests.federated.conftest import QUERY_TOKEN

    site = make_site(dp={"epsilon_per_query": 1.0, "epsilon_per_person": 1.0})
    site.get({"PatientSex": "F"}, token=QUERY_TOKEN)
    site.get({"PatientSex": "F", "PatientAge": "60-69"}, token=QUERY_TOKEN)  # budget spent
    site.get({"PatientSex": "F"})  # the research office: exact
    entries = list(read_audit_log(site.index.data_dir / AUDIT_FILE_NAME))
    assert [e["status"] for e in entries] == ["answered", "refused", "answered"]
    assert [e["mode"] for e in entries] == ["dp", "dp", "exact"]
    assert entries[0]["client"] == "researcher" and entries[0]["epsilon_spent"] == 1.0
    assert "budget" in entries[1]["reason"] and entries[1]["epsilon_spent"] == 0.0
    assert entries[2]["answer"]["count"] == 31


def test_a_credential_without_a_federated_role_is_refused_and_audited(
    make_site: SiteFactory,
) -> None:
    from gateway.auth import AuthClient, AuthSettings
    from tests.federated.conftest import sha256

    scrape = "scrape-token"
    auth = AuthSettings(
        clients=[AuthClient(name="prometheus", token_sha256=sha256(scrape), roles=["metrics"])]
    )
    site = make_site(auth=auth)
    refused = site.get({"PatientSex": "F"}, token=scrape)
    assert refused.status_code == 403 and "role" in refused.json()["error"]
    (entry,) = read_audit_log(site.index.data_dir / AUDIT_FILE_NAME)
    assert (entry["status"], entry["client"], entry["endpoint"]) == (
        "refused",
        "prometheus",
        "count",
    )


def test_property_no_status_message_or_header_depends_on_one_patient(
    make_site: SiteFactory,
) -> None:
    """Any question (hypothesis draws cohorts, levels and aggregates), asked of two sites that
    differ by one patient: the same status, the same refusal text, the same header names and
    the same answer shape; only the noisy numbers (and open categories' noisy lists) differ."""
    from hypothesis import HealthCheck, given, settings

    from tests.federated.conftest import QUERY_TOKEN, standard_cohort
    from tests.federated.test_no_identifiers import requests

    dp = {"epsilon_per_person": 1e6, "epsilon_per_site": 1e6}
    without = make_site(standard_cohort(), name="p-without", dp=dp)
    with_target = make_site([*standard_cohort(), TARGET], name="p-with", dp=dp)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(requests())
    def check(request: dict[str, object]) -> None:
        first, second = (site.post(request, token=QUERY_TOKEN) for site in (without, with_target))
        assert first.status_code == second.status_code, request
        assert set(first.headers) == set(second.headers), request
        if first.status_code != 200:
            assert first.json() == second.json(), request
            return
        one, two = first.json(), second.json()
        for answer in (one, two):
            answer["budget"].pop("epsilon_spent"), answer["budget"].pop("epsilon_remaining")
            answer["budget"].pop("site_epsilon_remaining")
            answer.pop("cells", None)  # an open category's listed values are noisy
        assert _shape(one) == _shape(two), request

    check()

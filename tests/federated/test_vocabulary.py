"""The vocabulary a cohort builder offers (``GET /vocabulary``), at a site for both roles and
through a hub; the hub's ``/budget`` and ``/cost``. Real servers over real sockets, the hub as
a real ``fedgate hub`` process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.federated.conftest import EXACT_TOKEN, QUERY_TOKEN, Site, SiteFactory
from tests.federated.synthetic import (
    DIAMETER,
    LUNG,
    MALIGNANCY,
    MASS,
    NODULE,
    SUSPICIOUS,
    SyntheticFinding,
    SyntheticPatient,
    SyntheticStudy,
)
from tests.federated.test_hub import HUB_TOKEN, Sites, hub_process, site_patients
from tests.federated.test_no_identifiers import identifier_shaped
from tests.support.ports import free_port

SMOKING = "LN:72166-2"
SMOKER = "SCT:77176002"
RARE_MANUFACTURER = "Rare Scanners Ltd"


def vocabulary_patients(common: int, rare: int) -> list[SyntheticPatient]:
    """``common`` women with a CT of the chest, a nodule of the lung with a diameter (the
    first half suspicious) and a clinical report (an LVEF, smoking); ``rare`` men with
    values nobody else has: an MR of the head from another manufacturer, with a mass."""
    patients = []
    for i in range(common):
        nodule = SyntheticFinding(
            NODULE,
            diameter_mm=5.0 + i % 10,
            qualitative=((MALIGNANCY, SUSPICIOUS),) if i % 2 else (),
            site=LUNG,
        )
        clinical = SyntheticFinding(None, qualitative=((SMOKING, SMOKER),), site=None)
        patients.append(
            SyntheticPatient(
                f"F{i:03d}", "F", [SyntheticStudy(age=50 + i % 30, findings=[nodule, clinical])]
            )
        )
    for i in range(rare):
        study = SyntheticStudy(
            modalities=("MR",),
            body_part="HEAD",
            manufacturer=RARE_MANUFACTURER,
            findings=[SyntheticFinding(MASS, diameter_mm=30.0, site=None)],
        )
        patients.append(SyntheticPatient(f"M{i:03d}", "M", [study]))
    return patients


def _vocabulary(url: str, token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{url}/vocabulary", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _values(answer: dict[str, Any], name: str) -> set[str]:
    return {entry["value"] for entry in answer["vocabulary"][name]}


def _assert_no_rare_value(answer: dict[str, Any]) -> None:
    text = json.dumps(answer)
    for rare in ("MR", "HEAD", RARE_MANUFACTURER, MASS):
        assert f'"{rare}"' not in text, (rare, answer["vocabulary"])


@pytest.fixture(scope="module")
def vocabulary_site(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gateway.federated.settings import FederatedSettings
    from gateway.index import FindingsIndex, IndexSettings
    from tests.federated.conftest import site_auth
    from tests.federated.servers import ThreadedServer, site_app
    from tests.federated.synthetic import write_patients

    index = FindingsIndex.open(IndexSettings(), tmp_path_factory.mktemp("vocabulary") / "site")
    write_patients(index, vocabulary_patients(400, 3))
    settings = FederatedSettings(exact={"max_answers_per_person": 2})
    server = ThreadedServer(site_app(index, settings, site_auth())).start()
    yield Site(index, server, settings)
    server.stop()
    index.close()


def test_exact_vocabulary_lists_values_of_k_patients_or_more(vocabulary_site: Site) -> None:
    answer = _vocabulary(vocabulary_site.url, EXACT_TOKEN)
    assert answer["kind"] == "vocabulary" and answer["privacy"] == {"mode": "exact"}
    vocabulary = answer["vocabulary"]
    assert vocabulary["modality"] == [{"value": "CT", "count": 400}]
    assert vocabulary["body_part"] == [{"value": "CHEST", "count": 400}]
    assert vocabulary["manufacturer"] == [{"value": "fedgate phantom", "count": 400}]
    assert vocabulary["finding_type"] == [{"value": NODULE, "count": 400}]
    assert vocabulary["finding_site"] == [{"value": LUNG, "count": 400}]
    # The masses' diameters too: a concept is listed by all the patients measured with it.
    assert vocabulary["measurement"] == [{"concept": DIAMETER, "unit": "mm", "count": 403}]
    assert vocabulary["qualitative"] == [{"concept": MALIGNANCY, "value": SUSPICIOUS, "count": 200}]
    # The clinical report's variables, apart from the imaging findings' ones.
    assert vocabulary["clinical_qualitative"] == [
        {"concept": SMOKING, "value": SMOKER, "count": 400}
    ]
    assert vocabulary["clinical_measurement"] == []
    # The algorithm of the three patients' mass is the same as the nodules': listed.
    assert vocabulary["algorithm"] == [{"name": "lung-nodules", "version": "1.0", "count": 403}]
    _assert_no_rare_value(answer)
    # Counted against the exact role's question cap (2 here): a vocabulary is a question.
    headers = {"Authorization": f"Bearer {EXACT_TOKEN}"}
    budget = httpx.get(f"{vocabulary_site.url}/budget", headers=headers).json()
    assert budget["questions_used"] >= 1
    while budget["questions_remaining"] > 0:
        _vocabulary(vocabulary_site.url, EXACT_TOKEN)
        budget = httpx.get(f"{vocabulary_site.url}/budget", headers=headers).json()
    refused = httpx.get(f"{vocabulary_site.url}/vocabulary", headers=headers)
    assert refused.status_code == 403 and "exact questions" in refused.json()["error"]


def test_noisy_vocabulary_lists_common_values_only_and_is_charged_once(
    vocabulary_site: Site,
) -> None:
    headers = {"Authorization": f"Bearer {QUERY_TOKEN}"}
    before = httpx.get(f"{vocabulary_site.url}/budget", headers=headers).json()
    cost = httpx.post(
        f"{vocabulary_site.url}/cost", json={"aggregate": {"kind": "vocabulary"}}, headers=headers
    ).json()
    answer = _vocabulary(vocabulary_site.url, QUERY_TOKEN)
    # Charged once, what /cost said, with the threshold's delta.
    assert cost["epsilon"] == 0.75 and cost["cached"] is False
    assert answer["privacy"]["epsilon"] == 0.75 and answer["privacy"]["delta"] > 0
    spent = answer["budget"]["epsilon_spent"] - before["epsilon_spent"]
    assert spent == pytest.approx(0.75)
    # With the default settings, the values 400 patients hold are listed, each with a noisy
    # count and its interval, none above the truth by more than the noise (a patient counts
    # for at most max_rows_per_patient values in all); the three patients' values never.
    threshold = answer["threshold"]
    assert 50 < threshold < 400
    assert _values(answer, "modality") == {"CT"}
    assert _values(answer, "body_part") == {"CHEST"}
    assert _values(answer, "finding_type") == {NODULE}
    for entries in answer["vocabulary"].values():
        for entry in entries:
            low, high = entry["interval"]
            assert threshold - 1 <= entry["count"] and low <= entry["count"] <= high
            assert low <= 403
    _assert_no_rare_value(answer)
    # A repeat, and the same question asked as an aggregate, get the same draw, free.
    again = _vocabulary(vocabulary_site.url, QUERY_TOKEN)
    assert again["vocabulary"] == answer["vocabulary"]
    assert again["privacy"]["cached"] is True and again["privacy"]["epsilon"] == 0
    aggregate = vocabulary_site.post({"aggregate": {"kind": "vocabulary"}}, token=QUERY_TOKEN)
    assert aggregate.json()["vocabulary"] == answer["vocabulary"]
    after = httpx.get(f"{vocabulary_site.url}/budget", headers=headers).json()
    assert after["epsilon_spent"] == pytest.approx(answer["budget"]["epsilon_spent"])
    # Audited like any answer, under its own endpoint.
    audit_path = Path(vocabulary_site.index.data_dir) / "federated-audit.jsonl"
    entries = [json.loads(line) for line in audit_path.read_text().splitlines()]
    noisy = [e for e in entries if e["endpoint"] == "vocabulary" and e["mode"] == "dp"]
    assert [e["epsilon_spent"] for e in noisy] == [0.75, 0.0]
    assert noisy[0]["answer"]["vocabulary"] == answer["vocabulary"]


def test_the_vocabulary_carries_no_identifier(vocabulary_site: Site) -> None:
    for token in (QUERY_TOKEN, EXACT_TOKEN):
        response = httpx.get(
            f"{vocabulary_site.url}/vocabulary", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code in (200, 403)  # the exact cap may be spent by now
        assert identifier_shaped(response.text) == []


def test_bad_vocabulary_questions_are_400(vocabulary_site: Site) -> None:
    headers = {"Authorization": f"Bearer {QUERY_TOKEN}"}
    extra = httpx.get(f"{vocabulary_site.url}/vocabulary?PatientSex=F", headers=headers)
    assert extra.status_code == 400 and extra.json()["field"] == "PatientSex"
    studies = vocabulary_site.post(
        {"level": "studies", "aggregate": {"kind": "vocabulary"}}, token=QUERY_TOKEN
    )
    assert studies.status_code == 400 and studies.json()["field"] == "aggregate"
    assert httpx.get(f"{vocabulary_site.url}/vocabulary").status_code == 401


def test_a_cohorts_vocabulary_lists_what_its_studies_hold(make_site: SiteFactory) -> None:
    """As an aggregate, the vocabulary of a cohort: the values of its studies only."""
    patients = vocabulary_patients(30, 0) + [
        SyntheticPatient(f"M{i:03d}", "M", [SyntheticStudy(modalities=("MR",), body_part="HEAD")])
        for i in range(12)
    ]
    site = make_site(patients)
    men = site.post(
        {"cohort": {"attributes": {"PatientSex": "M"}}, "aggregate": {"kind": "vocabulary"}}
    ).json()
    assert men["vocabulary"]["modality"] == [{"value": "MR", "count": 12}]
    assert men["vocabulary"]["finding_type"] == []
    everyone = site.post({"aggregate": {"kind": "vocabulary"}}).json()
    assert _values(everyone, "modality") == {"CT", "MR"}


def test_the_hub_answers_the_union_of_its_sites_vocabularies(tmp_path: Path) -> None:
    sites = Sites(tmp_path)
    try:
        heads = [
            SyntheticPatient(f"aH{i}", "M", [SyntheticStudy(modalities=("MR",), body_part="HEAD")])
            for i in range(12)
        ]
        configs = [
            sites.site("a", site_patients("a", 30, 10, 15) + heads),
            sites.site("b", site_patients("b", 25, 10, 4)),
            {
                "name": "stopped",
                "url": f"http://127.0.0.1:{free_port()}/federated/v1",
                "token": EXACT_TOKEN,
            },
        ]
        audit_path = tmp_path / "hub-audit.jsonl"
        with hub_process(tmp_path, configs, audit_log=str(audit_path)) as hub:
            response = httpx.get(
                f"{hub}/vocabulary", headers={"Authorization": f"Bearer {HUB_TOKEN}"}, timeout=60
            )
            assert response.status_code == 200, response.text
            answer = response.json()
        statuses = {s["name"]: s["status"] for s in answer["sites"]}
        assert statuses == {"a": "ok", "b": "ok", "stopped": "error"}
        assert answer["complete"] is False and answer["kind"] == "vocabulary"
        vocabulary = answer["vocabulary"]
        modalities = {e["value"]: e for e in vocabulary["modality"]}
        # Both sites list CT: the sum, exact.
        assert modalities["CT"] == {"value": "CT", "count": 40 + 35, "sites": ["a", "b"]}
        # Only a holds MR: b holds fewer than its minimum cell size (here none), an interval.
        assert modalities["MR"]["sites"] == ["a"]
        assert (modalities["MR"]["lower"], modalities["MR"]["upper"]) == (12, 12 + 9)
        # b's 4 nodules are not listed there; a's 15 are.
        (nodule,) = vocabulary["finding_type"]
        assert nodule["value"] == NODULE and nodule["sites"] == ["a"]
        assert (nodule["lower"], nodule["upper"]) == (15, 15 + 9)
        (entry,) = [json.loads(line) for line in audit_path.read_text().splitlines()]
        assert entry["answer"]["vocabulary"] == vocabulary
    finally:
        sites.close()


def test_hub_budget_and_cost_with_a_stopped_site(tmp_path: Path) -> None:
    sites = Sites(tmp_path)
    try:
        configs = [
            sites.site("a", site_patients("a", 30, 10, 0), token=QUERY_TOKEN),
            sites.site(
                "b",
                site_patients("b", 30, 10, 0),
                token=QUERY_TOKEN,
                dp={"epsilon_per_query": 0.75, "epsilon_per_person": 1.0},
            ),
            {
                "name": "stopped",
                "url": f"http://127.0.0.1:{free_port()}/federated/v1",
                "token": QUERY_TOKEN,
            },
        ]
        with hub_process(tmp_path, configs) as hub:
            headers = {"Authorization": f"Bearer {HUB_TOKEN}"}

            def cost(body: dict[str, Any]) -> dict[str, Any]:
                response = httpx.post(f"{hub}/cost", json=body, headers=headers, timeout=60)
                assert response.status_code == 200, response.text
                result: dict[str, Any] = response.json()
                return result

            budget = httpx.get(f"{hub}/budget", headers=headers, timeout=60).json()
            statuses = {s["name"]: s["status"] for s in budget["sites"]}
            assert statuses == {"a": "ok", "b": "ok", "stopped": "error"}
            assert budget["complete"] is False
            remaining = {
                s["name"]: s["answer"]["epsilon_remaining"]
                for s in budget["sites"]
                if s["status"] == "ok"
            }
            assert remaining == {"a": 15.0, "b": 1.0}
            # The cost at each answering site, summed; both can pay it.
            women = {"cohort": {"attributes": {"PatientSex": "F"}}}
            first = cost(women)
            assert first["epsilon"] == pytest.approx(1.5) and first["affordable"] is True
            assert [s["status"] for s in first["sites"]] == ["ok", "ok", "error"]
            assert first["complete"] is False
            # Asked: charged at both; the same question costs nothing now.
            count = httpx.get(f"{hub}/count", params={"PatientSex": "F"}, headers=headers)
            assert [s["status"] for s in count.json()["sites"]] == ["ok", "ok", "error"]
            again = cost(women)
            assert again["epsilon"] == 0 and again["affordable"] is True
            # b has 0.25 left: a new question is not affordable at every answering site.
            men = cost({"cohort": {"attributes": {"PatientSex": "M"}}})
            assert men["affordable"] is False
            assert [s["answer"]["affordable"] for s in men["sites"][:2]] == [True, False]
            after = httpx.get(f"{hub}/budget", headers=headers, timeout=60).json()
            spent = [s["answer"]["epsilon_spent"] for s in after["sites"][:2]]
            assert spent == [pytest.approx(0.75), pytest.approx(0.75)]
            # A bad question is a 400 before any site is asked.
            bad = httpx.post(f"{hub}/cost", json={"level": "rows"}, headers=headers)
            assert bad.status_code == 400 and bad.json()["field"] == "level"
            assert httpx.get(f"{hub}/budget").status_code == 401
    finally:
        sites.close()


def test_each_patient_counts_for_at_most_the_bound_taken_round_the_lists(
    tmp_path: Path,
) -> None:
    """The sensitivity the noise is calibrated to: 200 patients holding the same 4 values in
    each of 3 lists, at most 3 values each: every patient counts once in every list (one
    value of each list before a second of any), so each list's counts sum to 200."""
    import numpy as np

    from gateway.federated.noisy import NoisyAnswers
    from gateway.federated.settings import DifferentialPrivacySettings
    from gateway.federated.vocabulary import VOCABULARY_LISTS, VocabularyFacts
    from gateway.index import FindingsIndex, IndexSettings

    lists = ("modality", "body_part", "finding_type")
    rows = [
        (patient, VOCABULARY_LISTS.index(name), json.dumps([name, f"V{value}"]))
        for patient in range(200)
        for name in lists
        for value in range(4)
    ]
    facts = VocabularyFacts(
        np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), [r[2] for r in rows]
    )
    index = FindingsIndex.open(IndexSettings(), tmp_path / "index")
    try:
        noisy = NoisyAnswers(index, DifferentialPrivacySettings(max_rows_per_patient=3))
        # A large epsilon: noise far below one patient, to see the bounded counts.
        answer = noisy.vocabulary(facts, epsilon=1000.0)
    finally:
        index.close()
    for name in lists:
        entries = answer["vocabulary"][name]
        assert {e["value"] for e in entries} == {f"V{value}" for value in range(4)}
        assert sum(e["count"] for e in entries) == 200, entries
        assert all(20 < e["count"] < 80 for e in entries)  # chosen at random among the four


def test_a_patient_with_unique_values_is_not_seen_in_the_vocabulary(
    make_site: SiteFactory,
) -> None:
    """Two sites that differ by one patient with an MR and a mass (values only one other
    patient has): for both roles, the same status, headers and values listed."""
    from tests.federated.conftest import standard_cohort
    from tests.federated.test_attacks import TARGET, _shape

    without = make_site(standard_cohort(), name="without")
    with_target = make_site([*standard_cohort(), TARGET], name="with")
    for token in (QUERY_TOKEN, EXACT_TOKEN):
        first, second = (
            httpx.get(f"{site.url}/vocabulary", headers={"Authorization": f"Bearer {token}"})
            for site in (without, with_target)
        )
        assert first.status_code == second.status_code == 200
        assert set(first.headers) == set(second.headers)
        one, two = first.json(), second.json()
        assert _shape(one["vocabulary"]) == _shape(two["vocabulary"]), token
        _assert_no_rare_value(two)

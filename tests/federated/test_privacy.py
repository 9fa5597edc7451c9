"""Differential privacy by default: calibrated noise, budgets per person and per site, and the
utility an analyst gets on a site of 5,000 patients with the default settings."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.federated.cohort import AggregateRequest
from gateway.federated.privacy import NoiseMechanism, Sensitivity
from gateway.federated.service import Asker, FederatedService, Refused
from gateway.federated.settings import DifferentialPrivacySettings, FederatedSettings
from gateway.index import FindingsIndex, IndexSettings
from tests.federated.conftest import QUERY_TOKEN, SiteFactory
from tests.federated.synthetic import (
    NODULE,
    SyntheticFinding,
    SyntheticPatient,
    SyntheticStudy,
    diameter_summary,
    write_patients,
)

ONE = Sensitivity(1, 1.0, 1.0)


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_noise_has_the_scale_the_epsilon_implies(mechanism: str) -> None:
    noise = NoiseMechanism(DifferentialPrivacySettings(mechanism=mechanism))  # type: ignore[arg-type]
    released = noise.release([0.0] * 4000, ONE, epsilon=1.0)
    spread = statistics.pstdev(released.values)
    if mechanism == "laplace":
        assert spread == pytest.approx(2**0.5, rel=0.1)  # Laplace(b=1): sd = b * sqrt(2)
        assert released.half_width == pytest.approx(3.0, rel=0.01)  # b * ln(20)
    else:
        assert 2.0 < spread < 8.0  # (1, 1e-7)-DP Gaussian: sigma about 4-5
    assert abs(statistics.mean(released.values)) < 0.3
    inside = sum(abs(v) <= released.half_width for v in released.values) / len(released.values)
    assert 0.93 < inside < 0.97  # the interval given with every noisy number covers 95 %


def _ages(count: int) -> list[SyntheticPatient]:
    return [
        SyntheticPatient(f"P{i}", "F" if i % 2 else "M", [SyntheticStudy(age=20 + i % 60)])
        for i in range(count)
    ]


def test_query_role_gets_noise_by_default_and_its_budget_in_every_answer(
    make_site: SiteFactory,
) -> None:
    site = make_site(_ages(300))
    answer = site.get({"PatientSex": "F"}, token=QUERY_TOKEN).json()
    assert answer["privacy"]["mode"] == "dp" and answer["privacy"]["epsilon"] == 0.75
    low, high = answer["interval"]
    assert low <= answer["count"] <= high and high - low > 2
    assert abs(answer["count"] - 150) < 25
    assert answer["budget"]["epsilon_spent"] == pytest.approx(0.75)
    assert answer["budget"]["epsilon_remaining"] == pytest.approx(15 - 0.75)
    # The same question again: the same draw, free.
    again = site.get({"PatientSex": "F"}, token=QUERY_TOKEN).json()
    assert again["count"] == answer["count"] and again["privacy"]["cached"] is True
    assert again["privacy"]["epsilon"] == 0 and again["budget"]["epsilon_spent"] == 0.75
    # /cost says what the next question costs before it is asked; /budget what is left.
    headers = {"Authorization": f"Bearer {QUERY_TOKEN}"}
    import httpx

    cost = httpx.post(f"{site.url}/cost", json={"level": "studies"}, headers=headers).json()
    assert cost["epsilon"] == 0.75 and cost["affordable"] is True
    budget = httpx.get(f"{site.url}/budget", headers=headers).json()
    assert budget["epsilon_spent"] == pytest.approx(0.75)


def test_gaussian_answers_and_budget(make_site: SiteFactory) -> None:
    site = make_site(
        _ages(300),
        dp={"mechanism": "gaussian", "epsilon_per_query": 1.0, "epsilon_per_person": 2.0},
    )
    answer = site.get({"PatientSex": "F"}, token=QUERY_TOKEN).json()
    assert answer["privacy"]["mechanism"] == "gaussian" and answer["privacy"]["delta"] > 0
    assert abs(answer["count"] - 150) < 40
    assert site.get({"PatientSex": "M"}, token=QUERY_TOKEN).status_code == 200
    refused = site.get({"PatientAge": "20-49"}, token=QUERY_TOKEN)
    assert refused.status_code == 403 and "budget" in refused.json()["error"]


def test_noisy_histogram_cells_and_quantiles(make_site: SiteFactory) -> None:
    site = make_site(_ages(600), dp={"epsilon_per_query": 4.0, "epsilon_per_person": 100.0})
    histogram = site.post(
        {
            "aggregate": {
                "kind": "histogram",
                "by": {"kind": "bins", "of": "age", "start": 20, "stop": 80, "width": 20},
            }
        },
        token=QUERY_TOKEN,
    ).json()
    cells = {str(c["value"]): c for c in histogram["cells"]}
    # Every cell is released, the empty "(outside)" too: nothing is suppressed under noise.
    assert len(cells) == 4 and not any(c.get("suppressed") for c in cells.values())
    for value, cell in cells.items():
        expected = 0 if value == "(outside)" else 200
        assert abs(cell["count"] - expected) < 12, cell  # Laplace scale 1/4: exp(-48)
    assert abs(histogram["total"]["count"] - 600) < 30
    summary = site.post(
        {
            "cohort": {"attributes": {"PatientSex": "F"}},
            "aggregate": {
                "kind": "summary",
                "of": "age",
                "lower": 0,
                "upper": 100,
                "quantiles": [0.25, 0.5, 0.75],
            },
        },
        token=QUERY_TOKEN,
    ).json()
    assert abs(summary["mean"] - 49.5) < 5  # sum noise scale 50 / 1.6 over 300 patients
    assert abs(summary["n"] - 300) < 20
    median = summary["quantiles"]["0.5"]
    assert 35 <= median <= 65
    assert summary["quantiles"]["0.25"] <= median <= summary["quantiles"]["0.75"]
    # The exact role is never given quantiles: an exact quantile is one patient's value.
    exact = site.post(
        {
            "aggregate": {
                "kind": "summary",
                "of": "age",
                "lower": 0,
                "upper": 100,
                "quantiles": [0.5],
            }
        }
    )
    assert exact.status_code == 400


# -- utility on a generated site of 5,000 patients, default settings -------------------------


def _five_thousand() -> list[SyntheticPatient]:
    """5,000 patients; ages spread so that some decades hold 100-200 patients, others more;
    every tenth patient has one nodule of 4-19 mm (500 patients with a diameter)."""
    patients = []
    for i in range(5000):
        if i % 30 == 1:
            age = 90 + i % 10  # one decade of about 167 patients
        elif i % 3 == 0:
            age = 60 + i % 10
        else:
            age = 20 + (i * 7919) % 70
        findings = [SyntheticFinding(NODULE, 4.0 + i % 16)] if i % 10 == 0 else []
        patients.append(
            SyntheticPatient(
                f"U{i}",
                "F" if i % 2 else "M",
                [SyntheticStudy(date=20200101 + i % 300, age=age, findings=findings)],
            )
        )
    return patients


@pytest.fixture(scope="module")
def large_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FindingsIndex]:
    index = FindingsIndex.open(IndexSettings(), tmp_path_factory.mktemp("five-thousand"))
    write_patients(index, _five_thousand())
    yield index
    index.close()


def _request(body: dict[str, object]) -> AggregateRequest:
    return AggregateRequest.model_validate(body)


def test_a_count_is_within_five_in_95_percent_of_draws(large_site: FindingsIndex) -> None:
    service = FederatedService(large_site, FederatedSettings())
    within = 0
    for draw in range(40):
        # Forty wordings of "everyone": forty fresh draws, charged to forty analysts.
        answer = service.answer(
            _request({"cohort": {"attributes": {"PatientAge": f"0-{150 + draw}"}}}),
            Asker(f"analyst-{draw}", f"token-{draw}"),
            "test",
        )
        within += abs(answer["count"] - 5000) <= 5
    # Laplace scale 1/0.75: |noise| > 5 with probability 2.3 %; 7 misses of 40: about 1e-5.
    assert within >= 34


def test_age_histogram_cells_of_100_or_more_within_ten_percent(large_site: FindingsIndex) -> None:
    service = FederatedService(large_site, FederatedSettings())
    truth: dict[int, int] = {}
    for patient in _five_thousand():
        age = patient.studies[0].age
        assert age is not None
        truth[(age - 0) // 10] = truth.get((age - 0) // 10, 0) + 1
    misses = 0
    for draw in range(5):
        answer = service.answer(
            _request(
                {
                    "cohort": {"attributes": {"PatientAge": f"0-{150 + draw}"}},
                    "aggregate": {
                        "kind": "histogram",
                        "by": {"kind": "bins", "of": "age", "start": 0, "stop": 100, "width": 10},
                    },
                }
            ),
            Asker("histogram-analyst", "token"),
            "test",
        )
        for cell in answer["cells"]:
            if cell["value"] == "(outside)":
                continue
            expected = truth.get(int(cell["value"]["low"]) // 10, 0)
            if expected >= 100 and abs(cell["count"] - expected) > expected * 0.10:
                misses += 1
    assert min(v for v in truth.values() if v >= 100) < 200  # cells near the bound are tested
    assert misses <= 1  # each cell: |Laplace(1.33)| > 10 with probability 5e-4


def test_mean_of_a_measurement_over_500_patients_within_one_unit(
    large_site: FindingsIndex,
) -> None:
    service = FederatedService(large_site, FederatedSettings())
    diameters = [4.0 + i % 16 for i in range(0, 5000, 10)]
    answer = service.answer(
        _request({"aggregate": diameter_summary(0, 30)}),
        Asker("summary-analyst", "token"),
        "test",
    )
    assert abs(answer["mean"] - statistics.mean(diameters)) <= 1.0
    assert abs(answer["n"] - len(diameters)) <= 80  # Laplace scale 5.3 on n: exp(-15)
    low, high = answer["mean_interval"]
    assert low <= answer["mean"] <= high


def test_twenty_refinements_fit_in_one_analysts_daily_budget(large_site: FindingsIndex) -> None:
    """An interactive session: add a filter, move a range, remove a filter, twenty times."""
    service = FederatedService(large_site, FederatedSettings())
    analyst = Asker("clinician", "dashboard-token")
    cohorts: list[dict[str, object]] = []
    for step in range(20):
        attributes: dict[str, object] = {"ModalitiesInStudy": "CT"}
        attributes["PatientAge"] = f"{30 + step}-{70 + step}"
        if step % 2:
            attributes["PatientSex"] = "F"
        findings = [{"type": NODULE}] if step % 4 == 3 else []
        cohorts.append({"cohort": {"attributes": attributes, "findings": findings}})
    for body in cohorts:
        answer = service.answer(_request(body), analyst, "test")
        assert answer["count"] is not None
    # Twenty different questions at 0.75: the whole default daily budget of 15, no more.
    assert service.budget(analyst)["epsilon_spent"] == pytest.approx(15.0)


# -- one budget per person, and one for the site ----------------------------------------------


def test_two_credentials_of_one_person_share_one_budget(tmp_path: Path) -> None:
    index = FindingsIndex.open(IndexSettings(), tmp_path / "site")
    write_patients(index, _ages(100))
    service = FederatedService(
        index, FederatedSettings(dp={"epsilon_per_query": 1.0, "epsilon_per_person": 2.0})
    )
    direct, through_hub = Asker("alice", "alice-token"), Asker("alice", "hub/alice")
    service.answer(_request({"cohort": {"attributes": {"PatientSex": "F"}}}), direct, "count")
    service.answer(_request({"cohort": {"attributes": {"PatientSex": "M"}}}), through_hub, "count")
    with pytest.raises(Refused, match="'alice' has 0 of epsilon 2"):
        service.answer(_request({"level": "studies"}), direct, "aggregate")
    # Another person is not affected.
    service.answer(_request({"level": "studies"}), Asker("bob", "bob-token"), "aggregate")
    index.close()


def test_the_site_budget_stops_all_analysts_together(tmp_path: Path) -> None:
    index = FindingsIndex.open(IndexSettings(), tmp_path / "site")
    write_patients(index, _ages(100))
    service = FederatedService(
        index,
        FederatedSettings(
            dp={"epsilon_per_query": 1.0, "epsilon_per_person": 2.0, "epsilon_per_site": 3.0}
        ),
    )
    for number in range(3):
        body = {"cohort": {"attributes": {"PatientAge": f"0-{150 + number}"}}}
        service.answer(_request(body), Asker(f"analyst-{number}", "t"), "count")
    with pytest.raises(Refused, match="site's privacy budget"):
        service.answer(_request({"level": "series"}), Asker("newcomer", "t"), "count")
    index.close()

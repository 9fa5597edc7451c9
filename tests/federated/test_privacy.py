"""Differential privacy answers: Gaussian and Laplace noise, noisy tables, DP-only quantiles."""

from __future__ import annotations

import statistics

import pytest

from gateway.federated.privacy import NoiseMechanism
from gateway.federated.settings import DifferentialPrivacySettings
from tests.federated.conftest import SiteFactory
from tests.federated.synthetic import SyntheticPatient, SyntheticStudy


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_noise_has_the_scale_the_epsilon_implies(mechanism: str) -> None:
    noise = NoiseMechanism(DifferentialPrivacySettings(mechanism=mechanism))  # type: ignore[arg-type]
    draws = noise.release([0.0] * 4000, sensitivity=1.0, epsilon=1.0)
    spread = statistics.pstdev(draws)
    if mechanism == "laplace":
        assert spread == pytest.approx(2**0.5, rel=0.1)  # Laplace(b=1): sd = b * sqrt(2)
    else:
        assert 2.0 < spread < 8.0  # (1, 1e-7)-DP Gaussian: sigma about 4-5
    assert abs(statistics.mean(draws)) < 0.3


def _ages(count: int) -> list[SyntheticPatient]:
    return [
        SyntheticPatient(f"P{i}", "F" if i % 2 else "M", [SyntheticStudy(age=20 + i % 60)])
        for i in range(count)
    ]


def test_gaussian_answers_and_budget(make_site: SiteFactory) -> None:
    site = make_site(
        _ages(300),
        dp={
            "enabled": True,
            "mechanism": "gaussian",
            "epsilon_per_query": 1.0,
            "epsilon_budget_per_client": 2.0,
        },
    )
    answer = site.get({"PatientSex": "F"}).json()
    assert answer["privacy"] == {"mechanism": "gaussian", "epsilon": 1.0}
    assert abs(answer["count"] - 150) < 40
    assert site.get({"PatientSex": "M"}).status_code == 200
    assert site.get({"PatientAge": "20-49"}).status_code == 403  # budget of 2 spent


def test_noisy_histogram_cells_and_quantiles_under_dp(make_site: SiteFactory) -> None:
    site = make_site(
        _ages(600),
        dp={"enabled": True, "epsilon_per_query": 4.0, "epsilon_budget_per_client": 100.0},
    )
    histogram = site.post(
        {
            "aggregate": {
                "kind": "histogram",
                "by": {"kind": "bins", "of": "age", "start": 20, "stop": 80, "width": 20},
            }
        }
    ).json()
    cells = histogram["cells"]
    # Nobody is outside [20, 80): that cell is suppressed, and one bin with it.
    assert [c["value"] for c in cells if c.get("suppressed")][-1] == "(outside)"
    assert sum(1 for c in cells if c.get("suppressed")) == 2
    for cell in cells:
        if not cell.get("suppressed"):
            assert abs(cell["count"] - 200) < 30, cell  # 200 per bin, noise of scale 5/2
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
        }
    ).json()
    # Tolerances for a failure once in a million runs, not a few in a hundred: the sum of
    # 300 ages gets Laplace noise of scale 5 rows x 100 years / epsilon 1 = 500, so the mean
    # is off by more than 24 years with probability exp(-24 * 300 / 500), about 6e-7 (it was
    # 5 years: a 7 % chance, and CI met it); the median, from 64 bins each with Laplace noise
    # of scale 5, left [28, 72] once in 2 million simulated runs.
    assert abs(summary["mean"] - 49.5) < 24
    assert abs(summary["n"] - 300) < 70  # Laplace scale 5: exp(-14)
    median = summary["quantiles"]["0.5"]
    assert 28 <= median <= 72
    assert summary["quantiles"]["0.25"] <= median <= summary["quantiles"]["0.75"]

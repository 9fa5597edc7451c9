"""Training plans and sites for the learning tests: the phantom cohorts' features by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fedgate.phantom_cohort import CohortPatient, generate_cohort, write_cohort_to_index
from gateway.index import FindingsIndex, IndexSettings
from gateway.index.keys import SALT_FILE_NAME
from gateway.learning.plan import LoadedPlan, parse_plan

#: A plan over every feature of the phantom cohorts' generating model (fedgate.phantom_cohort).
PLAN = """\
name: lung-cancer
cohort: {attributes: {ModalitiesInStudy: CT}}
unit: patient
features:
  - {name: age, source: age}
  - {name: male, source: sex}
  - {name: current_smoker, source: clinical, concept: "LN:72166-2", equals: "SCT:77176002"}
  - {name: lvef, source: clinical, concept: "LN:10230-1", unit: "%"}
  - {name: nodule_diameter, source: measurement, finding_type: "SCT:27925004",
     concept: "SCT:81827009", unit: mm, reduce: max}
  - {name: qtc, source: clinical, concept: "LN:8636-3", unit: ms}
label: {concept: "LN:29308-4", equals: "SCT:363358000"}
missing: drop
model: {family: logistic_regression}
evaluation: {holdout: 0.25, seed: 7}
"""

#: The model families as the tests and ``bench.learning`` run them (a plan's ``model:``).
MODELS = {
    "logistic_regression": "{family: logistic_regression, learning_rate: 0.8}",
    "sgd": "{family: sgd, learning_rate: 0.01, local_epochs: 5}",
    "mlp": "{family: mlp, hidden_layers: [8], learning_rate: 0.01, local_epochs: 10}",
}


def plan_text(model: str, rounds: int, min_sites: int, extra: str = "") -> str:
    """:data:`PLAN` with ``model`` (a plan's ``model:`` mapping), ``rounds`` and ``min_sites``."""
    return (
        PLAN.replace("model: {family: logistic_regression}", f"model: {model}")
        + f"rounds: {rounds}\nmin_sites: {min_sites}\n{extra}"
    )


def plan(text: str = PLAN) -> LoadedPlan:
    return parse_plan(text.encode())


def expected_row(patient: CohortPatient) -> list[float]:
    """The PLAN's features of a phantom patient, from its truth."""
    return [
        float(patient.age),
        1.0 if patient.sex == "M" else 0.0,
        1.0 if patient.smoking == "current_smoker" else 0.0,
        patient.lvef,
        patient.largest_nodule_mm,
        patient.qtc,
    ]


def phantom_site(data_dir: Path, site: int, patients: int) -> list[CohortPatient]:
    """A site's findings index in ``data_dir`` holding ``patients`` phantom patients.

    Its salt is the site's own but fixed, as its patients are: a plan's held-out split is drawn
    from the salted keys (gateway/learning/table.py), so with a salt drawn per run each run
    trained and evaluated on other rows, and a figure near its bound passed or failed by chance.
    """
    cohort = generate_cohort(site, patients)
    data_dir.mkdir(parents=True, exist_ok=True)
    salt = hashlib.sha256(f"phantom site {site}".encode()).hexdigest()
    (data_dir / SALT_FILE_NAME).write_text(salt, encoding="ascii")
    index = FindingsIndex.open(IndexSettings(), data_dir)
    try:
        write_cohort_to_index(index, cohort)
    finally:
        index.close()
    return cohort

"""A site admin approves training plans by sha256: ``fedgate learn validate/approve/...``.

Real processes: the ``fedgate`` console script against a gateway configuration on the embedded
default, and the approvals of two "replicas" sharing one real PostgreSQL.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from gateway.approvals import Approvals, SubjectError
from gateway.index import IndexSettings
from tests.support.postgres import PostgresServer
from tests.support.process import run_fedgate

PLAN = """\
name: nodule-outcome
cohort: {attributes: {ModalitiesInStudy: CT}}
features:
  - {name: age, source: age}
  - {name: male, source: sex}
  - {name: nodule_diameter, source: measurement, finding_type: "SCT:27925004",
     concept: "SCT:81827009", unit: mm, reduce: max}
label: {concept: "SCT:394664007", equals: "SCT:363358000"}
model: {family: logistic_regression}
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    return config


def _plan(tmp_path: Path, text: str = PLAN, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_validate_prints_the_sha256_of_the_file(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    result = run_fedgate("learn", "validate", str(plan))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == hashlib.sha256(plan.read_bytes()).hexdigest()
    assert "3 features (age, male, nodule_diameter)" in result.stderr


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t.replace("family: logistic_regression", "family: svm"), "model"),
        (lambda t: t.replace("reduce: max", "reduce: median"), "features.2"),
        (lambda t: t.replace("{name: male, source: sex}", "{name: age, source: sex}"), "repeat"),
        (lambda t: t.replace('equals: "SCT:363358000"', ""), "label"),
        (lambda t: "- just a list\n", "a YAML mapping"),
        (lambda t: "name: [unclosed\n", "not a YAML document"),
    ],
)
def test_validate_names_what_is_wrong(tmp_path: Path, change: object, words: str) -> None:
    plan = _plan(tmp_path, change(PLAN))  # type: ignore[operator]
    result = run_fedgate("learn", "validate", str(plan))
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_approve_then_a_changed_plan_needs_a_new_approval(tmp_path: Path, site: Path) -> None:
    plan = _plan(tmp_path)
    sha = run_fedgate("learn", "validate", str(plan)).stdout.strip()
    approved = run_fedgate("learn", "approve", "--config", str(site), sha, "--by", "dr.admin")
    assert approved.returncode == 0, approved.stderr
    assert f"plan {sha} approved by dr.admin" in approved.stdout

    changed = _plan(tmp_path, PLAN.replace("name: nodule-outcome", "name: nodule-outcome-2"), "b")
    changed_sha = hashlib.sha256(changed.read_bytes()).hexdigest()
    settings_dir = tmp_path / "data"
    approvals = Approvals.open(IndexSettings(), settings_dir)
    try:
        assert approvals.is_approved("training-plan", sha)
        assert not approvals.is_approved("training-plan", changed_sha)
        # Approving a plan approves nothing else: not the same content under the other kind.
        assert not approvals.is_approved("analysis-bundle", sha)
    finally:
        approvals.close()

    revoked = run_fedgate("learn", "revoke", "--config", str(site), sha, "--note", "ethics")
    assert revoked.returncode == 0
    listing = run_fedgate("learn", "approvals", "--config", str(site))
    lines = listing.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["approved", "revoked"]
    assert "(ethics)" in lines[1]
    approvals = Approvals.open(IndexSettings(), settings_dir)
    try:
        assert not approvals.is_approved("training-plan", sha)
    finally:
        approvals.close()


def test_approve_refuses_what_is_not_a_sha256(site: Path) -> None:
    result = run_fedgate("learn", "approve", "--config", str(site), "nodule-outcome")
    assert result.returncode == 2
    assert "is not a sha256" in result.stderr


def test_approve_with_a_broken_configuration_names_it(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("listen: {port: not-a-port}\n")
    result = run_fedgate("learn", "approve", "--config", str(config), "0" * 64)
    assert result.returncode == 2
    assert "listen.port" in result.stderr


def test_replicas_on_one_postgresql_share_decisions(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    settings = IndexSettings(url=postgres.url)
    one = Approvals.open(settings, tmp_path / "one")
    two = Approvals.open(settings, tmp_path / "two")
    try:
        sha = "ab" * 32
        one.decide("training-plan", sha.upper(), "approved", by="admin")
        assert two.is_approved("training-plan", sha)
        two.decide("training-plan", sha, "refused", by="dpo", note="not this year")
        assert not one.is_approved("training-plan", sha)
        assert [d.decision for d in one.history()] == ["approved", "refused"]
        with pytest.raises(SubjectError, match="kind must be"):
            one.decide("model", sha, "approved", by="admin")
    finally:
        one.close()
        two.close()


def _asking_sites(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[IndexSettings, Path, Path]:
    """Two replicas' views of one site: on SQLite one data directory, on PostgreSQL one server."""
    if request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        return IndexSettings(url=postgres.url), tmp_path / "one", tmp_path / "two"
    return IndexSettings(), tmp_path / "site", tmp_path / "site"


@pytest.fixture(params=["sqlite", "postgresql"])
def asking_site(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Approvals, Approvals]:
    settings, one_dir, two_dir = _asking_sites(request, tmp_path)
    one, two = Approvals.open(settings, one_dir), Approvals.open(settings, two_dir)
    request.addfinalizer(one.close)
    request.addfinalizer(two.close)
    return one, two


def test_a_plan_asked_for_is_kept_with_its_text_and_refreshed_when_asked_again(
    asking_site: tuple[Approvals, Approvals],
) -> None:
    one, two = asking_site
    sha = hashlib.sha256(PLAN.encode()).hexdigest()
    summary = {"name": "nodule-outcome", "features": ["age", "male", "nodule_diameter"]}
    assert one.requests("training-plan") == []
    first = one.ask("training-plan", sha, content=PLAN, summary=summary, by="run 17")
    assert (first.times_asked, first.asked_by, first.content) == (1, "run 17", PLAN)
    assert first.first_asked_at == first.last_asked_at
    # Another replica (or a later run) asks again: one request, refreshed; nothing decided.
    again = two.ask("training-plan", sha, content=PLAN, summary=summary, by="run 18")
    assert (again.times_asked, again.asked_by) == (2, "run 18")
    assert again.first_asked_at == first.first_asked_at
    assert again.last_asked_at >= first.last_asked_at
    (listed,) = one.requests("training-plan")
    assert listed == again and listed.summary == summary
    assert one.requests("analysis-bundle") == []
    assert one.current("training-plan", sha) is None, "asking decides nothing"

    # The admin reads exactly what is approved: a text that is not the plan's is refused.
    other = PLAN.replace("nodule-outcome", "other")
    with pytest.raises(SubjectError, match="does not have the sha256"):
        one.ask("training-plan", sha, content=other, summary=summary, by="run 19")
    with pytest.raises(SubjectError, match="is not a sha256"):
        one.ask("training-plan", "plan", content=PLAN, summary=summary, by="run 19")
    with pytest.raises(SubjectError, match="names who asks"):
        one.ask("training-plan", sha, content=PLAN, summary=summary, by=" ")
    assert one.request("training-plan", sha) == again

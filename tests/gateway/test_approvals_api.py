"""The site admin's approvals API (``/approvals``) against a real gateway process with auth on:
an analysis a trusted hub signed and sent, training plans a federated-learning run asked for;
the admin reads them and decides; bad input gets a clear 400/404/409, other roles a 403."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.analysis.approvals_site import (
    ADMIN_PERSON,
    MODEL,
    PLAN,
    QUERY_TOKEN,
    ApprovalsSite,
    ask_for_plan,
    running_approvals_site,
)
from tests.support.openapi import assert_documented, load_spec

SPEC = load_spec("gateway.yaml")
OTHER_PLAN = PLAN.replace("name: nodule-outcome", "name: nodule-outcome-2")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[ApprovalsSite]:
    workdir = tmp_path_factory.mktemp("approvals-api")
    plans = {PLAN: "run 1 of consortium", OTHER_PLAN: "run 2 of consortium"}
    with running_approvals_site(workdir, models_dir, plans) as site:
        yield site


def test_the_admin_reads_what_is_asked_and_approves_an_analysis(site: ApprovalsSite) -> None:
    analysis_id = site.send_analysis()
    listing = site.api("GET", "/approvals")
    assert_documented(SPEC, listing)
    pending = site.analysis(analysis_id)
    assert pending["state"] == "pending" and pending["decisions"] == []
    assert pending["model"]["name"] == MODEL
    assert pending["model"]["bundle_sha256"] == site.bundle.sha256
    assert pending["cohort"]["attributes"]["BodyPartExamined"] == "CHEST"

    approved = site.api(
        "POST", f"/approvals/analyses/{analysis_id}", json={"decision": "approved", "note": "IRB 7"}
    )
    assert_documented(SPEC, approved)
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "running"
    (decision,) = site.analysis(analysis_id)["decisions"]
    assert (decision["decision"], decision["by"], decision["note"]) == (
        "approved",
        ADMIN_PERSON,
        "IRB 7",
    )
    # The hub sees it running too, and a second decision is a conflict, not a second record.
    hub_view = site.api("GET", f"/federated/v1/analyses/{analysis_id}")
    assert hub_view.json()["state"] == "running"
    again = site.api("POST", f"/approvals/analyses/{analysis_id}", json={"decision": "refused"})
    assert again.status_code == 409 and "running, not pending" in again.json()["error"]["message"]
    assert_documented(SPEC, again)
    assert len(site.analysis(analysis_id)["decisions"]) == 1


def test_refusing_an_analysis_records_the_note(site: ApprovalsSite) -> None:
    # Another cohort: a subject of its own (approving the chest cohort decided nothing here).
    analysis_id = site.send_analysis({"attributes": {"ModalitiesInStudy": "CT"}})
    refused = site.api(
        "POST",
        f"/approvals/analyses/{analysis_id}",
        json={"decision": "refused", "note": "cohort too wide"},
    )
    assert refused.status_code == 200 and refused.json()["state"] == "refused"
    (decision,) = site.analysis(analysis_id)["decisions"]
    assert decision["decision"] == "refused" and decision["note"] == "cohort too wide"


def test_plans_asked_for_are_shown_with_their_text_and_decided(site: ApprovalsSite) -> None:
    sha = ask_for_plan(site.gateway.data_dir, PLAN, by="run 3 of consortium")  # asked again
    plan = site.plan(sha)
    assert plan["state"] == "asked" and plan["plan"] == PLAN
    assert plan["name"] == "nodule-outcome"
    assert plan["features"] == ["age", "male", "nodule_diameter"]
    assert (plan["asked_by"], plan["times_asked"]) == ("run 3 of consortium", 2)

    approved = site.api("POST", f"/approvals/training-plans/{sha}", json={"decision": "approved"})
    assert_documented(SPEC, approved)
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "approved"
    assert approved.json()["decided_by"] == ADMIN_PERSON
    same = site.api("POST", f"/approvals/training-plans/{sha}", json={"decision": "approved"})
    assert same.status_code == 409 and "approved already" in same.json()["error"]["message"]
    revoked = site.api(
        "POST", f"/approvals/training-plans/{sha}", json={"decision": "revoked", "note": "ethics"}
    )
    assert revoked.status_code == 200
    plan = site.plan(sha)
    assert plan["state"] == "revoked" and plan["note"] == "ethics"
    assert [d["decision"] for d in plan["decisions"]] == ["approved", "revoked"]

    # Only an approval can be revoked; the other plan was never approved.
    other = next(p for p in site.approvals()["training_plans"] if p["name"] == "nodule-outcome-2")
    never = site.api(
        "POST", f"/approvals/training-plans/{other['sha256']}", json={"decision": "revoked"}
    )
    assert never.status_code == 409 and "asked" in never.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/approvals/analyses/" + "0" * 32, {"decision": "approved"}, 404, "no analysis"),
        ("/approvals/training-plans/" + "ab" * 32, {"decision": "approved"}, 404, "no training"),
        ("/approvals/training-plans/nodule-outcome", {"decision": "approved"}, 400, "sha256"),
        ("/approvals/training-plans/PLAN", {"decision": "maybe"}, 400, "decision must be"),
        ("/approvals/training-plans/PLAN", {"decision": "approved", "by": "x"}, 400, "unknown"),
        ("/approvals/training-plans/PLAN", {"decision": "approved", "note": 7}, 400, "note"),
        ("/approvals/training-plans/PLAN", ["approved"], 400, "JSON object"),
        ("/approvals/analyses/PENDING", {"decision": "revoked"}, 400, "decision must be"),
    ],
)
def test_bad_decisions_are_refused_clearly(
    site: ApprovalsSite, path: str, body: object, status: int, words: str
) -> None:
    if "PLAN" in path:
        path = path.replace("PLAN", site.approvals()["training_plans"][0]["sha256"])
    if "PENDING" in path:
        mr = {"attributes": {"ModalitiesInStudy": "MR"}}
        path = path.replace("PENDING", site.send_analysis(mr))
    answer = site.api("POST", path, json=body)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]["message"]
    assert_documented(SPEC, answer)


def test_not_json_is_a_400_and_other_roles_are_refused(site: ApprovalsSite) -> None:
    sha = site.approvals()["training_plans"][0]["sha256"]
    garbage = site.api("POST", f"/approvals/training-plans/{sha}", content=b"\xff{")
    assert garbage.status_code == 400
    huge = site.api("POST", f"/approvals/training-plans/{sha}", json={"note": "x" * 70_000})
    assert huge.status_code == 413 and "at most" in huge.json()["error"]["message"]
    assert_documented(SPEC, huge)
    researcher = site.api("GET", "/approvals", token=QUERY_TOKEN)
    assert researcher.status_code == 403 and "admin" in researcher.text
    assert site.api("GET", "/approvals", token="not-a-token").status_code == 401

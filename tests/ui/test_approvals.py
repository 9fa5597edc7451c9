"""The jobs page's "Approvals" section in headless Chromium against a real gateway process with
auth on: an analysis a trusted hub signed and sent (pending) and a training plan a federated-
learning run asked for appear; Approve and Refuse (each asking for a note) decide through the
API, which then says so; the page passes axe and shows no identifier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.analysis.approvals_site import (
    ADMIN_PERSON,
    ADMIN_TOKEN,
    MODEL,
    PLAN,
    ApprovalsSite,
    running_approvals_site,
)
from tests.ui.conftest import Recorded, axe_violations, new_page
from tests.ui.test_jobs import identifiers_in, sign_in
from tests.ui.test_site import SCREENSHOTS

#: A second analysis, over another cohort (a subject of its own), to refuse.
HEAD_CTS = {"attributes": {"ModalitiesInStudy": "CT", "BodyPartExamined": "HEAD"}}
REFUSED_PLAN = PLAN.replace("name: nodule-outcome", "name: smoking-outcome")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[ApprovalsSite]:
    workdir = tmp_path_factory.mktemp("approvals-ui")
    plans = {PLAN: "consortium run 4", REFUSED_PLAN: "consortium run 5"}
    with running_approvals_site(workdir, models_dir, plans) as site:
        yield site


#: What the page says once a button's decision is taken and shown.
DONE = {"Approve": "approved", "Refuse": "refused", "Revoke": "revoked"}


def decide(page: Any, button: str, note: str) -> None:
    """Press a decision button, write the note it asks for, and wait for the page to say so."""
    page.once("dialog", lambda dialog: dialog.accept(note))
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name=button).click()
    assert answer.value.status == 200, answer.value.text()
    label, what = button.split(" ", 1)
    page.get_by_role("status").filter(has_text=f"{what}: {DONE[label]}.").wait_for()


def test_the_admin_approves_and_refuses_on_the_jobs_page(site: ApprovalsSite, browser: Any) -> None:
    approve_id = site.send_analysis()
    refuse_id = site.send_analysis(HEAD_CTS)
    plans = {p["name"]: p for p in site.approvals()["training_plans"]}
    recorded = Recorded()
    page = new_page(browser, recorded, bypass_csp=True)
    sign_in(page, site.gateway.url, ADMIN_TOKEN)

    # What waits: both analyses (model, hub, bundle, cohort in words) and both plans.
    pending = page.locator("#pending-analyses")
    pending.wait_for()
    first = pending.locator(f"tr[data-analysis='{approve_id}']")
    assert first.locator("th").inner_text() == f"{MODEL} 1.0.0"
    row = first.inner_text()
    assert "consortium" in row and site.bundle.sha256 in row
    assert "body part CHEST; modalities in study CT" in row, row
    assert pending.locator(f"tr[data-analysis='{refuse_id}']").count() == 1
    asked = page.locator("#asked-plans")
    plan_row = asked.locator(f"tr[data-plan='{plans['nodule-outcome']['sha256']}']")
    assert "age, male, nodule_diameter" in plan_row.inner_text()
    assert "consortium run 4" in plan_row.inner_text()
    # The plan's text behind its disclosure: hidden, then shown.
    assert not plan_row.locator("pre").is_visible()
    plan_row.get_by_text("Show plan nodule-outcome").click()
    assert plan_row.locator("pre").inner_text().strip() == PLAN.strip()
    assert axe_violations(page) == [], "approvals waiting"

    # Approve the analysis: the API says running, with the admin's name and note.
    analysis = f"analysis {MODEL} 1.0.0 from consortium over body part"
    decide(page, f"Approve {analysis} CHEST; modalities in study CT", "IRB 2026-11 approved")
    page.locator(f"#pending-analyses tr[data-analysis='{approve_id}']").wait_for(state="detached")
    approved = site.analysis(approve_id)
    assert approved["state"] == "running"
    assert approved["decisions"][-1] == {
        **approved["decisions"][-1],
        "decision": "approved",
        "by": ADMIN_PERSON,
        "note": "IRB 2026-11 approved",
    }
    # The screenshot for docs/dashboard.md: one of each waiting, a plan's text open, one decided.
    page.locator("#asked-plans").get_by_text("Show plan nodule-outcome").click()
    page.locator("#approvals").screenshot(path=str(SCREENSHOTS / "approvals.png"))
    # Refuse the other one: its buttons are named by its cohort.
    decide(page, f"Refuse {analysis} HEAD; modalities in study CT", "not our question")
    assert site.analysis(refuse_id)["state"] == "refused"
    assert site.analysis(refuse_id)["decisions"][-1]["note"] == "not our question"
    page.locator("#no-pending-analyses").wait_for()

    # Plans: approve one, refuse the other; then revoke the approval.
    decide(page, "Approve plan nodule-outcome", "")
    decide(page, "Refuse plan smoking-outcome", "label not collected here")
    assert site.plan(plans["nodule-outcome"]["sha256"])["state"] == "approved"
    refused = site.plan(plans["smoking-outcome"]["sha256"])
    assert (refused["state"], refused["note"]) == ("refused", "label not collected here")
    page.locator("#no-asked-plans").wait_for()

    # Decided, with who and when: four rows, the notes shown.
    decided = page.locator("#decided tbody tr")
    assert decided.count() == 4
    text = page.locator("#decided").inner_text()
    assert "approved; now running" in text and "refused" in text
    assert text.count(ADMIN_PERSON) == 4 and "not our question" in text
    decide(page, "Revoke plan nodule-outcome", "consent withdrawn")
    assert site.plan(plans["nodule-outcome"]["sha256"])["state"] == "revoked"
    page.locator("#decided tr", has_text="consent withdrawn").wait_for()
    assert axe_violations(page) == [], "approvals decided"

    # A cancelled prompt decides nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Approve plan smoking-outcome").click()
    assert site.plan(plans["smoking-outcome"]["sha256"])["state"] == "refused"

    # No identifier shown or sent (the model's version is UID-shaped, and is no identifier);
    # the page logged no other error.
    shown = page.locator("body").inner_text().replace(f"{MODEL} 1.0.0", MODEL)
    assert not identifiers_in(shown), shown
    assert not identifiers_in("\n".join(recorded.requests))
    # (The one console error allowed: the 401 of the page's first look, before signing in.)
    assert all("401" in error for error in recorded.console_errors), recorded.console_errors

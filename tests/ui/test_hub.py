"""The dashboard at a hub of three sites, one of them stopped: a column per site with its
status, the others and the combined total still shown, charts per site."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.federated.conftest import QUERY_TOKEN
from tests.federated.test_hub import HUB_TOKEN, Sites, hub_process, site_patients
from tests.support.ports import free_port
from tests.ui.conftest import (
    Recorded,
    attrition,
    new_page,
    parse_count,
    sign_in,
    wait_for_counts,
)
from tests.ui.test_site import SCREENSHOTS, add_filter, build_readme_cohort, generation


def test_a_hub_of_three_sites_with_one_stopped(tmp_path: Path, browser: Any) -> None:
    sites = Sites(tmp_path)
    try:
        configs = [
            sites.site("north", site_patients("n", 30, 20, 15)),
            sites.site("south", site_patients("s", 25, 25, 12)),
            {"name": "east", "url": f"http://127.0.0.1:{free_port()}/federated/v1"},
        ]
        with hub_process(tmp_path, configs, timeout_seconds=5) as hub_api:
            hub = hub_api.removesuffix("/federated/v1")
            page = new_page(browser)
            sign_in(page, f"{hub}/ui/", HUB_TOKEN)
            build_readme_cohort(page)
            # The options are the hub's union of its sites' vocabularies, each with the sites
            # that listed it (the stopped one lists nothing).
            finding_types = page.locator("fieldset[data-kind='measurement']").get_by_label(
                "Of finding type"
            )
            assert finding_types.locator("option").all_inner_texts() == [
                "any finding",
                "Nodule (SCT:27925004) — at north, south",
            ]
            rows = attrition(page)
            assert list(rows[0]) == [
                "Step",
                "Filter",
                "north",
                "south",
                "east",
                "All sites",
                "Cost",
            ]
            for row in rows:
                assert row["east"] == "error", row  # the stopped site says so
            # Exact answers relayed (the sites gave the hub the research office's role).
            assert [parse_count(r["north"])[0] for r in rows] == [50, 30, 30, 15]
            assert [parse_count(r["south"])[0] for r in rows] == [50, 25, 25, 12]
            assert [parse_count(r["All sites"])[0] for r in rows] == [100, 55, 55, 27]
            # A suppressed site count shows as "<k" and the total as an interval.
            add_filter(page, "Age at the study (years)")
            age = page.locator("fieldset[data-kind='age']")
            start = generation(page)
            age.get_by_label("From age (years)").fill("78")
            age.get_by_label("From age (years)").press("Enter")
            wait_for_counts(page, start)
            last = attrition(page)[-1]
            assert last["north"] == "<10" and last["south"] == "<10"
            assert last["All sites"] == "0–18"
            page.screenshot(path=str(SCREENSHOTS / "dashboard-hub-sites.png"), full_page=True)
            # Charts per site: each site side by side with the total.
            page.get_by_label("Chart", exact=True).select_option(label="Sex (bars)")
            page.get_by_role("button", name="Draw chart").click()
            page.locator("#chart-data").wait_for()
            table = page.locator("#chart-data").inner_text()
            for name in ("north", "south", "east", "All sites"):
                assert name in table
    finally:
        sites.close()


def test_at_a_hub_the_cost_shown_is_the_hubs_and_an_unaffordable_question_is_not_sent(
    tmp_path: Path, browser: Any
) -> None:
    """Two sites answering the query role, one with budget for two questions only, and a
    stopped one: the vocabulary's and each count's price shown are the hub's /cost answer
    (each site's part), the remaining budget per site is the hub's /budget answer, and once
    one site cannot pay, the next question is not sent to any."""
    sites = Sites(tmp_path)
    try:
        configs = [
            sites.site("north", site_patients("n", 30, 20, 15), token=QUERY_TOKEN),
            sites.site(
                "south",
                site_patients("s", 25, 25, 12),
                token=QUERY_TOKEN,
                dp={"epsilon_per_query": 0.75, "epsilon_per_person": 1.5},
            ),
            {"name": "east", "url": f"http://127.0.0.1:{free_port()}/federated/v1"},
        ]
        with hub_process(tmp_path, configs, timeout_seconds=5) as hub_api:
            headers = {"Authorization": f"Bearer {HUB_TOKEN}"}

            def cost(body: dict[str, Any]) -> dict[str, Any]:
                answer: dict[str, Any] = httpx.post(
                    f"{hub_api}/cost", json=body, headers=headers, timeout=30
                ).json()
                return answer

            everyone = {"cohort": {}, "level": "patients", "aggregate": {"kind": "count"}}
            vocabulary = cost({"aggregate": {"kind": "vocabulary"}})
            first = cost(everyone)
            assert vocabulary["epsilon"] == first["epsilon"] == 1.5  # 0.75 at each of two
            recorded = Recorded()
            page = new_page(browser, recorded)
            sign_in(page, f"{hub_api.removesuffix('/federated/v1')}/ui/", HUB_TOKEN)
            note = page.locator("#vocabulary-source").inner_text()
            assert (
                "Loading them cost ε 1.50 in all "
                "(north ε 0.75, south ε 0.75, east: no answer (error))"
            ) in note
            assert page.locator("#budget-last").inner_text() == (
                "This change: 1 new question(s) cost ε 1.50 (north ε 0.75, south ε 0.75)."
            )
            # The remaining budget of each site, as the hub's /budget says it.
            budget = httpx.get(f"{hub_api}/budget", headers=headers, timeout=30).json()
            left = {s["name"]: s["answer"]["epsilon_remaining"] for s in budget["sites"][:2]}
            assert left == {"north": 13.5, "south": 0.0}
            shown = page.locator("#budget-sites li").all_inner_texts()
            assert shown[0].startswith("north: ε 13.50 left")
            assert shown[1].startswith("south: ε 0.00 left")
            assert shown[2] == "east: not known (error)"
            # South cannot pay a new question: the hub's /cost says so, and it is not sent.
            women = {**everyone, "cohort": {"attributes": {"PatientSex": "F"}}}
            assert cost(women)["affordable"] is False
            add_filter(page, "Sex")
            assert attrition(page)[-1]["All sites"] == "not sent: over budget"
            assert "1 not sent: over budget" in page.locator("#budget-last").inner_text()
            assert not [r for r in recorded.requests if "PatientSex" in r and "/aggregate" in r]
            after = httpx.get(f"{hub_api}/budget", headers=headers, timeout=30).json()
            assert [s["answer"]["epsilon_spent"] for s in after["sites"][:2]] == [1.5, 1.5]
    finally:
        sites.close()

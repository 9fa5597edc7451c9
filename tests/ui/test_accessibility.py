"""axe-core finds no serious or critical violation on any page; the builder works from the
keyboard alone; screenshots of the builder and a chart for the README."""

from __future__ import annotations

from typing import Any

from tests.federated.conftest import ADMIN_TOKEN, QUERY_TOKEN
from tests.federated.test_vocabulary import vocabulary_patients
from tests.ui.conftest import (
    attrition,
    axe_violations,
    generation,
    new_page,
    wait_for_counts,
)
from tests.ui.test_site import SCREENSHOTS, build_readme_cohort


def test_axe_finds_no_serious_violation_on_any_page(make_ui_site: Any, browser: Any) -> None:
    # A site large enough for the noisy vocabulary: the builder offers its lists (the free-text
    # inputs of a site without one are checked in test_site.py).
    site = make_ui_site(vocabulary_patients(400, 3))
    page = new_page(browser, bypass_csp=True)
    page.goto(f"{site.url}/ui/")
    page.get_by_label("Access token").wait_for()
    assert axe_violations(page) == [], "login form"
    page.get_by_label("Access token").fill(QUERY_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#attrition[data-state='done']").wait_for()
    build_readme_cohort(page)
    for kind in ("Age histogram", "Sex by age (heat map)"):
        page.get_by_label("Chart", exact=True).select_option(label=kind)
        page.get_by_role("button", name="Draw chart").click()
        page.locator("#chart svg").wait_for()
        assert axe_violations(page) == [], kind
    page.locator("#builder").screenshot(path=str(SCREENSHOTS / "dashboard-builder.png"))
    page.get_by_label("Chart", exact=True).select_option(label="Age histogram")
    page.get_by_role("button", name="Draw chart").click()
    page.locator("#chart svg").wait_for()
    page.locator("#charts-section").screenshot(path=str(SCREENSHOTS / "dashboard-chart.png"))
    jobs = new_page(browser, bypass_csp=True)
    # The jobs page (its API is the gateway's; this site has none, so it shows the error).
    jobs.goto(f"{site.url}/ui/jobs")
    jobs.get_by_label("Access token").fill(ADMIN_TOKEN)
    jobs.get_by_role("button", name="Sign in").click()
    jobs.locator("#status").wait_for()
    assert axe_violations(jobs) == [], "jobs page"


def test_the_builder_works_from_the_keyboard_alone(make_ui_site: Any, browser: Any) -> None:
    site = make_ui_site()
    page = new_page(browser)
    page.goto(f"{site.url}/ui/")
    # Tab to the token field, type, Enter.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "token":
            break
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(QUERY_TOKEN)
    page.keyboard.press("Enter")
    page.locator("#attrition[data-state='done']").wait_for()

    def tab_to(element_id: str) -> None:
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == element_id:
                return
        raise AssertionError(f"Tab never reached #{element_id}")

    # Add a sex filter: the choice list and the button, from the keyboard.
    tab_to("add-kind")
    page.keyboard.press("ArrowDown")  # "Sex", the second kind
    start = generation(page)
    tab_to("add-filter")
    page.keyboard.press("Enter")
    wait_for_counts(page, start)
    # The new filter's first control has the focus: choose Male with the arrow key.
    assert page.evaluate("document.activeElement.tagName") == "SELECT"
    start = generation(page)
    page.keyboard.press("ArrowDown")
    wait_for_counts(page, start)
    assert attrition(page)[-1]["Filter"] == "sex: Male"
    # Switch it off with the space bar on its checkbox.
    switch = page.locator("fieldset[data-kind='sex'] input[type=checkbox]").get_attribute("id")
    assert switch is not None
    tab_to(switch)
    start = generation(page)
    page.keyboard.press("Space")
    wait_for_counts(page, start)
    assert len(attrition(page)) == 1

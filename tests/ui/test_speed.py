"""Speed: a filter change to its new count on screen (p95), at a site and at a hub of three.

Each change asks one new question (the age range moves by one year each time), so each is a
/cost and an /aggregate round trip (plus the hub's fan-out), timed by the page itself
(``performance.measure("fedgate:count")`` from the change to the table drawn). Targets
(issue 15): 150 ms at a site, 300 ms at a hub of three sites; recorded in docs/benchmarks.md.
Run: ``PYTHONPATH=$PWD .venv/bin/python -m pytest tests/ui/test_speed.py -s``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.federated.conftest import QUERY_TOKEN
from tests.federated.test_hub import HUB_TOKEN, Sites, hub_process, site_patients
from tests.ui.conftest import generation, new_page, sign_in, wait_for_counts
from tests.ui.test_site import add_filter, build_readme_cohort

CHANGES = 40
#: Enough budget for the timed changes (the defaults allow 20 questions a day).
BIG_BUDGET = {"dp": {"epsilon_per_person": 1000.0, "epsilon_per_site": 10000.0}}


def p95_of_changes(page: Any) -> tuple[float, float]:
    """(median, p95) in ms of CHANGES changes of the age filter's upper bound."""
    add_filter(page, "Age at the study (years)")
    upper = page.locator("fieldset[data-kind='age']").get_by_label("To age (years)")
    page.evaluate("performance.clearMeasures('fedgate:count')")
    for n in range(CHANGES):
        start = generation(page)
        upper.fill(str(60 + n))
        upper.press("Enter")
        wait_for_counts(page, start)
    durations = sorted(
        page.evaluate("performance.getEntriesByName('fedgate:count').map(entry => entry.duration)")
    )
    assert len(durations) == CHANGES
    return durations[len(durations) // 2], durations[int(0.95 * (len(durations) - 1))]


def test_a_filter_change_at_a_site(make_ui_site: Any, browser: Any) -> None:
    site = make_ui_site(**BIG_BUDGET)
    page = new_page(browser)
    sign_in(page, f"{site.url}/ui/", QUERY_TOKEN)
    build_readme_cohort(page)
    median, p95 = p95_of_changes(page)
    print(f"\nsite: filter change to new count, median {median:.0f} ms, p95 {p95:.0f} ms")
    assert p95 < 150 * 3, "far over the 150 ms target"  # the target itself: docs/benchmarks.md


def test_a_filter_change_at_a_hub_of_three_sites(tmp_path: Path, browser: Any) -> None:
    sites = Sites(tmp_path)
    try:
        configs = [
            sites.site(name, site_patients(name[0], 300, 300, 150), QUERY_TOKEN, **BIG_BUDGET)
            for name in ("north", "south", "east")
        ]
        with hub_process(tmp_path, configs) as hub_api:
            page = new_page(browser)
            sign_in(page, f"{hub_api.removesuffix('/federated/v1')}/ui/", HUB_TOKEN)
            build_readme_cohort(page)
            median, p95 = p95_of_changes(page)
    finally:
        sites.close()
    print(f"\nhub of three: filter change to new count, median {median:.0f} ms, p95 {p95:.0f} ms")
    assert p95 < 300 * 3, "far over the 300 ms target"

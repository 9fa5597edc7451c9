"""The dashboard at a hub of three sites, one of them stopped: a column per site with its
status, the others and the combined total still shown, charts per site."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.federated.test_hub import HUB_TOKEN, Sites, hub_process, site_patients
from tests.support.ports import free_port
from tests.ui.conftest import attrition, new_page, parse_count, sign_in, wait_for_counts
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

"""The dashboard at a site: the README's cohort built by clicking, its counts against the API,
switching filters off and on, saved and shared cohorts, no identifier anywhere, accessibility."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx

from tests.federated.conftest import EXACT_TOKEN, QUERY_TOKEN
from tests.federated.synthetic import (
    DIAMETER,
    NODULE,
    SyntheticFinding,
    SyntheticPatient,
    SyntheticStudy,
)
from tests.federated.test_no_identifiers import (
    DATE_SHAPED,
    KEY_SHAPED,
    NAME_SHAPED,
    PATIENT_ID_SHAPED,
    UID_SHAPED,
)
from tests.federated.test_vocabulary import RARE_MANUFACTURER, vocabulary_patients
from tests.ui.conftest import (
    Recorded,
    UiSite,
    attrition,
    axe_violations,
    generation,
    new_page,
    parse_count,
    sign_in,
    wait_for_counts,
)

#: Where the tests put their screenshots: the git-ignored test-output/, or, with
#: FEDGATE_UPDATE_SCREENSHOTS=1, the committed ones under docs/ (noisy counts differ each run,
#: so an ordinary run must not dirty the tree).
SCREENSHOTS = Path(__file__).resolve().parents[2] / (
    "docs/screenshots"
    if os.environ.get("FEDGATE_UPDATE_SCREENSHOTS")
    else "test-output/screenshots"
)
SCREENSHOTS.mkdir(parents=True, exist_ok=True)

#: The README's example, one step per filter as the test clicks them.
README_STEPS: list[dict[str, Any]] = [
    {},
    {"attributes": {"PatientSex": "F"}},
    {"attributes": {"PatientSex": "F"}, "patient_has": {"modalities": ["CT"]}},
    {
        "attributes": {"PatientSex": "F"},
        "patient_has": {"modalities": ["CT"]},
        "findings": [
            {"type": NODULE, "measurements": [{"concept": DIAMETER, "min": 8, "unit": "mm"}]}
        ],
    },
]


def api_count(site: UiSite, cohort: dict[str, Any], token: str) -> dict[str, Any]:
    response = httpx.post(
        f"{site.api}/aggregate",
        json={"cohort": cohort, "level": "patients", "aggregate": {"kind": "count"}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def add_filter(page: Any, label: str) -> None:
    before = generation(page)
    page.get_by_label("Add a filter").select_option(label=label)
    page.get_by_role("button", name="Add filter").click()
    wait_for_counts(page, before)


def choose(fieldset: Any, label: str, value: str) -> None:
    """Choose ``value`` in the control labelled ``label``: the vocabulary's most common option
    is the default of a list; without a vocabulary (a site too small for the noisy vocabulary's
    threshold) the control is a free-text input, and the value is typed."""
    control = fieldset.get_by_label(label)
    if control.evaluate("node => node.tagName") == "SELECT":
        assert control.input_value() == value
    else:
        control.fill(value)
        control.press("Enter")


def build_readme_cohort(page: Any) -> None:
    """Women with a CT study and a nodule of 8 mm or more, by clicking."""
    add_filter(page, "Sex")  # Female is the default choice
    add_filter(page, "Has a study of modality (per patient)")  # CT is the first modality
    add_filter(page, "Measurement of a finding")  # a nodule's diameter in mm by default
    measurement = page.locator("fieldset[data-kind='measurement']")
    choose(measurement, "Of finding type", NODULE)
    choose(measurement, "Measurement", DIAMETER)
    choose(measurement, "Unit", "mm")
    before = generation(page)
    measurement.get_by_label("At least").fill("8")
    measurement.get_by_label("At least").press("Enter")
    wait_for_counts(page, before)


def test_the_readme_cohort_built_by_clicking_shows_the_apis_counts(
    make_ui_site: Any, browser: Any
) -> None:
    site = make_ui_site()
    page = new_page(browser)
    sign_in(page, f"{site.url}/ui/", EXACT_TOKEN)
    build_readme_cohort(page)
    rows = attrition(page)
    assert [row["Filter"] for row in rows] == [
        "All patients",
        "sex: Female",
        "has a CT study",
        "Nodule (SCT:27925004) with Diameter (SCT:81827009) ≥ 8 mm",
    ]
    # The exact role: the shown counts equal the API's answers for the same cohorts.
    for row, cohort in zip(rows, README_STEPS, strict=True):
        expected = api_count(site, cohort, EXACT_TOKEN)
        assert parse_count(row["Patients"]) == (expected["count"], None), row
    assert parse_count(rows[-1]["Patients"])[0] == 18  # the generated cohort's truth
    # The dashboard asks exactly the README's question.
    shown = json.loads(page.locator("#request-json").inner_text())
    assert shown == {
        "cohort": README_STEPS[-1],
        "level": "patients",
        "aggregate": {"kind": "count"},
    }


def test_noisy_counts_show_their_interval(make_ui_site: Any, browser: Any) -> None:
    site = make_ui_site()
    page = new_page(browser)
    sign_in(page, f"{site.url}/ui/", QUERY_TOKEN)
    build_readme_cohort(page)
    rows = attrition(page)
    for row, cohort in zip(rows, README_STEPS, strict=True):
        count, interval = parse_count(row["Patients"])
        assert interval is not None and interval[0] <= count <= interval[1], row
        # The same question asked by the same person again is the same draw, free.
        again = api_count(site, cohort, QUERY_TOKEN)
        assert (count, tuple(again["interval"])) == (again["count"], interval)
        assert again["privacy"]["epsilon"] == 0.0
    # The vocabulary and four counts, each of epsilon 0.75, were asked; the page says what is
    # left.
    assert "ε 11.25" in page.locator("#budget-remaining").inner_text()


def test_a_filter_switched_off_and_on_shows_the_same_numbers_at_no_cost(
    make_ui_site: Any, browser: Any
) -> None:
    site = make_ui_site()
    page = new_page(browser)
    sign_in(page, f"{site.url}/ui/", QUERY_TOKEN)
    build_readme_cohort(page)
    before = attrition(page)
    budget_before = page.locator("#budget-remaining").inner_text()
    sex = page.locator("fieldset[data-kind='sex']").get_by_role("checkbox")
    start = generation(page)
    sex.uncheck()
    wait_for_counts(page, start)
    switched_off = attrition(page)
    assert len(switched_off) == 3 and "sex" not in " ".join(r["Filter"] for r in switched_off)
    spent = page.locator("#budget-remaining").inner_text()
    assert spent != budget_before  # two new questions were charged
    start = generation(page)
    sex.check()
    wait_for_counts(page, start)
    assert attrition(page) == [{**row, "Cost": "0 (answered before)"} for row in before]
    assert page.locator("#budget-remaining").inner_text() == spent
    assert "answered before: cost 0" in page.locator("#budget-last").inner_text()


def test_a_saved_cohort_reloads_its_link_opens_it_and_its_export_is_accepted(
    make_ui_site: Any, browser: Any, tmp_path: Path
) -> None:
    site = make_ui_site()
    page = new_page(browser)
    sign_in(page, f"{site.url}/ui/", EXACT_TOKEN)
    build_readme_cohort(page)
    built = attrition(page)
    page.get_by_label("Name", exact=True).fill("women CT nodule 8mm")
    page.get_by_role("button", name="Save cohort").click()
    # Rename, then clear the builder and load the saved cohort back.
    page.get_by_label("Name", exact=True).fill("README cohort")
    page.get_by_role("button", name="Rename to the name above").click()
    assert page.get_by_label("Saved cohort").locator("option").all_inner_texts() == [
        "README cohort"
    ]
    start = generation(page)
    page.get_by_role("button", name="Remove all filters").click()
    wait_for_counts(page, start)
    assert len(attrition(page)) == 1
    start = generation(page)
    page.get_by_role("button", name="Load").click()
    wait_for_counts(page, start)
    # The same filters (shown in the builder's fixed order: per-patient modalities, then
    # attributes, then findings), the same cohort, the same count, no new question.
    loaded = attrition(page)
    assert sorted(r["Filter"] for r in loaded) == sorted(r["Filter"] for r in built)
    assert loaded[-1]["Patients"] == built[-1]["Patients"]
    assert json.loads(page.locator("#request-json").inner_text())["cohort"] == README_STEPS[-1]
    # What is saved is the cohort language's JSON, nothing else.
    stored = json.loads(page.evaluate("() => localStorage.getItem('fedgate.cohorts')"))
    assert stored == {"README cohort": README_STEPS[-1]}

    # The shared link opens the same cohort in a new browser session.
    link = page.get_by_label("Link to this cohort").input_value()
    assert "#cohort=" in link and "?" not in link
    other = new_page(browser)
    other.goto(link)
    other.get_by_label("Access token").fill(EXACT_TOKEN)
    other.get_by_role("button", name="Sign in").click()
    other.locator("#attrition[data-state='done']").wait_for()
    without_cost = [{k: v for k, v in row.items() if k != "Cost"} for row in loaded]
    assert [{k: v for k, v in row.items() if k != "Cost"} for row in attrition(other)] == (
        without_cost
    )

    # The exported file is an /aggregate request the API accepts; the curl line asks it.
    with page.expect_download() as download:
        page.get_by_role("link", name="Export the cohort as JSON").click()
    exported = json.loads(Path(download.value.path()).read_text())
    answer = httpx.post(
        f"{site.api}/aggregate",
        json=exported,
        headers={"Authorization": f"Bearer {EXACT_TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["count"] == 18
    curl = page.locator("#curl").inner_text()
    assert curl.startswith('curl -H "Authorization: Bearer $TOKEN"')
    assert curl.endswith(f"{site.url}/federated/v1/aggregate")
    page.get_by_role("button", name="Delete").click()
    assert json.loads(page.evaluate("() => localStorage.getItem('fedgate.cohorts')")) == {}


OBJECT_URL = re.compile(r"blob:ORIGIN/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def scan_for_identifiers(texts: list[str]) -> list[str]:
    found = []
    for text in texts:
        for pattern in (UID_SHAPED, DATE_SHAPED, NAME_SHAPED, PATIENT_ID_SHAPED, KEY_SHAPED):
            # Version numbers of the chart library (6.4.0) are UID-shaped but not identifiers:
            # scan what the dashboard shows and sends, not the library's source.
            found += [
                f"{pattern.pattern!r}: {m.group(0)} in "
                f"{text[max(m.start() - 160, 0) : m.end() + 80]!r}"
                for m in pattern.finditer(text)
            ]
    return found


def test_no_page_or_request_carries_an_identifier(make_ui_site: Any, browser: Any) -> None:
    site = make_ui_site()
    recorded = Recorded()
    page = new_page(browser, recorded)
    sign_in(page, f"{site.url}/ui/", EXACT_TOKEN)
    build_readme_cohort(page)
    # A study-year filter: asked as years, never as a date.
    add_filter(page, "Study year")
    years = page.locator("fieldset[data-kind='years']")
    start = generation(page)
    years.get_by_label("From year").fill("2023")
    years.get_by_label("From year").press("Enter")
    wait_for_counts(page, start)
    for kind in ("Age histogram", "Sex by age (heat map)", "Measurement histogram"):
        page.get_by_label("Chart", exact=True).select_option(label=kind)
        page.get_by_role("button", name="Draw chart").click()
        page.locator("#chart-data").wait_for()
    page.get_by_label("Name", exact=True).fill("scan")
    page.get_by_role("button", name="Save cohort").click()
    texts = [page.inner_text("body"), page.content().split("<body", 1)[1]]
    texts += [page.evaluate("() => JSON.stringify(localStorage)")]
    texts += [page.get_by_label("Link to this cohort").input_value()]
    sent = [r for r in recorded.requests if "/ui/static/vendor/" not in r]
    assert any("/federated/v1/aggregate" in r for r in sent)
    assert any('"StudyDate":"2023-"' in r for r in sent)
    # The server's own address (127.0.0.1) is shaped like a UID; it is no patient's. The
    # export link is an object URL the browser names with a random UUID, whose last group is
    # twelve hex digits: all decimal one time in 290, and then shaped like a salted key.
    scanned = [
        OBJECT_URL.sub("blob:ORIGIN/UUID", text.replace(site.url, "ORIGIN"))
        for text in texts + sent
    ]
    assert scan_for_identifiers(scanned) == []
    # No script error (Chromium also logs each non-2xx answer, e.g. the 404 of a server
    # without the vocabulary endpoint, which the page expects).
    assert [e for e in recorded.console_errors if not e.startswith("Failed to load")] == []


def options_of(page: Any, fieldset: str, label: str) -> list[str]:
    """The option values of a select, or the values of a group of checkboxes."""
    locator = page.locator(f"fieldset[data-kind='{fieldset}']")
    if label == "Modalities":
        values: list[str] = locator.locator("input[type=checkbox][id*='-m-']").evaluate_all(
            "nodes => nodes.map(node => node.id.split('-m-')[1])"
        )
        return values
    texts: list[str] = (
        locator.get_by_label(label)
        .locator("option")
        .evaluate_all("nodes => nodes.map(node => node.value)")
    )
    return texts


def test_the_builders_options_are_the_sites_vocabulary_priced_before_loading(
    make_ui_site: Any, browser: Any
) -> None:
    """400 women hold the README's values; three men hold values nobody else has (an MR of
    the head from another manufacturer, a mass). The noisy vocabulary lists the first, not
    the second; the builder offers exactly what it lists."""
    site = make_ui_site(vocabulary_patients(400, 3))
    headers = {"Authorization": f"Bearer {QUERY_TOKEN}"}
    recorded = Recorded()
    page = new_page(browser, recorded)
    held: list[Any] = []

    def hold(route: Any) -> None:  # answered below, once the page has shown the price
        held.append(route)

    page.route("**/federated/v1/vocabulary", hold)
    page.goto(f"{site.url}/ui/")
    page.get_by_label("Access token").fill(QUERY_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    # Before the vocabulary is asked, the page says what loading it costs: /cost's answer.
    note = page.locator("#vocabulary-source")
    page.wait_for_function("() => document.getElementById('vocabulary-source').dataset.cost")
    page.wait_for_timeout(200)
    assert len(held) == 1
    cost = httpx.post(
        f"{site.api}/cost", json={"aggregate": {"kind": "vocabulary"}}, headers=headers
    )
    assert cost.json()["epsilon"] == 0.75 and cost.json()["cached"] is False
    assert "Loading the options (what the sites hold) costs ε 0.75" in note.inner_text()
    # Priced first (POST /cost), then asked (GET /vocabulary, held here), not yet charged.
    order = [
        n
        for n, r in enumerate(recorded.requests)
        if ("/cost" in r and '"vocabulary"' in r) or "/federated/v1/vocabulary" in r
    ]
    assert len(order) == 2 and "/cost" in recorded.requests[order[0]]
    assert httpx.get(f"{site.api}/budget", headers=headers).json()["epsilon_spent"] == 0
    held[0].continue_()
    page.unroute("**/federated/v1/vocabulary", hold)
    page.locator("#attrition[data-state='done']").wait_for(timeout=30_000)
    assert "Loading them cost ε 0.75" in note.inner_text()
    answer = httpx.get(f"{site.api}/vocabulary", headers=headers).json()  # cached: free
    listed = answer["vocabulary"]

    # The builder offers what the vocabulary lists, most common first; a value three patients
    # hold is not offered, and no option shows a count (they order options, not cohorts).
    for kind in ("Has a study of modality (per patient)", "Body part", "Manufacturer"):
        add_filter(page, kind)
    add_filter(page, "Finding present or absent")
    add_filter(page, "Measurement of a finding")

    def by_count(name: str, key: str = "value") -> list[str]:
        return [e[key] for e in sorted(listed[name], key=lambda e: -e["count"])]

    assert options_of(page, "modalities", "Modalities") == by_count("modality") == ["CT"]
    assert options_of(page, "body_part", "Body part") == by_count("body_part") == ["CHEST"]
    manufacturers = options_of(page, "manufacturer", "Manufacturer")
    assert manufacturers == by_count("manufacturer") and RARE_MANUFACTURER not in manufacturers
    assert options_of(page, "finding", "Finding type") == by_count("finding_type") == [NODULE]
    assert options_of(page, "measurement", "Measurement") == [DIAMETER]
    shown = page.locator("#builder").inner_text()
    assert "HEAD" not in shown and "MR" not in shown and "Mass" not in shown
    labels = page.locator("#builder option").all_inner_texts()
    assert "Nodule (SCT:27925004)" in labels
    # No number in any option but inside its code (SCHEME:CODE): no count is shown.
    assert not [label for label in labels if re.search(r"\d", re.sub(r"\b[A-Z]+:\S+", "", label))]

    # Reloaded: the same question, answered before in this period, costs 0 and is not charged.
    spent = httpx.get(f"{site.api}/budget", headers=headers).json()["epsilon_spent"]
    page.reload()
    page.locator("#attrition[data-state='done']").wait_for(timeout=30_000)
    assert "Loading them cost 0 (answered before in this period)" in note.inner_text()
    assert httpx.get(f"{site.api}/budget", headers=headers).json()["epsilon_spent"] == spent


def test_a_vocabulary_the_budget_cannot_pay_is_not_asked_and_values_are_typed(
    make_ui_site: Any, browser: Any
) -> None:
    site = make_ui_site(dp={"epsilon_per_query": 0.75, "epsilon_per_person": 1.0})
    api_count(site, {}, QUERY_TOKEN)  # 0.25 left: less than one question
    recorded = Recorded()
    page = new_page(browser, recorded, bypass_csp=True)
    sign_in(page, f"{site.url}/ui/", QUERY_TOKEN)
    note = page.locator("#vocabulary-source").inner_text()
    assert "not loaded" in note and "ε 0.75" in note and "type the values" in note
    assert not [r for r in recorded.requests if "/federated/v1/vocabulary" in r]
    # Free-text inputs instead of lists; the typed finding type is asked like a chosen one.
    add_filter(page, "Finding present or absent")
    finding = page.locator("fieldset[data-kind='finding']")
    typed = finding.get_by_label("Finding type")
    assert typed.evaluate("node => node.tagName") == "INPUT"
    typed.fill(NODULE)
    start = generation(page)
    typed.press("Enter")
    wait_for_counts(page, start)
    assert attrition(page)[-1]["Filter"] == "Nodule (SCT:27925004) present"
    assert attrition(page)[-1]["Patients"] == "not sent: over budget"
    assert json.loads(page.locator("#request-json").inner_text())["cohort"] == {
        "findings": [{"presence": "present", "type": NODULE}]
    }
    assert axe_violations(page) == []  # the free-text inputs are labelled too


def test_an_algorithm_and_its_version_are_chosen_from_the_vocabulary(
    make_ui_site: Any, browser: Any
) -> None:
    """The 'algorithm and version' filter: the versions the site's vocabulary lists, and the
    count of one version's results equal to the API's."""
    patients = [
        SyntheticPatient(
            f"V{i}",
            "F",
            [
                SyntheticStudy(
                    findings=[
                        SyntheticFinding(NODULE, 9.0, algorithm_version="2.0" if i < 12 else "1.0")
                    ]
                )
            ],
        )
        for i in range(30)
    ]
    site = make_ui_site(patients)
    page = new_page(browser)
    sign_in(page, f"{site.url}/ui/", EXACT_TOKEN)
    add_filter(page, "Analysed by algorithm")
    fieldset = page.locator("fieldset[data-kind='algorithm']")
    assert fieldset.get_by_label("Algorithm").input_value() == "lung-nodules"
    versions = fieldset.get_by_label("Version")
    assert sorted(versions.locator("option").all_inner_texts()) == ["1.0", "2.0", "any version"]
    before = generation(page)
    versions.select_option("2.0")
    wait_for_counts(page, before)
    expected = api_count(
        site,
        {
            "findings": [
                {"algorithm": "lung-nodules", "algorithm_version": "2.0", "presence": "any"}
            ]
        },
        EXACT_TOKEN,
    )
    assert expected["count"] == 12
    assert parse_count(attrition(page)[-1]["Patients"]) == (12, None)

"""The jobs page (``/ui/jobs``) against a real gateway process that has jobs in every end state.

The site: a real gateway (auth on) and a real inference service. Three routing rules give three
kinds of jobs: chest CTs go to the running service (``succeeded``; one without Pixel Spacing is
refused with its SOP Instance UID in the reason: ``failed``), abdomen CTs to an inference
service that is not running (connection refused until ``queue.max_attempts``: ``dead``), head
CTs to a model the service does not have (a permanent error: ``failed``). The admin reads,
retries and deletes them in headless Chromium; what the page shows is checked against the API.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.federated.conftest import ADMIN_TOKEN, QUERY_TOKEN
from tests.federated.test_no_identifiers import DATE_SHAPED, UID_SHAPED
from tests.pipeline.conftest import chest_phantom, chest_rule, pipeline_settings, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.ports import free_port
from tests.ui.conftest import Recorded, axe_violations, new_page
from tests.ui.test_site import SCREENSHOTS

#: The token the inference service presents to read pixels from and write results to the
#: gateway (``pipeline.callback_token``; an admin client, as docs/deployment asks).
CALLBACK_TOKEN = "pipeline-callback-token-for-tests"
#: A model no inference service has: its jobs fail permanently at once.
RETIRED_MODEL = "retired-detector"
TERMINAL = ("succeeded", "failed", "dead")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class JobsSite:
    gateway: GatewayProcess
    inference: InferenceProcess
    #: Where the abdomen rule sends its jobs: nothing listens there until a test starts one.
    down_port: int
    models_dir: Path
    workdir: Path
    started: list[InferenceProcess] = field(default_factory=list)

    def api(self, method: str, path: str, token: str = ADMIN_TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, self.gateway.url + path, headers=headers, timeout=10)

    def jobs(self, **params: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in {"limit": "1000", **params}.items())
        response = self.api("GET", f"/jobs?{query}")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["jobs"]
        return result

    def job(self, job_id: int) -> dict[str, Any]:
        response = self.api("GET", f"/jobs/{job_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def start_down_service(self) -> None:
        """The missing inference service comes back (on the port its rule names)."""
        service = InferenceProcess(self.workdir / "inference-back", self.models_dir)
        service.port = self.down_port
        self.started.append(service.start())


def _rule(name: str, body_part: str, model: str, url: str) -> dict[str, Any]:
    return {
        "name": name,
        "match": {"Modality": "CT", "BodyPartExamined": body_part},
        "models": [model],
        "inference_url": url,
    }


@pytest.fixture(scope="module")
def jobs_site(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[JobsSite]:
    workdir = tmp_path_factory.mktemp("jobs-site")
    inference = InferenceProcess(workdir / "inference", models_dir).start()
    down_port = free_port()
    settings = pipeline_settings(
        inference.url,
        routing=[
            chest_rule(inference.url),
            _rule("abdomen-ct", "ABDOMEN", "nodule-detector", f"http://127.0.0.1:{down_port}"),
            _rule("head-ct", "HEAD", RETIRED_MODEL, inference.url),
        ],
        # Fast to dead: two attempts, a short backoff.
        queue={"max_attempts": 2, "backoff_seconds": 0.2, "backoff_max_seconds": 0.4},
        pipeline={"callback_token": CALLBACK_TOKEN},
        auth={
            "clients": [
                {"name": "operator", "token_sha256": _sha256(ADMIN_TOKEN), "roles": ["admin"]},
                {"name": "researcher", "token_sha256": _sha256(QUERY_TOKEN), "roles": ["query"]},
                {"name": "pipeline", "token_sha256": _sha256(CALLBACK_TOKEN), "roles": ["admin"]},
            ]
        },
    )
    gateway = GatewayProcess(workdir / "gateway", settings).start()
    site = JobsSite(gateway, inference, down_port, models_dir, workdir)
    try:
        client = DICOMwebClient(
            gateway.dicomweb_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        small = {"rows": 64, "columns": 64, "slices": 12, "pixel_spacing_mm": 3.0}
        studies = ("CHEST", "ABDOMEN", "HEAD", "ABDOMEN", "CHEST", "CHEST")
        for seed, body_part in enumerate(studies, start=700):
            phantom = chest_phantom(seed, lesions=(15.0,), body_part=body_part, **small)
            instances = list(phantom.instances())
            if seed == 705:  # no geometry: the service names the instance in its refusal
                for instance in instances:
                    del instance.PixelSpacing
            client.store_instances(instances)

        def all_finished() -> list[dict[str, Any]] | None:
            current = site.jobs()
            done = len(current) == len(studies) and all(j["state"] in TERMINAL for j in current)
            return current if done else None

        finished = wait_until(all_finished, 90, f"{len(studies)} jobs to end")
        states = sorted(job["state"] for job in finished)
        expected = ["dead", "dead", "failed", "failed", "succeeded", "succeeded"]
        assert states == expected, (finished, gateway.log())
        yield site
    finally:
        gateway.stop()
        for service in (inference, *site.started):
            service.stop()


def sign_in(page: Any, url: str, token: str) -> None:
    page.goto(f"{url}/ui/jobs")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def jobs_shown(page: Any) -> dict[int, dict[str, str]]:
    """The job list as the user reads it: job id to its row, by column header."""
    rows: list[dict[str, str]] = page.evaluate(
        """() => {
            const table = document.getElementById('jobs');
            const heads = [...table.querySelectorAll('thead th')].map(th => th.textContent);
            return [...table.querySelectorAll('tbody tr')].map(tr =>
                Object.fromEntries([...tr.children].map((c, i) => [heads[i], c.textContent])));
        }"""
    )
    return {int(row["Job"].lstrip("#")): row for row in rows}


def show_state(page: Any, state: str) -> None:
    page.get_by_label("State").select_option(state)
    page.wait_for_function(
        "state => document.getElementById('jobs').dataset.state === state", arg=state
    )


def identifiers_in(text: str) -> list[str]:
    """UIDs and dates in ``text``; a URL's numeric host (the inference service's address in an
    error) is an address, not an identifier."""
    text = re.sub(r"://\d+(\.\d+){3}", "://host", text)
    return [m.group(0) for p in (UID_SHAPED, DATE_SHAPED) for m in p.finditer(text)]


def test_the_admin_reads_retries_and_deletes_jobs(jobs_site: JobsSite, browser: Any) -> None:
    recorded = Recorded()
    page = new_page(browser, recorded)
    sign_in(page, jobs_site.gateway.url, ADMIN_TOKEN)

    # Jobs by state and the queue depth, as the API counts them.
    page.locator("#depth td[data-state]").first.wait_for()
    by_state = {
        state: page.locator(f"#depth [data-state='{state}']").inner_text()
        for state in ("pending", "running", "succeeded", "failed", "dead")
    }
    api_jobs = jobs_site.jobs()
    for state, shown in by_state.items():
        assert shown == str(sum(job["state"] == state for job in api_jobs)), (state, by_state)
    waiting = sum(job["state"] in ("pending", "running") for job in api_jobs)
    assert page.locator("#queue-depth").inner_text() == f"Queue depth: {waiting}"

    # A dead job: its reason and its attempts, in the list and in its details.
    show_state(page, "dead")
    dead = jobs_site.jobs(state="dead")
    assert set(jobs_shown(page)) == {job["id"] for job in dead}
    job = dead[0]
    row = jobs_shown(page)[job["id"]]
    assert row["Model"] == "nodule-detector" and row["State"] == "dead"
    assert row["Attempts"] == f"{job['attempts']} of {job['max_attempts']}" == "2 of 2"
    assert "unreachable" in row["Last error"], row
    page.get_by_role("button", name=f"Details of job {job['id']}").click()
    detail = page.locator("#detail")
    detail.get_by_role("heading", name=f"Job #{job['id']}").wait_for()
    assert "dead" in detail.get_by_role("heading").first.inner_text()
    assert "unreachable" in page.locator("#job-reason").inner_text()
    history = detail.locator("table tbody tr")
    assert history.count() == len(jobs_site.job(job["id"])["history"]) == 2
    assert "unreachable" in history.nth(1).inner_text()
    assert not identifiers_in(page.locator("body").inner_text()), "the dead job's page"

    # The inference service is back: Retry queues the job again, and this time it succeeds.
    jobs_site.start_down_service()
    with page.expect_response(lambda r: r.request.method == "POST") as retried:
        detail.get_by_role("button", name="Retry").click()
    assert retried.value.status == 200 and retried.value.json()["state"] == "pending"
    page.get_by_role("status").filter(has_text=f"Job #{job['id']} queued again.").wait_for()
    heading = detail.get_by_role("heading", name=f"Job #{job['id']}")
    assert re.search(r"\((pending|running|succeeded)\)$", heading.inner_text()), heading
    after = wait_until(
        lambda: (j := jobs_site.job(job["id"]))["state"] == "succeeded" and j, 60, "the retry"
    )
    assert [a["outcome"] for a in after["history"]][-1] == "succeeded", after
    page.get_by_role("button", name="Refresh").click()
    page.locator("#detail h3", has_text="(succeeded)").wait_for()
    page.locator("#depth [data-state='dead']", has_text=str(len(dead) - 1)).wait_for()

    # Failed jobs (permanent errors): a UID in a reason is masked on the page.
    show_state(page, "failed")
    failures = jobs_site.jobs(state="failed")
    (refused,) = [j for j in failures if "PixelSpacing is missing" in j["last_error"]]
    assert UID_SHAPED.search(refused["last_error"]), refused  # the API names the instance
    error_shown = jobs_shown(page)[refused["id"]]["Last error"]
    assert "instance [uid]: PixelSpacing is missing" in error_shown, error_shown
    assert not identifiers_in(error_shown), error_shown
    # The other one: its reason in its details, then Delete, gone from page and API.
    (failed,) = [j for j in failures if RETIRED_MODEL in j["last_error"]]
    assert jobs_shown(page)[failed["id"]]["Attempts"] == "1 of 2"
    page.get_by_role("button", name=f"Details of job {failed['id']}").click()
    detail.get_by_role("heading", name=f"Job #{failed['id']}").wait_for()
    assert f"unknown model '{RETIRED_MODEL}'" in page.locator("#job-reason").inner_text()
    detail.get_by_role("button", name="Delete").click()
    page.get_by_role("status").filter(has_text=f"Job #{failed['id']} deleted.").wait_for()
    page.locator(f"#jobs tr[data-job='{failed['id']}']").wait_for(state="detached")
    assert failed["id"] not in jobs_shown(page)
    assert jobs_site.api("GET", f"/jobs/{failed['id']}").status_code == 404
    assert failed["id"] not in {j["id"] for j in jobs_site.jobs()}

    # Nothing identifying was shown or asked for, and the page logged no error.
    show_state(page, "")
    assert len(jobs_shown(page)) == len(jobs_site.jobs())
    assert not identifiers_in(page.locator("body").inner_text()), "the list of all jobs"
    assert not identifiers_in("\n".join(recorded.requests)), "the page's requests"
    assert recorded.console_errors == [] or all(
        "404" in e or "Failed to load resource" in e for e in recorded.console_errors
    ), recorded.console_errors


def test_other_tokens_see_no_job_data(jobs_site: JobsSite, browser: Any) -> None:
    page = new_page(browser)
    sign_in(page, jobs_site.gateway.url, QUERY_TOKEN)
    alert = page.locator("#login-error")
    alert.filter(has_text="admin role").wait_for()
    assert "403" in alert.inner_text() or "admin" in alert.inner_text()
    assert page.locator("#app").is_hidden()
    assert page.locator("#jobs tbody tr").count() == 0
    assert page.locator("#depth td").count() == 0

    page = new_page(browser)
    sign_in(page, jobs_site.gateway.url, "not-a-token")
    page.locator("#login-error").filter(has_text="Not signed in").wait_for()
    assert page.locator("#app").is_hidden() and page.locator("#jobs tbody tr").count() == 0


def test_jobs_page_is_accessible_and_works_from_the_keyboard(
    jobs_site: JobsSite, browser: Any
) -> None:
    page = new_page(browser, bypass_csp=True)
    page.goto(f"{jobs_site.gateway.url}/ui/jobs")

    def tab_to(predicate: str, what: str) -> None:
        for _ in range(80):
            page.keyboard.press("Tab")
            if page.evaluate(f"(e => {predicate})(document.activeElement)"):
                return
        raise AssertionError(f"Tab never reached {what}")

    tab_to("e.id === 'token'", "the token field")
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    page.locator("#depth td[data-state]").first.wait_for()
    show_state(page, "")
    page.locator("#jobs tbody tr").first.wait_for()
    assert axe_violations(page) == [], "the list of jobs"

    # Tab to a finished job that is not succeeded, open it with Enter, retry it with Enter.
    unfinished = [j for j in jobs_site.jobs() if j["state"] in ("failed", "dead")]
    # A failed one first, the one whose reason names an instance (masked) if it is still there.
    target = min(
        unfinished, key=lambda j: (j["state"] != "failed", RETIRED_MODEL in j["last_error"])
    )
    runs_before = len(jobs_site.job(target["id"])["history"])
    tab_to(f"e.getAttribute('aria-label') === 'Details of job {target['id']}'", "the job")
    page.keyboard.press("Enter")
    page.locator("#detail h3", has_text=f"Job #{target['id']}").wait_for()
    assert page.evaluate("document.activeElement.tagName") == "H3", "focus moves to the details"
    assert axe_violations(page) == [], "a job's details"
    page.locator("main").screenshot(path=str(SCREENSHOTS / "dashboard-jobs.png"))
    tab_to("e.textContent === 'Retry'", "Retry")
    with page.expect_response(lambda r: r.request.method == "POST") as retried:
        page.keyboard.press("Enter")
    assert retried.value.status == 200 and retried.value.json()["state"] == "pending"
    page.get_by_role("status").filter(has_text=f"Job #{target['id']} queued again.").wait_for()
    wait_until(
        lambda: len(jobs_site.job(target["id"])["history"]) > runs_before,
        30,
        "the API to show the retried job's new attempt",
    )

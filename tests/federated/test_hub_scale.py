"""The hub-at-scale benchmark (bench/hub.py) in small: ten real sites, one hung.

The benchmark itself runs: a ``fedgate hub`` process over ten real site APIs served by two
processes, its answers combining every site, and a hung site costing its timeout and no more.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bench.hub import report, run, site_truth
from hub.app import Hub, HubSettings, SiteSettings, hub_app
from tests.federated.test_hub import Sites, site_patients

HUNG_TIMEOUT = 1.0


@pytest.mark.slow
def test_the_hub_benchmark_combines_every_site_and_a_hung_one_costs_its_timeout() -> None:
    result = run(sites=10, processes=2, rounds=2, hung_timeout=HUNG_TIMEOUT, hung_rounds=2)
    women = [site_truth(number)[0] for number in range(10)]
    men = [site_truth(number)[1] for number in range(10)]

    count = result.questions["count"].last_answer
    assert [site["status"] for site in count["sites"]] == ["ok"] * 10
    assert count["complete"] is True
    assert count["count"] == sum(women)

    histogram = result.questions["histogram"].last_answer
    assert histogram["complete"] is True
    cells = {cell["value"]: cell for cell in histogram["cells"]}
    assert cells["F"]["count"] == sum(women)
    # Each site suppresses its "M" cell too, to protect its empty "O" cell (complementary
    # suppression): combined, an interval that holds the truth.
    male = cells["M"]
    assert male["count"] == sum(men) or male["lower"] <= sum(men) <= (male["upper"] or 10**9)
    assert histogram["total"]["count"] == sum(women) + sum(men)

    # The last site replaced by a hung one: reported, left out, and waited for no longer
    # than its timeout (plus the cost of a question, well under half a second here).
    hung = result.hung_answer
    statuses = {site["name"]: site["status"] for site in hung["sites"]}
    assert statuses.pop("hung") == "timeout"
    assert set(statuses.values()) == {"ok"} and len(statuses) == 9
    assert hung["complete"] is False and hung["count"] == sum(women[:9])
    assert all(seconds < HUNG_TIMEOUT + 0.5 for seconds in result.hung_seconds)

    # Every site's latency was measured in the same run (the peer), and the report says it.
    for figure in result.questions.values():
        assert len(figure.at_once) == 10 and len(figure.alone) == 10
    assert 0 < max(result.rss_kib) < 200 * 1024
    assert any(line.startswith("| count |") for line in report(result))


def test_the_hub_app_asks_again_after_its_lifespan_and_in_another_event_loop(
    tmp_path: Path,
) -> None:
    """The hub's HTTP client belongs to an event loop: served again (a second lifespan, or
    without one in a new loop), the hub still reaches its sites."""
    sites = Sites(tmp_path)
    try:
        config = sites.site("a", site_patients("a", 20, 10, 0))
        app = hub_app(HubSettings(sites=[SiteSettings.model_validate(config)]))
        for _ in range(2):
            with TestClient(app) as client:
                answer = client.get("/federated/v1/count", params={"PatientSex": "F"}).json()
                assert answer["count"] == 20 and answer["sites"][0]["status"] == "ok"
        for _ in range(2):  # no lifespan: each request in a loop of its own
            answer = TestClient(app).get("/federated/v1/count", params={"PatientSex": "M"}).json()
            assert answer["count"] == 10, answer
    finally:
        sites.close()


def test_the_hub_takes_its_proxy_from_the_environment_once_per_site(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY and NO_PROXY as curl reads them (httpx did, aiohttp would only per request)."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.hospital.example:3128")
    monkeypatch.setenv("NO_PROXY", "gw.site-b.example")
    settings = HubSettings(
        sites=[
            SiteSettings(name="a", url="https://gw.site-a.example/federated/v1"),
            SiteSettings(name="b", url="https://gw.site-b.example/federated/v1"),
            SiteSettings(name="c", url="http://gw.site-c.example/federated/v1"),
        ]
    )
    proxy = "http://proxy.hospital.example:3128"
    assert Hub(settings).proxies == {"a": proxy, "b": None, "c": None}

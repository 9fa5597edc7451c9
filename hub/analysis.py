"""Federated analyses, the consortium's side: send a model to every site, follow it, see results.

``fedgate analysis submit --hub-config hub.yaml --model DIR --cohort cohort.json`` sends the
bundle in DIR (model.yaml + model.onnx) and the cohort to every site, signed for each site with
the hub's key (:mod:`gateway.analysis.bundle`). ``fedgate analysis status --hub-config hub.yaml
ID`` asks every site how far it got (counts only) and what the model found over the cohort,
as aggregates through each site's privacy layer, charged to the person asking.

The hub keeps no state of its own: each site holds the analysis, its cohort and the name under
which it installed the model, and says so when asked.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.analysis.bundle import ModelBundle, pack_analysis, sign_analysis
from gateway.auth import Principal
from hub.app import Hub, Question, Reply, SiteSettings, json_body

__all__ = ["analysis_results", "analysis_status", "submit_analysis"]

TAR_MEDIA_TYPE = "application/x-tar"


async def submit_analysis(
    hub: Hub,
    bundle: ModelBundle,
    cohort: dict[str, Any],
    sender: Principal,
    analysis_id: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Send the analysis to every site for ``sender`` (the consortium member the sites see,
    as with questions); its id and each site's answer (state, or why not)."""
    if hub.signing_key is None:
        raise ValueError("the hub signs what it sends to sites: set signing_key_file")
    key = hub.signing_key
    analysis_id = analysis_id or uuid.uuid4().hex

    def question(site: SiteSettings) -> Question:
        signature = sign_analysis(
            key, hub.settings.name, site.name, analysis_id, bundle.sha256, cohort
        )
        body = pack_analysis(
            {"analysis_id": analysis_id, "cohort": cohort, "signature": signature}, bundle
        )
        return Question("POST", "/analyses", sender, body=body, content_type=TAR_MEDIA_TYPE)

    return analysis_id, await hub.ask_each(question)


async def analysis_status(hub: Hub, analysis_id: str, asker: Principal) -> list[dict[str, Any]]:
    """Every site's state and counts of the analysis (``answer``), or why it cannot say."""

    return await hub.ask_each(Question("GET", f"/analyses/{analysis_id}", asker))


#: What the status shows of the model's results, per site and combined: (title, aggregate,
#: whether the model's findings are required of the cohort).
RESULT_QUESTIONS: tuple[tuple[str, dict[str, Any], bool], ...] = (
    ("patients in the cohort", {"kind": "count"}, False),
    ("patients with a finding of the model", {"kind": "count"}, True),
    (
        "patients by finding type",
        {"kind": "histogram", "by": {"kind": "category", "name": "finding_type"}},
        True,
    ),
)


async def analysis_results(
    hub: Hub, statuses: list[dict[str, Any]], asker: Principal
) -> list[dict[str, Any]]:
    """The model's findings over the cohort at the sites that installed it, as the sites'
    federated API releases them to ``asker`` (noisy or exact by the asker's roles there)."""
    per_site: dict[str, dict[str, Any]] = {}
    for status in statuses:
        answer = status.get("answer") or {}
        installed = (answer.get("model") or {}).get("installed_as")
        if status["status"] == "ok" and installed:
            per_site[status["name"]] = {"cohort": answer["cohort"], "algorithm": installed}
    results = []
    for title, aggregate, of_the_model in RESULT_QUESTIONS:

        def question(
            site: SiteSettings,
            aggregate: dict[str, Any] = aggregate,
            of_the_model: bool = of_the_model,
        ) -> Question | Reply:
            known = per_site.get(site.name)
            if known is None:
                # Not installed there (yet): no question is sent, none is charged.
                return Reply(409, json_body({"error": "the model is not installed here yet"}))
            cohort = dict(known["cohort"])
            if of_the_model:
                findings = list(cohort.get("findings", ()))
                cohort["findings"] = [*findings, {"algorithm": known["algorithm"]}]
            body = {"cohort": cohort, "level": "patients", "aggregate": aggregate}
            return Question("POST", "/aggregate", asker, body=json_body(body))

        answer = await hub.ask(question, aggregate["kind"], "patients")
        results.append({"title": title, **answer})
    return results

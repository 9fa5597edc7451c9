"""Property test: no federated response carries a UID-, date-, name- or key-shaped string."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.federated.settings import FederatedSettings
from gateway.index import FindingsIndex, IndexSettings
from tests.federated.conftest import QUERY_TOKEN, site_auth, standard_cohort
from tests.federated.servers import serving, site_app
from tests.federated.synthetic import DIAMETER, MALIGNANCY, MASS, NODULE, write_patients

UID_SHAPED = re.compile(r"\d+\.\d+\.\d+(\.\d+)*")
DATE_SHAPED = re.compile(r"(?<!\d)(19|20)\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
NAME_SHAPED = re.compile(r"[A-Za-z]+\^[A-Za-z]+")
PATIENT_ID_SHAPED = re.compile(r"(?<![A-Za-z])(F|M)\d{3}(?!\d)|MULTI|LONER")
KEY_SHAPED = re.compile(r"(?<![\d.])-?\d{10,}(?![\d.])")  # salted 64-bit keys

attribute_values = {
    "ModalitiesInStudy": st.sampled_from(["CT", "MR", "CT,MR", "C*", "??"]),
    "Modality": st.sampled_from(["CT", "MR", "SR"]),
    "PatientSex": st.sampled_from(["F", "M", "O", "F,M"]),
    "PatientAge": st.sampled_from(["60-69", "45", "90-", "-50", "0-120"]),
    "StudyDate": st.sampled_from(["20240101-20241231", "20220601", "-20230101", "20220101-"]),
    "BodyPartExamined": st.sampled_from(["CHEST", "CH*", "HEAD"]),
}
cohorts = st.fixed_dictionaries(
    {},
    optional={
        "attributes": st.dictionaries(
            st.sampled_from(sorted(attribute_values)), st.just("x"), max_size=3
        ),
        "findings": st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from([NODULE, MASS])},
                optional={"measurements": st.just([{"concept": DIAMETER, "min": 8, "unit": "mm"}])},
            ),
            max_size=1,
        ),
    },
)
dimensions = st.one_of(
    st.builds(
        lambda n: {"kind": "category", "name": n},
        st.sampled_from(
            [
                "modality",
                "body_part",
                "sex",
                "study_year",
                "finding_type",
                "finding_site",
                "algorithm",
            ]
        ),
    ),
    st.just({"kind": "category", "name": "qualitative", "concept": MALIGNANCY}),
    st.just({"kind": "bins", "of": "age", "start": 0, "stop": 100, "width": 10}),
    st.just(
        {
            "kind": "bins",
            "of": "measurement",
            "concept": DIAMETER,
            "unit": "mm",
            "start": 0,
            "stop": 40,
            "width": 2,
        }
    ),
)
aggregates = st.one_of(
    st.just({"kind": "count"}),
    st.builds(lambda d: {"kind": "histogram", "by": d}, dimensions),
    st.builds(lambda r, c: {"kind": "crosstab", "rows": r, "columns": c}, dimensions, dimensions),
    st.just({"kind": "summary", "of": "age", "lower": 0, "upper": 120}),
    st.just(
        {
            "kind": "summary",
            "of": "measurement",
            "concept": DIAMETER,
            "unit": "mm",
            "lower": 0,
            "upper": 50,
        }
    ),
)


@st.composite
def requests(draw: Any) -> dict[str, Any]:
    cohort = draw(cohorts)
    if "attributes" in cohort:
        cohort["attributes"] = {k: draw(attribute_values[k]) for k in cohort["attributes"]}
    return {
        "cohort": cohort,
        "level": draw(st.sampled_from(["patients", "studies", "series"])),
        "aggregate": draw(aggregates),
    }


def identifier_shaped(text: str) -> list[str]:
    """The UID-, date-, name-, patient-ID- and key-shaped strings in ``text``."""
    found = []
    for pattern in (UID_SHAPED, DATE_SHAPED, NAME_SHAPED, PATIENT_ID_SHAPED, KEY_SHAPED):
        found += [m.group(0) for m in pattern.finditer(text)]
    return found


def test_no_response_carries_an_identifier(tmp_path: Path) -> None:
    index = FindingsIndex.open(IndexSettings(), tmp_path / "site")
    write_patients(index, standard_cohort())
    app = site_app(
        index,
        FederatedSettings(dp={"epsilon_per_person": 1e6, "epsilon_per_site": 1e6}),
        site_auth(),
    )
    headers = {"Authorization": f"Bearer {QUERY_TOKEN}"}
    statuses: set[int] = set()
    with (
        serving(app) as server,
        httpx.Client(base_url=f"{server.url}/federated/v1", headers=headers, timeout=30) as client,
    ):

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(requests())
        def check(request: dict[str, Any]) -> None:
            response = client.post("/aggregate", json=request)
            statuses.add(response.status_code)
            assert response.status_code in (200, 400, 403), response.text
            # Strings that were in the question may be echoed in an error; nothing else may.
            asked = set(identifier_shaped(json.dumps(request)))
            leaked = [s for s in identifier_shaped(response.text) if s not in asked]
            assert not leaked, (request, response.text)

        check()
    index.close()
    assert 200 in statuses

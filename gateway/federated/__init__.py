"""The federated aggregate API: reads only the findings index (DESIGN.md, principle 3).

One concept per module:

- :mod:`.settings` — the disclosure-control settings (``federated:``);
- :mod:`.matching` — QIDO-RS attribute matching (PS3.18 8.3.4) of filter values;
- :mod:`.cohort` — the cohort language and aggregate requests (pydantic models);
- :mod:`.query_params` — ``GET /count`` query strings into requests;
- :mod:`.query` — cohorts and dimensions as SQL over the index;
- :mod:`.membership` — who is behind an answer (patients, and units per patient);
- :mod:`.facts`, :mod:`.tables` — a table's fact rows, cells and labels;
- :mod:`.disclosure` — minimum cell size and complementary suppression;
- :mod:`.exact` — exact answers for the ``exact`` role (suppressed);
- :mod:`.privacy` — OpenDP noise, the budgets per person and site, the answer cache;
- :mod:`.noisy` — noisy answers for the ``query`` role (each patient's contribution bounded);
- :mod:`.audit` — the append-only JSON-lines audit log;
- :mod:`.service` — one request through all of the above;
- :mod:`.api` — the Starlette routes (:func:`.api.federated_routes`);
- :mod:`.hub` — many sites asked at once, answers combined (``fedgate hub``).

Nothing here imports the store, the PACS client or the DICOMweb layer (an import-linter
contract), so no code path leads from a federated request to an image or an identifier.
"""

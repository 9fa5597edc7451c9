"""Tabular models: a model trained across sites (``fedgate learn run``) run on a new study.

A tabular model reads no image. Its input is one row of its training plan's features
(``tabular`` in its manifest: the plan's own definitions), which this module computes for the
study it is asked to analyse exactly as every site's training table computed them, with the
same code (:mod:`tabular.extraction`) over the same rows (:mod:`tabular.records`):

1. **Find the patient's studies** at the source (QIDO-RS, PS3.18 10.6): the analysed study, and
   every study of its PatientID (with the same IssuerOfPatientID). A study without a PatientID
   is its own patient, as in the findings index.
2. **Read them** (WADO-RS, PS3.18 10.4): each study's metadata gives its demographics (sex, age
   at the study, date: :mod:`tabular.demographics`) and its SR instances, which are retrieved
   and read into rows (:func:`tabular.records.report_findings`: TID 1500 findings, or a
   clinical-information report's values), oldest content first.
3. **Compute the row**: ``age``, ``sex``, ``measurement`` and ``presence`` from the unit's
   studies (the analysed study for a study-level plan, every study of the patient for a
   patient-level one), ``clinical`` values from all of the patient's studies. "Found nothing"
   reports count as absence for an algorithm that reports the type: one whose findings of the
   type are among the rows read, or a model of this service whose outputs are of that type
   (the site knew it from its whole index). The cohort's filter is the training population's
   and is not applied here: the routing rule decides which studies the model runs on.
4. **Missing values** as the plan said: ``drop`` refuses the study (422, "feature X absent"),
   ``impute_mean`` puts the pooled training mean in its place (``tabular.means``).
5. **Run** the ONNX model on the row (float64) and **write** its prediction as a Comprehensive
   3D SR, TID 1500 (PS3.16 A.3) with one measurement group (TID 1501, no image region): the
   finding ``tabular.finding`` (by default the label's outcome), its probability (DCM 122157
   "Probability") and the qualitative evaluation "Presence of property" (DCM 121052) Present
   (DCM 121053) at or above the plan's threshold, else Absent (DCM 121054). The SR's UIDs are
   derived from the study, the model's algorithm UID and version: one prediction per study and
   model version, replaced (not added to) when the study is analysed again.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import structlog
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from inference_service import dicomweb
from inference_service.errors import PermanentError
from inference_service.manifest import (
    ClassProbabilitiesOutput,
    MaskOutput,
    TabularSpec,
)
from inference_service.report import RESULTS_STATION_NAME, algorithm_of, coded
from inference_service.repository import Model, ModelRepository
from inference_service.settings import InferenceSettings
from sr_writer import (
    CodedConcept,
    Evidence,
    Finding,
    Findings,
    FindingsError,
    QualitativeEvaluation,
    build_sr,
    derive_result_uids,
)
from tabular.demographics import demographics
from tabular.extraction import Dated, StudyFacts, feature_value
from tabular.records import SR_STORAGE_CLASSES, FindingRecord, code_key, report_findings

log = structlog.get_logger(__name__)

__all__ = ["TabularInputs", "TabularOutcome", "analyse_study", "served_reporters", "study_inputs"]

PRESENCE = CodedConcept(value="121052", scheme_designator="DCM", meaning="Presence of property")
PRESENT = CodedConcept(value="121053", scheme_designator="DCM", meaning="Present")
ABSENT = CodedConcept(value="121054", scheme_designator="DCM", meaning="Absent")

#: A patient with more studies than this at the source is refused rather than read for minutes.
MAX_STUDIES = 200


@dataclass
class _Study:
    uid: str
    facts: StudyFacts
    #: The study's SR instances that hold rows, oldest content first.
    reports: list[tuple[Dataset, list[FindingRecord]]]


@dataclass(frozen=True)
class TabularInputs:
    """The row computed for a study (NaN where missing, before the plan's handling), and the
    report instances of the analysed study it was read from (the SR's evidence)."""

    names: tuple[str, ...]
    values: tuple[float, ...]
    evidence: tuple[Dataset, ...]


def study_inputs(
    client: DICOMwebClient,
    spec: TabularSpec,
    study_uid: str,
    reporters_served: dict[str, set[str]],
    url: str,
) -> TabularInputs:
    """The plan's features for ``study_uid`` at the source behind ``client`` (steps 1-3)."""
    studies = [_read_study(client, uid, url) for uid in _patient_studies(client, study_uid, url)]
    analysed = next(s for s in studies if s.uid == study_uid)
    unit = [analysed.facts] if spec.unit == "study" else [s.facts for s in studies]
    # Stable sort: within one date, the reports keep their content order (oldest first), so the
    # latest value wins as at the site, where the index's row order is arrival order.
    clinical = [
        Dated(study.facts.date, row)
        for study in sorted(studies, key=lambda s: s.facts.date)
        for _, rows in study.reports
        for row in rows
        if row.finding_type is None
    ]
    seen: dict[str, set[str]] = {}
    for study in studies:
        for _, rows in study.reports:
            for row in rows:
                if row.finding_type is not None and row.algorithm_name is not None:
                    seen.setdefault(row.finding_type, set()).add(row.algorithm_name)

    def reporters(finding_type: str) -> Collection[str]:
        return seen.get(finding_type, set()) | reporters_served.get(finding_type, set())

    values = tuple(feature_value(f, unit, clinical, reporters) for f in spec.features)
    evidence = tuple(dataset for dataset, _ in analysed.reports)
    return TabularInputs(spec.feature_names, values, evidence)


def _patient_studies(client: DICOMwebClient, study_uid: str, url: str) -> list[str]:
    """The analysed study's UID and its patient's other studies' (same PatientID and issuer)."""
    fields = ["PatientID", "IssuerOfPatientID"]
    found = dicomweb.classified(
        "source",
        url,
        lambda: client.search_for_studies(
            search_filters={"StudyInstanceUID": study_uid}, fields=fields
        ),
    )
    if not found:
        raise PermanentError(f"source {url}: study {study_uid} not found", status_code=404)
    header = Dataset.from_json(found[0])
    patient_id = str(header.get("PatientID") or "").strip()
    if not patient_id:
        return [study_uid]
    issuer = str(header.get("IssuerOfPatientID") or "").strip()
    matches = dicomweb.classified(
        "source",
        url,
        lambda: client.search_for_studies(
            search_filters={"PatientID": patient_id}, fields=fields, limit=MAX_STUDIES + 1
        ),
    )
    uids = [study_uid]
    for match in matches:
        other = Dataset.from_json(match)
        uid = str(other.get("StudyInstanceUID") or "")
        # QIDO matches "*" and "?" in a PatientID as wildcards: only the same ID counts.
        same_patient = str(other.get("PatientID") or "").strip() == patient_id
        same_issuer = str(other.get("IssuerOfPatientID") or "").strip() == issuer
        if uid and uid not in uids and same_patient and same_issuer:
            uids.append(uid)
    if len(uids) > MAX_STUDIES:
        raise PermanentError(
            f"the patient of study {study_uid} has more than {MAX_STUDIES} studies at the source"
        )
    return uids


def _read_study(client: DICOMwebClient, study_uid: str, url: str) -> _Study:
    """A study's demographics (from its instances' headers) and its reports' rows."""
    metadata = dicomweb.classified("source", url, lambda: client.retrieve_study_metadata(study_uid))
    headers = [Dataset.from_json(item, bulk_data_uri_handler=_no_bulk_data) for item in metadata]
    facts = [demographics(header) for header in headers]
    sex = next((f.sex for f in facts if f.sex is not None), None)
    age = next((f.age_years for f in facts if f.age_years is not None), None)
    date = next((f.study_date for f in facts if f.study_date is not None), None)
    report_series = sorted(
        {
            str(h.SeriesInstanceUID)
            for h in headers
            if str(h.get("SOPClassUID", "")) in SR_STORAGE_CLASSES and "SeriesInstanceUID" in h
        }
    )
    reports: list[tuple[Dataset, list[FindingRecord]]] = []
    for series_uid in report_series:
        for dataset in _retrieve_series(client, study_uid, series_uid, url):
            found = report_findings(dataset)
            if found is not None:
                reports.append((dataset, found))
    reports.sort(key=lambda report: _content_order(report[0]))
    rows = tuple(row for _, found in reports for row in found)
    return _Study(study_uid, StudyFacts(study_uid, date or 0, age, sex, rows), reports)


def _retrieve_series(
    client: DICOMwebClient, study_uid: str, series_uid: str, url: str
) -> list[Dataset]:
    return dicomweb.classified(
        "source", url, lambda: list(client.retrieve_series(study_uid, series_uid))
    )


def _no_bulk_data(*_: object) -> bytes:
    """Bulk data (pixels, waveforms) is not needed for demographics: never fetched."""
    return b""


def _content_order(dataset: Dataset) -> tuple[str, str, str]:
    """When a report was written (Content Date/Time, PS3.3 C.17.2), to order its values."""
    return (
        str(dataset.get("ContentDate", "")),
        str(dataset.get("ContentTime", "")),
        str(dataset.get("SOPInstanceUID", "")),
    )


def served_reporters(repository: ModelRepository) -> dict[str, set[str]]:
    """Finding type -> the models of this service whose outputs report findings of it."""
    reporting: dict[str, set[str]] = {}
    for model in repository.models.values():
        for output in model.manifest.outputs:
            if isinstance(output, MaskOutput | ClassProbabilitiesOutput):
                concept = output.finding_type
                key = code_key(concept.scheme_designator, concept.value)
                reporting.setdefault(key, set()).add(model.name)
    return reporting


def model_row(spec: TabularSpec, inputs: TabularInputs, model: str, study_uid: str) -> np.ndarray:
    """The model's input row: missing values refused or imputed as the plan says (step 4)."""
    values = np.asarray(inputs.values, dtype=np.float64)
    absent = [name for name, value in zip(inputs.names, values, strict=True) if np.isnan(value)]
    if absent and spec.missing == "drop":
        raise PermanentError(
            f"model {model}: feature{'s' if len(absent) > 1 else ''} {', '.join(absent)} "
            f"absent for study {study_uid} (its plan drops rows with a missing value)"
        )
    if absent:
        assert spec.means is not None  # the manifest requires them for impute_mean
        values = np.where(np.isnan(values), np.asarray(spec.means, dtype=np.float64), values)
    return values[None, :]


@dataclass
class TabularOutcome:
    findings: Findings
    sr_sop_instance_uid: str
    timings: dict[str, float]
    inputs: dict[str, float | None]


def analyse_study(
    model: Model,
    repository: ModelRepository,
    settings: InferenceSettings,
    study_uid: str,
    source: dicomweb.Endpoint,
    destination: dicomweb.Endpoint,
) -> TabularOutcome:
    """Steps 1-5 for one study; the SR is stored in ``destination``."""
    manifest = model.manifest
    spec = manifest.tabular
    assert spec is not None
    client_settings = settings.dicomweb
    timings: dict[str, float] = {}
    started = time.perf_counter()
    client = dicomweb.make_client(source, client_settings.timeout_seconds, client_settings.tls)
    with dicomweb.closing(client):
        inputs = study_inputs(client, spec, study_uid, served_reporters(repository), source.url)
        evidence = list(inputs.evidence) or _study_header(client, study_uid, source.url)
    timings["fetch"] = time.perf_counter() - started
    row = model_row(spec, inputs, model.name, study_uid)
    mark = time.perf_counter()
    outputs = model.backend.infer({spec.input: row}, [spec.output])
    probability = _label_probability(outputs[spec.output], model.name)
    timings["model"] = time.perf_counter() - mark
    mark = time.perf_counter()
    uids = derive_result_uids(study_uid, study_uid, manifest.algorithm_uid, manifest.version)
    try:
        findings = Findings(
            algorithm=algorithm_of(manifest),
            evidence=Evidence.from_datasets(evidence),
            findings=(_prediction(spec, probability, model.name),),
        )
        sr = build_sr(findings, evidence, uids=uids)
    except FindingsError as error:
        raise PermanentError(f"model {model.name}: cannot report its prediction: {error}") from None
    sr.StationName = RESULTS_STATION_NAME  # how a PACS tells our results (see analyses.py)
    timings["sr_seg"] = time.perf_counter() - mark
    mark = time.perf_counter()
    dicomweb.store_instances(
        destination, study_uid, [sr], client_settings.timeout_seconds, client_settings.tls
    )
    timings["store"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    log.info(
        "tabular_prediction",
        model=model.name,
        probability=round(probability, 6),
        imputed=[n for n, v in zip(inputs.names, inputs.values, strict=True) if np.isnan(v)],
        sr=uids.sr_sop_instance_uid,
    )
    return TabularOutcome(
        findings=findings,
        sr_sop_instance_uid=uids.sr_sop_instance_uid,
        timings=timings,
        inputs={
            name: None if np.isnan(value) else float(value)
            for name, value in zip(inputs.names, inputs.values, strict=True)
        },
    )


def _label_probability(values: np.ndarray, model: str) -> float:
    """p(label) of the one row: the second of [p(0), p(1)]."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (1, 2) or not np.all(np.isfinite(array)):
        raise PermanentError(
            f"model {model}: expected probabilities of shape [1, 2], got {list(array.shape)}"
        )
    return float(np.clip(array[0, 1], 0.0, 1.0))


def _prediction(spec: TabularSpec, probability: float, model: str) -> Finding:
    """TID 1501's group: the finding, its probability and present/absent at the threshold."""
    return Finding(
        finding_type=coded(spec.finding),
        tracking_identifier=f"{model} prediction"[:64],
        qualitative_evaluations=(
            QualitativeEvaluation(
                name=PRESENCE, value=PRESENT if probability >= spec.threshold else ABSENT
            ),
        ),
        probability=probability,
    )


def _study_header(client: DICOMwebClient, study_uid: str, url: str) -> list[Dataset]:
    """One instance's header of the study (the SR's evidence when it holds no report)."""
    metadata = dicomweb.classified("source", url, lambda: client.retrieve_study_metadata(study_uid))
    return [Dataset.from_json(metadata[0], bulk_data_uri_handler=_no_bulk_data)]

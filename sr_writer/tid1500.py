"""Findings -> Comprehensive 3D SR with a TID 1500 Measurement Report (PS3.16 A.3, TID 1500).

The document: Comprehensive 3D SR Storage (PS3.3 A.35.13), root container TID 1500 with
the language, the observer context of the algorithm as a device (TID 1002/1004: Device Observer
UID = the algorithm's UID), the procedure reported, the image library (TID 1600) of the images
the regions are drawn on, and one measurement group per finding (TID 1410/1411/1501, each with
the algorithm identification of TID 4019).

It is an AI draft: Completion Flag COMPLETE (the algorithm said all it has to say), Verification
Flag UNVERIFIED (no person has checked it), Preliminary Flag PRELIMINARY (PS3.3 C.17.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from sr_writer.findings import (
    AlgorithmIdentification,
    Findings,
    ImageRegion,
    SegmentRegion,
    VolumeRegion,
)
from sr_writer.part10 import as_part10
from sr_writer.templates import (
    GroupContent,
    measurement_group,
    no_finding_group,
    planar_roi_group,
    volumetric_roi_group,
)
from sr_writer.templates.tid1501 import algorithm_identification, coded
from sr_writer.templates.tid1600 import image_library
from sr_writer.uids import ResultUIDs, derive_result_uids, derive_uid
from sr_writer.validation import check_regions, index_evidence, require_algorithm

Group = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)

DEFAULT_MANUFACTURER = "fedgate"


def build_sr(
    findings: Findings,
    evidence: Sequence[Dataset],
    *,
    uids: ResultUIDs | None = None,
    series_number: int = 9001,
    instance_number: int = 1,
) -> Dataset:
    """Build the SR for ``findings`` (``evidence``: the source instances, header-only is enough).

    ``evidence`` must hold a dataset for every instance ``findings.evidence`` lists (a
    referenced SEG included); more are allowed and ignored. Patient and study attributes are
    copied from the first. The SR and SEG UIDs default to :func:`sr_writer.derive_result_uids`
    of the study, the first source series, the algorithm UID and its version, so a re-run gives
    the same SR UIDs. The result saves as Part 10 (preamble and file meta are set):
    ``ds.save_as(path, enforce_file_format=True)``.

    Raises the :mod:`sr_writer.errors` classes (naming the field) before building anything.
    """
    algorithm = require_algorithm(findings)
    by_uid = index_evidence(findings, evidence)
    check_regions(findings, by_uid)
    if uids is None:
        uids = result_uids(findings, algorithm)

    algorithm_id = algorithm_identification(algorithm)
    source_series_uid = findings.evidence.series_instance_uids[0]
    groups: list[Group] = []
    for index, finding in enumerate(findings.findings):
        tracking_uid = finding.tracking_uid or derive_uid(
            "fedgate-tracking", uids.sr_sop_instance_uid, index, finding.tracking_identifier
        )
        content = GroupContent.of(finding, algorithm_id, tracking_uid)
        region = finding.region
        if isinstance(region, ImageRegion) or (
            isinstance(region, VolumeRegion) and region.graphic_type != "ELLIPSOID"
        ):
            groups.append(planar_roi_group(content, region, by_uid))
        elif isinstance(region, SegmentRegion | VolumeRegion):
            groups.append(volumetric_roi_group(content, region, source_series_uid))
        else:
            groups.append(measurement_group(content))
    if not groups:
        no_finding_uid = derive_uid("fedgate-no-finding", uids.sr_sop_instance_uid)
        groups.append(no_finding_group(algorithm_id, no_finding_uid))

    report = hd.sr.MeasurementReport(
        observation_context=observation_context(algorithm),
        procedure_reported=[coded(procedure) for procedure in findings.procedure_reported],
        imaging_measurements=groups,
    )
    # TID 1500 row 5: the image library comes before "Imaging Measurements" (the last item).
    images = library_images(findings, by_uid)
    if images:
        report[0].ContentSequence.insert(-1, image_library(images))
    evidence_datasets = list(by_uid.values())
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence_datasets,
        content=report[0],
        series_instance_uid=uids.sr_series_instance_uid,
        series_number=series_number,
        sop_instance_uid=uids.sr_sop_instance_uid,
        instance_number=instance_number,
        manufacturer=algorithm.manufacturer or DEFAULT_MANUFACTURER,
        is_complete=True,
        is_verified=False,
        is_final=False,
        series_description=series_description(algorithm),
    )
    return as_part10(sr)


def result_uids(findings: Findings, algorithm: AlgorithmIdentification) -> ResultUIDs:
    """The deterministic result UIDs of these findings (first source series)."""
    return derive_result_uids(
        findings.evidence.study_instance_uid,
        findings.evidence.series_instance_uids[0],
        algorithm.uid,
        algorithm.version,
    )


def series_description(algorithm: AlgorithmIdentification) -> str:
    """Names the model and version (LO: at most 64 characters), e.g. "AI nodules 1.2.0"."""
    return f"AI {algorithm.name} {algorithm.version}"[:64]


def observation_context(algorithm: AlgorithmIdentification) -> hd.sr.ObservationContext:
    """TID 1002 observer context for a device (TID 1004): the algorithm is the observer."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=algorithm.uid,
        name=algorithm.name[:64],
        manufacturer_name=algorithm.manufacturer,
        model_name=algorithm.version,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=device,
        )
    )


def library_images(findings: Findings, evidence: dict[str, Dataset]) -> list[Dataset]:
    """TID 1600 image library: the images that 2D regions are drawn on, each once, in order."""
    uids = dict.fromkeys(
        f.region.sop_instance_uid for f in findings.findings if isinstance(f.region, ImageRegion)
    )
    return [evidence[uid] for uid in uids]

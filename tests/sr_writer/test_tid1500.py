"""build_sr: a TID 1500 Comprehensive 3D SR that dciodvfy accepts and dsrdump renders."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from fedgate.phantom import Phantom
from sr_writer import Findings, build_sr, derive_result_uids, read_findings
from tests.sr_writer.builders import ALGORITHM, lesion_findings
from tests.sr_writer.dicomtools import assert_conformant, dsrdump

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def save(dataset: Dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_sr_of_two_lesions_is_conformant_and_readable_by_dcmtk(
    lesion_phantom: Phantom, header_only: list[Dataset], tmp_path: Path
) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    path = save(build_sr(findings, header_only), tmp_path / "sr.dcm")

    assert_conformant(path)
    dump = dsrdump(path)
    # What a radiologist's SR viewer shows: AI draft flags, the model, each nodule's diameter.
    assert "Preliminary Flag    : PRELIMINARY" in dump
    assert "Completion Flag     : COMPLETE" in dump
    assert "Verification Flag   : UNVERIFIED" in dump
    assert "Series              : AI lung-nodule-detector 1.2.0" in dump
    assert '(,,"Finding")=(27925004,SCT,"Nodule")' in dump
    assert '"Diameter")="12.3" (mm,UCUM,"mm")' in dump
    assert '"Diameter")="8" (mm,UCUM,"mm")' in dump or '"Diameter")="8.0"' in dump
    assert dump.count('"Algorithm Name")="lung-nodule-detector"') == 2  # TID 4019 per group
    assert '"Device Observer UID")="2.25.1234567890123456789"' in dump
    assert dump.count('SCOORD:(,,"Image Region")=(CIRCLE') == 2
    assert dump.count('"Probability")="87.0" (%,UCUM,"percent")') == 2


def test_sr_attributes(lesion_phantom: Phantom, header_only: list[Dataset]) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    sr = build_sr(findings, header_only)
    truth = lesion_phantom.truth
    uids = derive_result_uids(
        truth.study_instance_uid, truth.series_instance_uid, ALGORITHM.uid, ALGORITHM.version
    )
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == truth.study_instance_uid
    assert sr.PatientID == truth.patient_id
    assert sr.SeriesInstanceUID == uids.sr_series_instance_uid
    assert sr.SOPInstanceUID == uids.sr_sop_instance_uid
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == (
        "COMPLETE",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    # Every source instance is recorded as evidence, in the one study.
    evidence = sr.CurrentRequestedProcedureEvidenceSequence
    referenced = {
        ref.ReferencedSOPInstanceUID
        for study in evidence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert referenced == set(truth.sop_instance_uids)


def test_rerun_gives_the_same_uids_and_a_new_version_new_ones(
    lesion_phantom: Phantom, header_only: list[Dataset]
) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    first, second = build_sr(findings, header_only), build_sr(findings, header_only)
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (
        second.SeriesInstanceUID,
        second.SOPInstanceUID,
    )
    # ... tracking UIDs too, so the index sees the same findings, not new ones.
    assert [f.tracking_uid for f in read_findings(first).findings] == [
        f.tracking_uid for f in read_findings(second).findings
    ]
    newer = findings.model_copy(
        update={"algorithm": ALGORITHM.model_copy(update={"version": "1.3.0"})}
    )
    third = build_sr(newer, header_only)
    assert third.SOPInstanceUID != first.SOPInstanceUID
    assert third.SeriesDescription == "AI lung-nodule-detector 1.3.0"


def test_part10_file_and_dicomweb_bytes(
    lesion_phantom: Phantom, header_only: list[Dataset], tmp_path: Path
) -> None:
    """The returned dataset carries preamble and file meta (DESIGN.md, interop trap)."""
    sr = build_sr(lesion_findings(lesion_phantom, header_only), header_only)
    assert sr.preamble == b"\x00" * 128
    assert sr.file_meta.MediaStorageSOPInstanceUID == sr.SOPInstanceUID
    path = save(sr, tmp_path / "sr.dcm")
    assert path.read_bytes()[128:132] == b"DICM"
    again = pydicom.dcmread(path)
    assert again.SOPInstanceUID == sr.SOPInstanceUID


def test_negative_study_still_gets_a_conformant_report(
    header_only: list[Dataset], lesion_phantom: Phantom, tmp_path: Path
) -> None:
    negative = Findings(
        algorithm=ALGORITHM, evidence=lesion_findings(lesion_phantom, header_only).evidence
    )
    path = save(build_sr(negative, header_only), tmp_path / "negative.dcm")
    assert_conformant(path)
    dump = dsrdump(path)
    assert '(,,"Finding")=(111286,DCM,"No abnormality")' in dump
    assert '"Algorithm Name")="lung-nodule-detector"' in dump
    read = read_findings(pydicom.dcmread(path))
    assert read.findings == ()
    assert read.algorithm == ALGORITHM


def test_evidence_with_pixels_or_without_gives_the_same_report(
    lesion_phantom: Phantom, header_only: list[Dataset], phantom_datasets: list[Dataset]
) -> None:
    findings = lesion_findings(lesion_phantom, header_only)
    without = read_findings(build_sr(findings, header_only))
    with_pixels = read_findings(build_sr(findings, phantom_datasets))
    assert without.model_dump(exclude={"report"}) == with_pixels.model_dump(exclude={"report"})

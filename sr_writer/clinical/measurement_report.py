"""Writer of the clinical-information report: an Enhanced SR document holding TID 1500.

The document (PS3.3 A.35.2 Enhanced SR IOD; PS3.16 TID 1500 "Measurement Report") is::

    CONTAINER (LN 55752-0 "Clinical Information")           TID 1500 root, CID 7021 extended
      HAS CONCEPT MOD  CODE "Language of Content Item..."    TID 1204
      HAS OBS CONTEXT  ...                                   TID 1001: the converter as device
                                                             observer; the subject is the
                                                             patient of the Patient Module
      HAS CONCEPT MOD  CODE "Procedure reported" = (SCT 371524004 "Clinical report")
      CONTAINS CONTAINER "Image Library"                     TID 1600, empty: no image is used
      CONTAINS CONTAINER "Imaging Measurements"
        CONTAINS CONTAINER "Measurement Group"               TID 1501
          HAS OBS CONTEXT TEXT "Tracking Identifier" = "Clinical information"
          HAS OBS CONTEXT UIDREF "Tracking Unique Identifier"
          CONTAINS NUM  <concept> = <value> <UCUM unit>      TID 300, one per numeric value
          CONTAINS CODE <concept> = <coded value>            one per coded value

So any TID 1500 reader (highdicom, dcmqi, viewers) reads the values as measurements and
qualitative evaluations, and :func:`sr_writer.clinical.reader.is_clinical_report` tells a
clinical report from an imaging one by its title. Enhanced SR is the least capable SR IOD whose
value types (NUM, CODE, UIDREF, TEXT, CONTAINER) cover this content.

highdicom's SR classes take patient and study from image "evidence"; a clinical report has none,
so this class builds on :class:`highdicom.base.SOPClass` (which writes the Patient, General
Study, Series, Equipment and SOP Common modules) and adds the SR Document modules itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import EnhancedSRStorage, ExplicitVRLittleEndian

from sr_writer.clinical.content import (
    CLINICAL_INFORMATION,
    CLINICAL_REPORT,
    TRACKING_IDENTIFIER,
    ClinicalValue,
    CodedValue,
    NumericValue,
)


class ClinicalInformationReport(hd.base.SOPClass):
    """One patient's (or one study's) clinical values as a TID 1500 Enhanced SR document.

    Patient and study attributes are given explicitly, so the PACS files the document with the
    same patient's imaging (same PatientID; same StudyInstanceUID when the values belong to an
    imaging study). Every UID is given by the caller (``tracking_uid`` of the measurement group,
    ``device_observer_uid`` of the converter), so a caller that derives them from its input
    builds the same document twice and a re-run replaces instead of duplicating.
    """

    def __init__(
        self,
        values: Sequence[ClinicalValue],
        *,
        patient_id: str,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        tracking_uid: str,
        device_observer_uid: str,
        series_number: int = 1,
        instance_number: int = 1,
        patient_name: str | None = None,
        patient_birth_date: str | None = None,
        patient_sex: str | None = None,
        study_date: str | None = None,
        study_time: str | None = None,
        study_id: str | None = None,
        referring_physician_name: str | None = None,
        accession_number: str | None = None,
        study_description: str | None = None,
        series_description: str = "Clinical information",
        manufacturer: str = "fedgate",
        device_observer_name: str = "fedgate convert",
        content_datetime: dt.datetime | None = None,
    ) -> None:
        if not values:
            raise ValueError("a clinical information report needs at least one value")
        content_datetime = content_datetime or dt.datetime.now()
        super().__init__(
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=EnhancedSRStorage,
            instance_number=instance_number,
            modality="SR",
            manufacturer=manufacturer,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            patient_id=patient_id,
            patient_name=patient_name,
            patient_birth_date=patient_birth_date,
            patient_sex=patient_sex,
            accession_number=accession_number,
            study_id=study_id,
            referring_physician_name=referring_physician_name,
            study_date=study_date,
            study_time=study_time,
            series_description=series_description,
            content_date=content_datetime.date(),
            content_time=content_datetime.time(),
            # UTF-8: patient names and code meanings need not be ASCII.
            specific_character_set="ISO_IR 192",
        )
        if study_description:
            self.StudyDescription = study_description
        # SR Document General Module (PS3.3 C.17.2): the converter copies recorded values, it
        # does not attest them, so the document is complete but unverified.
        self.CompletionFlag = "COMPLETE"
        self.VerificationFlag = "UNVERIFIED"
        self.PreliminaryFlag = "FINAL"
        self.PerformedProcedureCodeSequence: list[Dataset] = []
        # SR Document Series Module (PS3.3 C.17.1): Type 2, no performed procedure step.
        self.ReferencedPerformedProcedureStepSequence: list[Dataset] = []

        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(
                observer_device_context=hd.sr.ObserverContext(
                    observer_type=codes.DCM.Device,
                    observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                        uid=hd.UID(device_observer_uid),
                        name=device_observer_name,
                        manufacturer_name=manufacturer,
                    ),
                )
            ),
            procedure_reported=CLINICAL_REPORT,
            imaging_measurements=[_measurement_group(values, tracking_uid)],
            title=CLINICAL_INFORMATION,
        )
        for element in report[0]:
            self[element.tag] = element


def _measurement_group(
    values: Sequence[ClinicalValue], tracking_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = [
        hd.sr.Measurement(name=value.concept, value=value.value, unit=value.unit)
        for value in values
        if isinstance(value, NumericValue)
    ]
    evaluations = [
        hd.sr.QualitativeEvaluation(name=value.concept, value=value.value)
        for value in values
        if isinstance(value, CodedValue)
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(tracking_uid), identifier=TRACKING_IDENTIFIER
        ),
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )

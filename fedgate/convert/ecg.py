"""ECG recordings -> DICOM ECG waveform objects (PS3.3 A.34.3 12-Lead, A.34.4 General ECG).

One recording becomes one instance with one multiplex group holding every lead:

- **12-Lead ECG Waveform Storage** when the recording holds the 12 standard leads (I, II,
  III, aVR, aVL, aVF, V1-V6) and fits that IOD's constraints (PS3.3 A.34.3.4): at most 13
  channels, at most 16384 samples per channel, 200-1000 Hz;
- **General ECG Waveform Storage** (A.34.4.4) otherwise (fewer leads, other leads, longer):
  up to 24 channels, 200-1000 Hz;
- refused with the reason when neither fits (e.g. 100 Hz, or more than 24 leads).

Each channel (Channel Definition Sequence, C.10.9.1.1) names its lead by a CID 3001 code
(Channel Source), keeps the source's name as Channel Label, and stores signed 16-bit samples
(SS) whose physical value is ``sample * ChannelSensitivity`` in the UCUM unit of the Channel
Sensitivity Units Sequence (correction factor 1, baseline 0): exactly what
``Dataset.waveform_array(0)`` computes. The sensitivity is the recording's own resolution where
it has one and the samples fit 16 bits (a WFDB record's 1/gain: lossless), else the finest of
1, 2, 2.5, 5 x 10^k units that keeps every sample within 16 bits.

Missing data (NaN or an empty CSV cell) is refused unless the caller allows it
(``allow_missing``, ``fedgate convert ecg --allow-missing``), and then it is written so that
nothing pretends to be measured: a lead without any sample is left out (no channel of
padding; with a standard lead gone the object is a General ECG, not a 12-Lead ECG), and a
missing sample of a lead that has others is the Waveform Padding Value (5400,100A; C.10.9.1.3),
which readers must skip (pydicom's ``waveform_array`` does not: it scales the padding value
like a sample).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import highdicom as hd
import numpy as np
import numpy.typing as npt
import structlog
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import (
    ExplicitVRLittleEndian,
    GeneralECGWaveformStorage,
    TwelveLeadECGWaveformStorage,
)
from pydicom.valuerep import DA, TM, format_number_as_ds

from fedgate.convert.ecg_input import EcgRecording
from fedgate.convert.ecg_leads import KNOWN_LEADS_TEXT, STANDARD_12, lead_code
from fedgate.convert.identity import ECG_SERIES_NUMBER, PatientStudy, derived_uid
from fedgate.convert.pacs import PacsDirectory, PatientMismatch
from fedgate.convert.problems import ConversionError

log = structlog.get_logger(__name__)

PADDING_VALUE = -32768  # int16 minimum: never a sample, since samples are kept within +-32767
_SAMPLE_MAX = 32767
_FREQUENCY_RANGE = (200.0, 1000.0)  # both ECG IODs (A.34.3.4, A.34.4.4)
_TWELVE_LEAD_MAX_CHANNELS = 13
_TWELVE_LEAD_MAX_SAMPLES = 16384
_GENERAL_MAX_CHANNELS = 24
_UNIT_MEANINGS = {"mV": "millivolt", "uV": "microvolt", "V": "volt"}
_LADDER = sorted(m * 10.0**e for e in range(-7, 4) for m in (1.0, 2.0, 2.5, 5.0))


_STANDARD_12_CODES = frozenset(code.value for name in STANDARD_12 if (code := lead_code(name)))


def usable_recording(
    recording: EcgRecording, allow_missing: bool = False
) -> tuple[EcgRecording, list[str]]:
    """The recording as it will be written, and what is missing from it, one line per lead.

    Missing data is refused (ConversionError naming each lead) unless ``allow_missing``; then
    a lead with no sample at all is left out, and the others keep their gaps (padding).
    """
    missing = ~np.isfinite(recording.samples)
    if not missing.any():
        return recording, []
    total = recording.samples.shape[0]
    found: list[str] = []
    keep: list[int] = []
    for index, name in enumerate(recording.leads):
        gaps = np.flatnonzero(missing[:, index])
        if gaps.size == total:
            found.append(f"lead {name} has no sample")
            continue
        keep.append(index)
        if gaps.size:
            first = ", ".join(str(g + 1) for g in gaps[:5]) + (", ..." if gaps.size > 5 else "")
            found.append(f"lead {name} misses {gaps.size} of {total} samples (sample {first})")
    if not allow_missing:
        raise ConversionError(
            f"{recording.source}: {'; '.join(found)}. Nothing written: give --allow-missing "
            "to write the leads and samples there are (a lead without samples left out, a "
            "missing sample as the Waveform Padding Value)"
        )
    if not keep:
        raise ConversionError(f"{recording.source}: no lead has any sample")
    notes = [
        f"{line}: {'left out' if 'no sample' in line else 'written as the padding value'}"
        for line in found
    ]
    if len(keep) < len(recording.leads):
        recording = dataclasses.replace(
            recording,
            leads=tuple(recording.leads[i] for i in keep),
            samples=recording.samples[:, keep],
            units=tuple(recording.units[i] for i in keep),
            resolutions=tuple(recording.resolutions[i] for i in keep),
        )
    return recording, notes


def choose_sop_class(recording: EcgRecording) -> str:
    """The ECG SOP class whose constraints the recording meets; ConversionError if none.

    12-Lead ECG only for a recording that has the 12 standard leads: the IOD's name is a
    claim about the content, which 3 leads (or 11) do not meet."""
    channels, samples = len(recording.leads), recording.samples.shape[0]
    codes = {code.value for name in recording.leads if (code := lead_code(name))}
    low, high = _FREQUENCY_RANGE
    if not low <= recording.sampling_frequency <= high:
        raise ConversionError(
            f"{recording.source}: {recording.sampling_frequency:g} Hz is outside the "
            f"{low:g}-{high:g} Hz that the DICOM ECG waveform IODs allow (PS3.3 A.34.3.4)"
        )
    if (
        codes >= _STANDARD_12_CODES
        and channels <= _TWELVE_LEAD_MAX_CHANNELS
        and samples <= _TWELVE_LEAD_MAX_SAMPLES
    ):
        return TwelveLeadECGWaveformStorage
    if channels <= _GENERAL_MAX_CHANNELS:
        return GeneralECGWaveformStorage
    raise ConversionError(
        f"{recording.source}: {channels} leads; General ECG Waveform Storage allows at most "
        f"{_GENERAL_MAX_CHANNELS}"
    )


def quantize(
    samples: npt.NDArray[np.float64], resolution: float | None
) -> tuple[str, npt.NDArray[np.int16]]:
    """One channel's ``(ChannelSensitivity as DS, int16 samples)``; NaN -> padding value."""
    finite = samples[np.isfinite(samples)]
    peak = float(np.max(np.abs(finite))) if finite.size else 0.0
    candidates = ([resolution] if resolution else []) + _LADDER
    for sensitivity in candidates:
        text = format_number_as_ds(sensitivity)
        step = float(text)
        # Compare the rounded sample, not the ratio: 32.767 / 0.001 is 32767.000000000004.
        if round(peak / step) <= _SAMPLE_MAX:
            break
    else:
        raise ConversionError(f"a peak of {peak:g} cannot be stored in 16 bits")
    if resolution and step != float(format_number_as_ds(resolution)):
        log.warning("ecg_resolution_reduced", source_resolution=resolution, sensitivity=step)
    digital = np.full(samples.shape, PADDING_VALUE, dtype=np.int16)
    valid = np.isfinite(samples)
    digital[valid] = np.rint(samples[valid] / step).astype(np.int16)
    return text, digital


class EcgWaveform(hd.base.SOPClass):
    """A 12-Lead or General ECG Waveform Storage instance of one recording."""

    def __init__(
        self,
        recording: EcgRecording,
        patient_study: PatientStudy,
        *,
        series_instance_uid: str,
        sop_instance_uid: str,
        series_number: int = ECG_SERIES_NUMBER,
        instance_number: int = 1,
        manufacturer: str = "fedgate",
    ) -> None:
        codes = [lead_code(name) for name in recording.leads]
        unknown = [name for name, code in zip(recording.leads, codes, strict=True) if not code]
        if unknown:
            raise ConversionError(
                f"{recording.source}: unknown lead name(s) {unknown}; known: {KNOWN_LEADS_TEXT}"
            )
        sop_class_uid = choose_sop_class(recording)
        acquired = recording.acquisition_datetime
        now = dt.datetime.now()
        super().__init__(
            **patient_study.sop_class_kwargs(),
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=sop_class_uid,
            instance_number=instance_number,
            modality="ECG",
            manufacturer=manufacturer,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description="ECG",
            specific_character_set="ISO_IR 192",
        )
        if patient_study.study_description:
            self.StudyDescription = patient_study.study_description
        # Waveform Identification Module (C.10.8): Type 1 times. Without a recorded start
        # time (a CSV export), the conversion time is the only truthful time there is.
        self.ContentDate = DA(now.date())
        self.ContentTime = TM(now.time().replace(microsecond=0))
        self.AcquisitionDateTime = (acquired or now).strftime("%Y%m%d%H%M%S")
        # Acquisition Context Module (C.7.6.14): Type 2, nothing is known about the context.
        self.AcquisitionContextSequence: list[Dataset] = []
        self.WaveformSequence = [_multiplex_group(recording, [c for c in codes if c])]


def _multiplex_group(recording: EcgRecording, codes: list[Code]) -> Dataset:
    """The Waveform Module's one multiplex group (C.10.9.1)."""
    channels: list[Dataset] = []
    columns: list[npt.NDArray[np.int16]] = []
    for index, name in enumerate(recording.leads):
        sensitivity, digital = quantize(recording.samples[:, index], recording.resolutions[index])
        unit = recording.units[index]
        channel = Dataset()
        channel.ChannelSourceSequence = [hd.sr.CodedConcept.from_code(codes[index])]
        channel.ChannelLabel = name
        channel.ChannelSensitivity = sensitivity
        channel.ChannelSensitivityUnitsSequence = [
            hd.sr.CodedConcept(unit, "UCUM", _UNIT_MEANINGS[unit])
        ]
        channel.ChannelSensitivityCorrectionFactor = "1"
        channel.ChannelBaseline = "0"
        channel.ChannelTimeSkew = "0"
        channel.WaveformBitsStored = 16
        channels.append(channel)
        columns.append(digital)
    group = Dataset()
    group.MultiplexGroupLabel = "RHYTHM"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(channels)
    group.NumberOfWaveformSamples = int(recording.samples.shape[0])
    group.SamplingFrequency = format_number_as_ds(recording.sampling_frequency)
    group.ChannelDefinitionSequence = channels
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    if any(bool(np.any(column == PADDING_VALUE)) for column in columns):
        group.WaveformPaddingValue = np.int16(PADDING_VALUE).tobytes()
    # Samples are interleaved: C1S1, C2S1, ..., CnS1, C1S2, ... (C.10.9.1.4).
    group.WaveformData = np.stack(columns, axis=1).astype("<i2").tobytes()
    return group


def build_ecg(
    recording: EcgRecording,
    *,
    patient_id: str,
    study_instance_uid: str | None = None,
    pacs: PacsDirectory | None = None,
    allow_missing: bool = False,
) -> EcgWaveform:
    """The ECG instance of a recording for a patient, with UIDs derived from its content.

    Without ``study_instance_uid`` the recording opens a study of its own (an ECG exam is a
    study), derived from the patient and the recording: the same on every run. With ``pacs``,
    patient and study attributes come from the PACS, and a study of another patient is refused.
    Missing samples: see :func:`usable_recording`. The Series Number is the first one free in
    the study from ``ECG_SERIES_NUMBER`` on, where the PACS says which are taken.
    """
    recording, _ = usable_recording(recording, allow_missing)
    digest = recording.digest()
    study_uid = study_instance_uid or derived_uid("fedgate.convert.ecg.study", patient_id, digest)
    acquired = recording.acquisition_datetime
    patient_study = PatientStudy(
        patient_id=patient_id,
        study_instance_uid=study_uid,
        study_description=None if study_instance_uid else "ECG",
        study_date=acquired.strftime("%Y%m%d") if acquired and not study_instance_uid else None,
        study_time=acquired.strftime("%H%M%S") if acquired and not study_instance_uid else None,
    )
    if pacs is not None:
        try:
            patient_study = pacs.complete(patient_study, study_named=bool(study_instance_uid))
        except PatientMismatch as error:
            raise ConversionError(f"{recording.source}: {error}") from None
    series_uid = derived_uid("fedgate.convert.ecg.series", study_uid, digest)
    series_number = ECG_SERIES_NUMBER
    if pacs is not None:
        series_number = pacs.series_number(study_uid, series_uid, ECG_SERIES_NUMBER)
    return EcgWaveform(
        recording,
        patient_study,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=derived_uid("fedgate.convert.ecg", patient_id, study_uid, digest),
    )

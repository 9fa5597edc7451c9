"""Converters that bring non-imaging data into the PACS as DICOM (issue 7).

- clinical variables (CSV/JSON + a mapping to codes) -> one clinical-information SR per patient
  or study (:mod:`fedgate.convert.metadata`, the SR itself is :mod:`sr_writer.clinical`);
- ECG recordings (WFDB records, CSV) -> 12-Lead / General ECG Waveform Storage
  (:mod:`fedgate.convert.ecg`).

Objects carry the patient's PatientID (and the imaging StudyInstanceUID when given), so the PACS
files them with the same patient's imaging. Their UIDs are derived from patient, study and
content (:mod:`fedgate.convert.identity`): converting the same input again gives the same
objects, which replace rather than duplicate. :mod:`fedgate.convert.output` writes them to a
folder or sends them by STOW-RS.
"""

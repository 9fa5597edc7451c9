"""Datasets built in memory -> proper Part 10 files (PS3.10 7.1: preamble, "DICM", file meta)."""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian


def as_part10(dataset: Dataset) -> Dataset:
    """Give ``dataset`` a preamble and file meta, in place; returns it.

    Without them ``dicomweb-client``'s ``store_instances`` sends a bare dataset, which Orthanc
    1.10 stores verbatim and pydicom then refuses to read back (DESIGN.md, "interop trap").
    """
    previous = getattr(dataset, "file_meta", None)
    transfer_syntax = ExplicitVRLittleEndian
    if previous is not None and "TransferSyntaxUID" in previous:
        transfer_syntax = previous.TransferSyntaxUID
    meta = FileMetaDataset()
    # PS3.10 7.1 makes Group Length (0002,0000) and Version (0002,0001) Type 1. pydicom writes
    # them only when asked to (``enforce_file_format``), which dicomweb-client's encoder is not;
    # a placeholder length is recomputed by pydicom whenever the file meta is written.
    meta.FileMetaInformationGroupLength = 0
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset.file_meta = meta
    dataset.preamble = b"\x00" * 128
    return dataset

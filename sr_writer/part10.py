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
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset.file_meta = meta
    dataset.preamble = b"\x00" * 128
    return dataset

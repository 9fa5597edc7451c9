"""A SOP Instance UID sent again under another series: the catalog follows the new copy and
the old file goes, whether the copies come in one request or in two."""

from __future__ import annotations

from pathlib import Path

import pydicom

from gateway.store import EmbeddedStore, IngestPolicy, WarningReason
from tests.gateway.conftest import phantom
from tests.support.dicom import part10_bytes


def received(store: EmbeddedStore, dataset: pydicom.Dataset) -> Path:
    """``dataset`` as a temporary file of ``store``, as the intake leaves a received part."""
    path, handle = store.layout.new_temporary()
    with handle:
        handle.write(part10_bytes(dataset))
    return path


def moved(dataset: pydicom.Dataset) -> pydicom.Dataset:
    copy = pydicom.dcmread(pydicom.filebase.DicomBytesIO(part10_bytes(dataset)))
    copy.SeriesInstanceUID = dataset.SeriesInstanceUID + ".9"
    return copy


def stored_path(store: EmbeddedStore, sop_instance_uid: str) -> Path:
    record = store.catalog.find_instance(sop_instance_uid)
    assert record is not None
    return store.path_of(record.path)


def test_a_copy_under_another_series_in_the_same_request_wins(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path, IngestPolicy())
    try:
        first = next(phantom(seed=120, slices=1).instances())
        second = moved(first)
        batch = store.new_batch()
        assert batch.add(received(store, first)).stored
        outcome = batch.add(received(store, second))
        assert outcome.warning == WarningReason.COERCION_OF_DATA_ELEMENTS
        batch.commit()
        path = stored_path(store, first.SOPInstanceUID)
        assert path.exists()
        assert pydicom.dcmread(path).SeriesInstanceUID == second.SeriesInstanceUID
        old_folder = store.layout.instances / first.StudyInstanceUID / first.SeriesInstanceUID
        assert not list(old_folder.glob("*.dcm"))  # the first copy's file went with it
    finally:
        store.close()


def test_a_copy_under_another_series_in_a_later_request_wins(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path, IngestPolicy())
    try:
        first = next(phantom(seed=121, slices=1).instances())
        batch = store.new_batch()
        batch.add(received(store, first))
        batch.commit()
        old = stored_path(store, first.SOPInstanceUID)
        batch = store.new_batch()
        batch.add(received(store, moved(first)))
        batch.commit()
        new = stored_path(store, first.SOPInstanceUID)
        assert new != old and new.exists() and not old.exists()
    finally:
        store.close()

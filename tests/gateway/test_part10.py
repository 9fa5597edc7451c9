"""Reading a received file's header from the bytes the intake kept (``head``) decides exactly
what reading the file decides, and falls back to the file whenever the head cannot settle it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

import gateway.store.part10 as part10
from gateway.store.data_elements import walk_part10
from gateway.store.part10 import HEAD_BYTES, UnreadableInstanceError, read_header
from tests.gateway.conftest import phantom
from tests.support.dicom import part10_bytes


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What each parse read from: the kept head (a BytesIO) or the file (a Path)."""
    seen: list[Any] = []
    parse = part10._parse

    def spy(source: Any, defer: bool = True) -> pydicom.Dataset:
        seen.append(source)
        return parse(source, defer)

    monkeypatch.setattr(part10, "_parse", spy)
    return seen


def ct_slice() -> pydicom.Dataset:
    dataset = next(iter(phantom(seed=301, slices=1, rows=256, columns=256).instances()))
    assert len(dataset.PixelData) > HEAD_BYTES  # 256 x 256 x 16 bit: the head is not all
    return dataset


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "part"
    path.write_bytes(data)
    return path


def test_an_image_header_is_read_from_the_head_alone(tmp_path: Path, sources: list[Any]) -> None:
    dataset = ct_slice()
    data = part10_bytes(dataset)
    parsed = read_header(write(tmp_path, data), data[:HEAD_BYTES])
    assert parsed.dataset.SOPInstanceUID == dataset.SOPInstanceUID
    assert parsed.dataset.StudyInstanceUID == dataset.StudyInstanceUID
    assert not parsed.needs_part10_rewrite
    assert not any(isinstance(source, Path) for source in sources)


def test_sequences_of_undefined_length_before_the_pixel_data_are_read_from_the_head(
    tmp_path: Path, sources: list[Any]
) -> None:
    """As modalities mostly write them: they must not send every real image to the file."""
    dataset = ct_slice()
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    dataset.ReferencedImageSequence = pydicom.Sequence([item])
    dataset["ReferencedImageSequence"].is_undefined_length = True
    data = part10_bytes(dataset)
    assert b"\xfe\xff\xdd\xe0" in data[:HEAD_BYTES]  # the sequence delimitation item
    parsed = read_header(write(tmp_path, data), data[:HEAD_BYTES])
    assert parsed.dataset.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    assert not any(isinstance(source, Path) for source in sources)


def test_an_image_cut_inside_its_pixel_data_is_refused(tmp_path: Path, sources: list[Any]) -> None:
    data = part10_bytes(ct_slice())
    cut = data[: HEAD_BYTES + 1000]
    with pytest.raises(UnreadableInstanceError, match="truncated"):
        read_header(write(tmp_path, cut), cut[:HEAD_BYTES])
    assert isinstance(sources[-1], Path)  # the head could not settle it: the file did


def test_elements_after_the_pixel_data_send_it_to_the_file(
    tmp_path: Path, sources: list[Any]
) -> None:
    dataset = ct_slice()
    dataset.DataSetTrailingPadding = b"\x00" * 64
    data = part10_bytes(dataset)
    parsed = read_header(write(tmp_path, data), data[:HEAD_BYTES])
    assert parsed.dataset.SOPInstanceUID == dataset.SOPInstanceUID
    assert isinstance(sources[-1], Path)


def test_a_value_across_the_end_of_the_head_is_read_whole_from_the_file(
    tmp_path: Path, sources: list[Any]
) -> None:
    dataset = ct_slice()
    # Two private values below the deferral size, the second one crossing the head's end.
    block = dataset.private_block(0x0011, "FEDGATE TEST", create=True)
    block.add_new(0x10, "OB", b"\x01" * 40_000)
    block.add_new(0x11, "OB", b"\x02" * 40_000)
    data = part10_bytes(dataset)
    parsed = read_header(write(tmp_path, data), data[:HEAD_BYTES])
    assert isinstance(sources[-1], Path)
    assert parsed.dataset[0x0011, 0x1011].value == b"\x02" * 40_000


def test_a_small_object_is_read_whole_from_the_head(tmp_path: Path, sources: list[Any]) -> None:
    dataset = next(iter(phantom(seed=302, slices=1, rows=32, columns=32).instances()))
    data = part10_bytes(dataset)
    assert len(data) < HEAD_BYTES
    parsed = read_header(write(tmp_path, data), data)
    assert parsed.dataset.PixelData == dataset.PixelData
    assert not any(isinstance(source, Path) for source in sources)
    truncated = data[: len(data) - 100]
    with pytest.raises(UnreadableInstanceError, match="truncated"):
        read_header(write(tmp_path, truncated), truncated)


def test_the_intake_parses_an_image_header_on_receipt_without_the_file() -> None:
    """header_from_head, what the STOW-RS intake calls where it receives, needs no file."""
    dataset = ct_slice()
    data = part10_bytes(dataset)
    parsed = part10.header_from_head(data[:HEAD_BYTES], len(data))
    assert parsed is not None
    assert parsed.identity["SOPInstanceUID"] == dataset.SOPInstanceUID
    assert parsed.identity["MediaStorageSOPInstanceUID"] == dataset.SOPInstanceUID
    assert parsed.size == len(data)
    assert parsed.transfer_syntax_uid == dataset.file_meta.TransferSyntaxUID


def test_what_the_head_alone_cannot_settle_is_left_to_the_file() -> None:
    dataset = ct_slice()
    data = part10_bytes(dataset)
    # Cut inside the pixel data: only the file can tell.
    assert part10.header_from_head(data[:HEAD_BYTES], HEAD_BYTES + 1000) is None
    # A large object without pixel data is read whole from its file, for the observers.
    del dataset.PixelData
    dataset.add_new(0x7FE11010, "OB", b"\x00" * (2 * HEAD_BYTES))  # last, like pixel data
    large = part10_bytes(dataset)
    assert walk_part10(large[:HEAD_BYTES], len(large), part10.DEFER_SIZE) is not None
    assert part10.header_from_head(large[:HEAD_BYTES], len(large)) is None

"""The intake's fast header walk gives exactly what pydicom gives, or steps aside (None)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from gateway.store.data_elements import WalkedFile, walk_part10
from gateway.store.part10 import DEFER_SIZE, HEAD_BYTES
from tests.gateway.conftest import phantom
from tests.support.dicom import part10_bytes


def ct_slice(rows: int = 256) -> Dataset:
    return next(iter(phantom(seed=311, slices=1, rows=rows, columns=rows).instances()))


def with_nested_sequences(dataset: Dataset) -> Dataset:
    """Sequences of undefined length, holding items of undefined length, one holding another
    undefined-length sequence: what modalities write."""
    inner = Dataset()
    inner.CodeValue = "113691"
    inner.CodingSchemeDesignator = "DCM"
    inner.CodeMeaning = "IHE Radiation Dose SR"
    item = Dataset()
    item.ReferencedSOPClassUID = dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    item["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    dataset.ReferencedImageSequence = Sequence([item, Dataset()])
    dataset["ReferencedImageSequence"].is_undefined_length = True
    dataset.ProcedureCodeSequence = Sequence([inner])  # defined length
    return dataset


def in_transfer_syntax(dataset: Dataset, transfer_syntax: str) -> Dataset:
    dataset.file_meta.TransferSyntaxUID = transfer_syntax
    return dataset


def assert_same_as_pydicom(walked: WalkedFile | None, data: bytes) -> None:
    assert walked is not None
    reference = pydicom.dcmread(io.BytesIO(data), defer_size=DEFER_SIZE)
    assert list(walked.dataset.keys()) == list(reference.keys())
    for tag in reference.keys():  # noqa: SIM118 (iterating would read deferred values)
        raw = walked.dataset._dict[tag]
        if raw.value is None and raw.length:  # deferred (large, or past the head)
            assert (raw.length, raw.value_tell) == (
                reference._dict[tag].length,
                reference._dict[tag].value_tell,
            )
            continue
        assert walked.dataset[tag].value == reference[tag].value, tag
    assert walked.dataset.file_meta == reference.file_meta
    assert walked.transfer_syntax_uid == reference.file_meta.TransferSyntaxUID
    assert walked.dataset.original_encoding == reference.original_encoding
    assert walked.dataset.original_character_set == reference.original_character_set


@pytest.mark.parametrize("transfer_syntax", ["1.2.840.10008.1.2.1", ImplicitVRLittleEndian])
def test_a_ct_slice_header_is_walked_from_its_head(transfer_syntax: str) -> None:
    data = part10_bytes(in_transfer_syntax(ct_slice(), transfer_syntax))
    walked = walk_part10(data[:HEAD_BYTES], len(data), DEFER_SIZE)
    assert_same_as_pydicom(walked, data)
    assert walked is not None
    assert walked.text(0x00080018) == str(walked.dataset.SOPInstanceUID)
    assert walked.text(0x00020003) == str(walked.dataset.file_meta.MediaStorageSOPInstanceUID)
    assert walked.dataset._dict[0x7FE00010].value is None  # the pixel data is never read


@pytest.mark.parametrize("transfer_syntax", ["1.2.840.10008.1.2.1", ImplicitVRLittleEndian])
def test_nested_sequences_of_undefined_length_are_walked(transfer_syntax: str) -> None:
    dataset = in_transfer_syntax(with_nested_sequences(ct_slice()), transfer_syntax)
    data = part10_bytes(dataset)
    assert b"\xfe\xff\x0d\xe0" in data[:HEAD_BYTES]  # an item delimitation item
    walked = walk_part10(data[:HEAD_BYTES], len(data), DEFER_SIZE)
    assert_same_as_pydicom(walked, data)
    assert walked is not None
    code = walked.dataset.ReferencedImageSequence[0].PurposeOfReferenceCodeSequence[0]
    assert code.CodeMeaning == "IHE Radiation Dose SR"


def test_text_in_the_declared_character_set_is_decoded_as_pydicom_does() -> None:
    dataset = ct_slice()
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.PatientName = "Müller^Jürgen"
    data = part10_bytes(dataset)
    walked = walk_part10(data[:HEAD_BYTES], len(data), DEFER_SIZE)
    assert_same_as_pydicom(walked, data)
    assert walked is not None
    assert str(walked.dataset.PatientName) == "Müller^Jürgen"


def test_a_whole_small_file_is_walked_with_every_value() -> None:
    dataset = with_nested_sequences(ct_slice(rows=32))
    data = part10_bytes(dataset)
    walked = walk_part10(data, len(data), len(data))
    assert_same_as_pydicom(walked, data)
    assert walked is not None
    assert walked.dataset.PixelData == dataset.PixelData


def encapsulated() -> bytes:
    dataset = ct_slice(rows=32)
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"])
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    return part10_bytes(dataset)


@pytest.mark.parametrize(
    "case",
    [
        "no preamble",
        "encapsulated pixel data",
        "big endian",
        "deflated",
        "truncated inside the pixel data",
        "an element after the pixel data",
        "an unknown VR",
        "a head cut inside an element header",
    ],
)
def test_what_the_walk_does_not_settle_is_left_to_pydicom(case: str) -> None:
    data = part10_bytes(ct_slice())
    head, size = data[:HEAD_BYTES], len(data)
    if case == "no preamble":
        head = part10_bytes(ct_slice(), preamble=False)[:HEAD_BYTES]
    elif case == "encapsulated pixel data":
        data = encapsulated()
        head, size = data, len(data)
    elif case in ("big endian", "deflated"):
        syntax = ExplicitVRBigEndian if case == "big endian" else DeflatedExplicitVRLittleEndian
        data = part10_bytes(in_transfer_syntax(ct_slice(), syntax))
        head, size = data[:HEAD_BYTES], len(data)
    elif case == "truncated inside the pixel data":
        size = HEAD_BYTES + 1000
    elif case == "an element after the pixel data":
        size += 72  # as if (FFFC,FFFC) Data Set Trailing Padding followed
    elif case == "an unknown VR":
        dataset = ct_slice()
        dataset.add_new(0x00091010, "LO", "private")
        head = part10_bytes(dataset).replace(b"\x09\x00\x10\x10LO", b"\x09\x00\x10\x10QQ", 1)
    elif case == "a head cut inside an element header":
        end_of_header = data.index(b"\xe0\x7f\x10\x00")  # the pixel data element's tag
        head, size = data[: end_of_header + 5], end_of_header + 5
    assert walk_part10(head, size, DEFER_SIZE) is None


def test_an_implicit_private_element_of_undefined_length_is_left_to_pydicom() -> None:
    """pydicom guesses whether such an element is a sequence; the walk does not guess."""
    dataset = in_transfer_syntax(ct_slice(), ImplicitVRLittleEndian)
    dataset.add_new(0x00091010, "SQ", Sequence([Dataset()]))
    dataset[0x00091010].is_undefined_length = True
    data = part10_bytes(dataset)
    assert walk_part10(data[:HEAD_BYTES], len(data), DEFER_SIZE) is None


_WITH_SEQUENCES = part10_bytes(with_nested_sequences(ct_slice(rows=64)))


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(_WITH_SEQUENCES)), truncated=st.booleans())
def test_wherever_the_head_or_the_file_ends_the_walk_agrees_or_steps_aside(
    cut: int, truncated: bool
) -> None:
    """A head of any length, of the whole file or of a file cut at the same place: the walk
    returns pydicom's dataset or None, never a wrong one."""
    data = _WITH_SEQUENCES[:cut] if truncated else _WITH_SEQUENCES
    walked = walk_part10(_WITH_SEQUENCES[:cut], len(data), DEFER_SIZE)
    pixel_data_at = _WITH_SEQUENCES.index(b"\xe0\x7f\x10\x00")
    if walked is None:
        # It steps aside only when it must: the head ends before the pixel data's value, or
        # the file is cut.
        assert cut < pixel_data_at + 12 or truncated
        return
    # A file cut exactly between two elements is a sound (shorter) file: pydicom agrees.
    assert_same_as_pydicom(walked, data)


#: pydicom's own test files, shipped in its wheel: real modalities' and toolkits' encodings
#: (GE, Siemens, dcmtk, GDCM; JPEG, JPEG 2000, RLE; odd character sets and VRs).
_PYDICOM_FILES = sorted(
    path
    for path in (Path(pydicom.__file__).parent / "data" / "test_files").rglob("*")
    if path.is_file() and path.suffix in {".dcm", ""}
)


def test_pydicoms_own_test_files_are_walked_as_pydicom_reads_them() -> None:
    assert len(_PYDICOM_FILES) > 60  # the wheel ships them; fewer means they moved
    walked = 0
    for path in _PYDICOM_FILES:
        data = path.read_bytes()
        for head in (data[:HEAD_BYTES], data):
            result = walk_part10(head, len(data), DEFER_SIZE)
            if result is not None:
                walked += 1
                assert_same_as_pydicom(result, data)
    assert walked > 150  # most of them take the fast path (218 of 342 walks here)

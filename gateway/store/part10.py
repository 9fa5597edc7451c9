"""Reading and checking a received Part 10 file (PS3.10 7.1) without loading its bulk data.

pydicom reads a truncated file without complaint (a short value is simply short), so the
structure is checked here: every top-level element must end inside the file and the last
one exactly at its end. Bulk values (pixel data above all) are deferred, never read, so the
check costs the same for a 2 GB multi-frame as for a small SR.

Parts without the 128-byte preamble and ``DICM`` prefix (what ``dicomweb-client`` sends for
datasets built in memory) are accepted leniently and rewritten as proper Part 10 files, so
that what we serve back is readable by every toolkit.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from gateway.store.data_elements import walk_part10

# Values larger than this are not read into memory when a header is parsed.
DEFER_SIZE = 64 * 1024
_PREAMBLE_LENGTH = 128
_FULL_READ_LIMIT = 64 * 1024 * 1024


class UnreadableInstanceError(ValueError):
    """The bytes are not a readable DICOM instance (STOW failure reason 0xC000).

    ``dataset`` is what could be read before the problem, if anything: it names the
    instance in the failure report.
    """

    def __init__(self, message: str, dataset: Dataset | None = None):
        super().__init__(message)
        self.dataset = dataset


#: The UIDs the intake checks: the four every stored instance must have (PS3.18 10.5), and
#: the File Meta Information's copies of the first two (PS3.10 7.1), which must agree.
IDENTITY_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
MEDIA_STORAGE_KEYWORDS = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")
_IDENTITY_TAGS: dict[str, int] = {
    keyword: cast(int, tag_for_keyword(keyword))
    for keyword in IDENTITY_KEYWORDS + MEDIA_STORAGE_KEYWORDS
}


@dataclass
class ParsedInstance:
    """A received instance's header, and whether its file needs rewriting as Part 10."""

    dataset: Dataset  # bulk values deferred
    transfer_syntax_uid: str
    needs_part10_rewrite: bool
    #: The text of each of the identifying UIDs (:data:`IDENTITY_KEYWORDS` and
    #: :data:`MEDIA_STORAGE_KEYWORDS`), None where absent or empty; not yet validated.
    identity: dict[str, str | None]
    size: int  # of the received file


#: How much of each received part the intake keeps in memory for :func:`read_header`: more
#: than the header (and the whole of most reports), a tenth of a CT slice.
HEAD_BYTES = 64 * 1024


def read_header(path: Path, head: bytes | None = None) -> ParsedInstance:
    """Parse ``path`` leniently and check its structure; raise UnreadableInstanceError.

    ``head``, the file's first bytes if the caller still has them, is parsed instead of the
    file when it holds everything the check needs: the whole file, or every element up to
    one that ends exactly at the file's end (the pixel data of an image). That spares the
    dozens of small reads and seeks per file that parsing from disk costs.
    """
    size = path.stat().st_size
    if size == 0:
        raise UnreadableInstanceError("the part is empty")
    if head is not None:
        parsed = header_from_head(head, size)
        if parsed is not None:
            return parsed
    dataset: Dataset | None = None
    if head is not None:
        dataset = _parse_head(head, size)
    if dataset is None:
        dataset = _checked(_parse(path), size)
    if "PixelData" not in dataset and size <= _FULL_READ_LIMIT and len(head or b"") < size:
        # Reports (SR) and other objects without pixel data are read whole: observers such as
        # the findings index read their content after the temporary file has been renamed,
        # when a deferred value could no longer be fetched from it.
        dataset = _parse(path, defer=False)
    meta = getattr(dataset, "file_meta", None)
    transfer_syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if transfer_syntax is None:
        transfer_syntax = (
            ImplicitVRLittleEndian if dataset.original_encoding[0] else ExplicitVRLittleEndian
        )
    identity = {keyword: text_or_none(dataset, keyword) for keyword in IDENTITY_KEYWORDS}
    for keyword in MEDIA_STORAGE_KEYWORDS:
        identity[keyword] = text_or_none(meta, keyword) if meta is not None else None
    return ParsedInstance(
        dataset=dataset,
        transfer_syntax_uid=str(transfer_syntax),
        # pydicom leaves the preamble None when the file has no preamble and DICM prefix.
        needs_part10_rewrite=dataset.preamble is None,
        identity=identity,
        size=size,
    )


def text_or_none(dataset: Dataset, keyword: str) -> str | None:
    """The value of ``keyword`` in ``dataset`` as text, None if absent or empty."""
    value = dataset.get(keyword)
    return str(value) if value not in (None, "") else None


def header_from_head(head: bytes, size: int) -> ParsedInstance | None:
    """The header of a ``size``-byte received file from its first bytes alone, or None when
    they do not settle it the fast way (:func:`gateway.store.data_elements.walk_part10`).

    Touches no file and takes some tens of microseconds, so the intake may call it where it
    receives, ahead of the threads that make the file durable: parsing there does not
    compete with reception for the interpreter lock.
    """
    whole = len(head) >= size
    walked = walk_part10(head, size, defer_size=_FULL_READ_LIMIT if whole else DEFER_SIZE)
    if walked is None or not (whole or "PixelData" in walked.dataset):
        return None  # without pixel data, a large object is read whole (see read_header)
    identity = {keyword: walked.text(tag) for keyword, tag in _IDENTITY_TAGS.items()}
    return ParsedInstance(walked.dataset, walked.transfer_syntax_uid, False, identity, size)


def _parse(source: Path | io.BytesIO, defer: bool = True) -> Dataset:
    try:
        # force: a part without preamble and DICM is still read (and rewritten later).
        return pydicom.dcmread(source, force=True, defer_size=DEFER_SIZE if defer else None)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OverflowError) as error:
        raise UnreadableInstanceError(f"not a readable DICOM file: {error}") from None
    except Exception as error:  # pydicom raises a wide variety on arbitrary bytes
        raise UnreadableInstanceError(f"not a readable DICOM file: {error!r}") from None


def _parse_head(head: bytes, size: int) -> Dataset | None:
    """The dataset parsed from the first bytes of a ``size``-byte file, or None when they do
    not settle the check (then the file itself is parsed)."""
    whole = len(head) >= size
    try:
        dataset = _parse(io.BytesIO(head), defer=not whole)
    except UnreadableInstanceError:
        if whole:
            raise
        return None  # perhaps cut inside an element: the file decides
    if whole:
        return _checked(dataset, size)
    if _settled_end(dataset, len(head)) != size:
        return None
    return dataset


def _settled_end(dataset: Dataset, read: int) -> int:
    """Where the last element ends, or -1 if the first ``read`` bytes do not settle it: a
    value that was read (not deferred) but goes on past them came out cut short, and an
    undefined length may have been read up to the cut instead of its delimiter."""
    end = 0
    for tag in dataset.keys():  # noqa: SIM118 (iteration would read every value)
        raw = dataset._dict[tag]
        tell = getattr(raw, "value_tell", None)
        length = getattr(raw, "length", None)
        if tell is None or length is None:
            continue  # converted while reading (SpecificCharacterSet): an early element
        if length == 0xFFFFFFFF:
            return -1
        if tell + length > read and getattr(raw, "value", None) is not None:
            return -1
        end = max(end, tell + length)
    return end


def _checked(dataset: Dataset, size: int) -> Dataset:
    """``dataset`` once its structure is checked; a failure names what could be read."""
    try:
        _check_structure(dataset, size)
    except UnreadableInstanceError as error:
        error.dataset = dataset
        raise
    return dataset


def _check_structure(dataset: Dataset, size: int) -> None:
    if len(dataset) == 0:
        raise UnreadableInstanceError("no DICOM data elements found")
    end = 0
    # keys(), not iteration: iterating a Dataset converts (and so reads) every value.
    for tag in dataset.keys():  # noqa: SIM118
        raw = dataset._dict[tag]  # the raw element: value position and length, value unread
        tell = getattr(raw, "value_tell", None)
        length = getattr(raw, "length", None)
        if tell is None or length is None or length == 0xFFFFFFFF:
            continue  # undefined length: pydicom read it to its delimiter, so it is complete
        element_end = tell + length
        if element_end > size:
            raise UnreadableInstanceError(
                f"the file is truncated: element {tag} ends at byte {element_end}, "
                f"the file has {size}"
            )
        end = max(end, element_end)
    if 0 < end < size and size - end < 8:
        raise UnreadableInstanceError("the file is truncated inside a data element header")


def rewrite_as_part10(source: Path, parsed: ParsedInstance, destination: Path) -> None:
    """Write ``source`` (no preamble) as a proper Part 10 file at ``destination``."""
    dataset = parsed.dataset
    with open(source, "rb") as handle:
        starts_with_meta = handle.read(2) == b"\x02\x00"
    with open(destination, "wb") as out, open(source, "rb") as original:
        out.write(b"\x00" * _PREAMBLE_LENGTH + b"DICM")
        if not starts_with_meta:
            # A bare dataset: give it the File Meta Information it lacks (PS3.10 7.1).
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = dataset.SOPClassUID
            meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            meta.TransferSyntaxUID = UID(parsed.transfer_syntax_uid)
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            buffer = io.BytesIO()
            write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
            out.write(buffer.getvalue())
        shutil.copyfileobj(original, out, 1024 * 1024)
        out.flush()
        os.fdatasync(out.fileno())

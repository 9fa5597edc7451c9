"""A fast walk over the data elements of a received Part 10 file's first bytes (PS3.5 7.1).

The intake parses the header of every received instance. pydicom does it in about 170 us
for a CT slice, most of it per-element generality the intake does not need; the walk here
does it in a fraction of that, for the common case only: a file with preamble and ``DICM``
prefix (PS3.10 7.1), in Explicit or Implicit VR Little Endian or an encapsulated (explicit,
little endian) transfer syntax, whose elements all have defined lengths apart from
sequences. Anything else (no preamble, Big Endian, Deflate, an undefined-length value that
is not a sequence such as encapsulated pixel data, a VR it does not know, a file that ends
before its last element) makes :func:`walk_part10` answer None, and the caller parses with
pydicom as before. The walk only finds where values are; it converts nothing, so the
dataset it returns is what pydicom would have built: raw elements converted on access.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from struct import Struct
from typing import cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_16, EXPLICIT_VR_LENGTH_32
from pydicom.values import convert_string

#: VRs whose explicit encoding has a 2-byte length, and those with 2 reserved bytes and a
#: 4-byte length (PS3.5 Table 7.1-1 and 7.1-2), keyed by their encoded bytes.
_SHORT_LENGTH_VRS = {str(vr).encode(): str(vr) for vr in EXPLICIT_VR_LENGTH_16}
_LONG_LENGTH_VRS = {str(vr).encode(): str(vr) for vr in EXPLICIT_VR_LENGTH_32}

#: Raw elements by tag, as pydicom's Dataset holds them before conversion.
_Elements = dict[BaseTag, DataElement | RawDataElement]

_PREAMBLE_AND_PREFIX = 132
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITATION = 0xFFFEE00D
_SEQUENCE_DELIMITATION = 0xFFFEE0DD
_SPECIFIC_CHARACTER_SET = 0x00080005

_TAG_AND_LENGTH = Struct("<HHL")  # implicit VR, and item headers
_TAG_VR_LENGTH = Struct("<HH2sH")  # explicit VR with a 2-byte length
_LONG_LENGTH = Struct("<L")


@dataclass(frozen=True)
class WalkedFile:
    """A Part 10 file's header: its dataset (bulk values deferred) and what was learnt on the
    way, so that nobody converts them again."""

    # Not in the repr: printing a dataset reads its deferred values, which are not in memory.
    dataset: Dataset = field(repr=False)  # with file_meta; raw elements, converted when read
    transfer_syntax_uid: str
    elements: _Elements = field(repr=False)  # the dataset's and the file meta's

    def text(self, tag: int) -> str | None:
        """A short text value (a UID, say) as pydicom would give it, without converting it
        into pydicom's value types: trailing padding removed, None if absent or empty."""
        return _text(self.elements.get(BaseTag(tag)))


class _Unsettled(Exception):
    """The bytes do not settle the walk: the caller parses with pydicom."""


def walk_part10(head: bytes, size: int, defer_size: int) -> WalkedFile | None:
    """The header of a ``size``-byte Part 10 file whose first bytes are ``head``.

    Values longer than ``defer_size`` are deferred (their value is None), as pydicom's
    ``defer_size`` does. Succeeds only if every element but the last ends inside ``head``
    and the last ends exactly at ``size``: then the file's structure is sound (every element
    ends inside it, nothing follows the last). Otherwise None.
    """
    if len(head) < _PREAMBLE_AND_PREFIX + 12 or head[128:132] != b"DICM":
        return None
    try:
        meta, position = _walk_file_meta(head)
        transfer_syntax = _text(meta.get(BaseTag(0x00020010)))
        if transfer_syntax is None or transfer_syntax in _NOT_WALKED:
            return None
        implicit = transfer_syntax == ImplicitVRLittleEndian
        elements, end = _walk_dataset(head, position, size, implicit, defer_size)
    except _Unsettled:
        return None
    if end != size or not elements:
        return None
    charset = elements.get(BaseTag(_SPECIFIC_CHARACTER_SET))
    encoding: str | list[str] = default_encoding
    if charset is not None:  # even empty, as pydicom does: then the default, as a list
        encoding = convert_encodings(convert_string(charset.value or b"", True))
    dataset = Dataset(elements)
    dataset.file_meta = FileMetaDataset(meta)
    dataset.set_original_encoding(implicit, True, encoding)
    return WalkedFile(
        dataset=dataset, transfer_syntax_uid=transfer_syntax, elements=meta | elements
    )


#: Transfer syntaxes the walk leaves to pydicom (big endian; a deflated dataset).
_NOT_WALKED = frozenset({str(ExplicitVRBigEndian), str(DeflatedExplicitVRLittleEndian)})


def _text(element: RawDataElement | DataElement | None) -> str | None:
    if element is None or not element.value:
        return None
    return bytes(element.value).rstrip(b"\x00 ").decode(default_encoding) or None


def _walk_file_meta(head: bytes) -> tuple[_Elements, int]:
    """The File Meta Information group (0002), always Explicit VR Little Endian (PS3.10 7.1)."""
    meta: _Elements = {}
    position = _PREAMBLE_AND_PREFIX
    while position + 8 <= len(head):
        if head[position : position + 2] != b"\x02\x00":
            return meta, position
        tag, vr, length, value_at = _element_header(head, position, len(head), False)
        end = value_at + length
        if length == _UNDEFINED_LENGTH or end > len(head):
            raise _Unsettled
        key = BaseTag(tag)
        meta[key] = RawDataElement(key, vr, length, head[value_at:end], value_at, False, True)
        position = end
    raise _Unsettled


def _walk_dataset(
    head: bytes, position: int, size: int, implicit: bool, defer_size: int
) -> tuple[_Elements, int]:
    """The top-level elements from ``position``, and where the last one ends."""
    elements: _Elements = {}
    available = len(head)
    previous = -1
    while position < available:
        if position + 8 > available:
            raise _Unsettled  # an element header cut by the head (or by the file)
        tag, vr, length, value_at = _element_header(head, position, available, implicit)
        if tag <= previous or tag >> 16 == 0xFFFE:
            raise _Unsettled  # out of order, repeated, or a stray item: pydicom's leniency
        previous = tag
        value: bytes | None
        if length == _UNDEFINED_LENGTH:
            if _sequence_vr(tag, vr) != "SQ":
                raise _Unsettled  # e.g. encapsulated pixel data
            end = _sequence_end(head, value_at, implicit)
            value = head[value_at:end]
        else:
            end = value_at + length
            if end > size:
                raise _Unsettled  # truncated: pydicom's path names the element
            if end > available:
                if end != size:
                    raise _Unsettled  # more elements after this one are not in the head
                value = None  # the bulk value at the end of the file (pixel data)
            elif length > defer_size and tag != _SPECIFIC_CHARACTER_SET:
                value = None
            elif length == 0:
                value = cast(bytes | None, empty_value_for_VR(vr, raw=True))
            else:
                value = head[value_at:end]
        key = BaseTag(tag)
        elements[key] = RawDataElement(key, vr, length, value, value_at, implicit, True)
        position = end
    return elements, position


def _element_header(
    data: bytes, position: int, available: int, implicit: bool
) -> tuple[int, str | None, int, int]:
    """Tag, VR (None in implicit VR), value length and value position of the element at
    ``position`` (PS3.5 7.1.1-7.1.3)."""
    if implicit:
        group, element, length = _TAG_AND_LENGTH.unpack_from(data, position)
        return group << 16 | element, None, length, position + 8
    group, element, encoded_vr, length = _TAG_VR_LENGTH.unpack_from(data, position)
    vr = _SHORT_LENGTH_VRS.get(encoded_vr)
    if vr is not None:
        return group << 16 | element, vr, length, position + 8
    vr = _LONG_LENGTH_VRS.get(encoded_vr)
    if vr is None or position + 12 > available:
        raise _Unsettled  # an unknown VR (or implicit VR mislabelled explicit)
    (length,) = _LONG_LENGTH.unpack_from(data, position + 8)
    return group << 16 | element, vr, length, position + 12


def _sequence_vr(tag: int, vr: str | None) -> str | None:
    if vr is not None:
        return vr
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None  # a private element in implicit VR: pydicom guesses, so we do not


def _sequence_end(data: bytes, position: int, implicit: bool) -> int:
    """Just past the Sequence Delimitation Item of the undefined-length sequence whose first
    item is at ``position`` (PS3.5 7.5.2): items are walked, never searched for, since a
    delimiter's bytes may occur inside a value."""
    available = len(data)
    while position + 8 <= available:
        group, element, length = _TAG_AND_LENGTH.unpack_from(data, position)
        tag = group << 16 | element
        position += 8
        if tag == _SEQUENCE_DELIMITATION:
            return position
        if tag != _ITEM:
            raise _Unsettled
        if length == _UNDEFINED_LENGTH:
            position = _item_end(data, position, implicit)
        else:
            position += length
    raise _Unsettled


def _item_end(data: bytes, position: int, implicit: bool) -> int:
    """Just past the Item Delimitation Item of an undefined-length item starting at
    ``position``."""
    available = len(data)
    while position + 8 <= available:
        group, element, _ = _TAG_AND_LENGTH.unpack_from(data, position)
        if group << 16 | element == _ITEM_DELIMITATION:
            return position + 8
        tag, vr, length, value_at = _element_header(data, position, available, implicit)
        if length == _UNDEFINED_LENGTH:
            if _sequence_vr(tag, vr) != "SQ":
                raise _Unsettled
            position = _sequence_end(data, value_at, implicit)
        else:
            position = value_at + length
    raise _Unsettled

"""The streaming multipart/related parser: same parts whatever the chunking of the body."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dicomweb.multipart import MediaType, MultipartError, MultipartParser


class Collector:
    def __init__(self) -> None:
        self.parts: list[tuple[dict[str, str], bytes]] = []
        self._data = bytearray()
        self._headers: dict[str, str] = {}

    def part_begin(self, headers: dict[str, str]) -> None:
        self._headers = headers
        self._data = bytearray()

    def part_data(self, data: memoryview) -> None:
        self._data += data

    def part_end(self) -> None:
        self.parts.append((self._headers, bytes(self._data)))


def encode(parts: list[bytes], boundary: str) -> bytes:
    body = b"preamble to ignore\r\n"
    for part in parts:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{boundary}--\r\nepilogue".encode()


def parse(body: bytes, boundary: str, cuts: list[int]) -> Collector:
    collector = Collector()
    parser = MultipartParser(boundary, collector)
    previous = 0
    for cut in [*sorted(set(cuts)), len(body)]:
        parser.feed(body[previous:cut])
        previous = cut
    parser.finish()
    return collector


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    boundary=st.text(alphabet="abcdefXYZ0123456789'()+_,-./:=?", min_size=1, max_size=70),
    cut_fractions=st.lists(st.floats(min_value=0, max_value=1), max_size=20),
)
def test_any_chunking_gives_the_same_parts(
    parts: list[bytes], boundary: str, cut_fractions: list[float]
) -> None:
    delimiter = f"\r\n--{boundary}".encode()
    parts = [part for part in parts if delimiter not in b"\r\n" + part + b"\r\n"]
    if not parts:
        return
    body = encode(parts, boundary)
    cuts = [int(fraction * len(body)) for fraction in cut_fractions]
    collected = parse(body, boundary, cuts)
    assert [data for _, data in collected.parts] == parts
    assert all(h["content-type"] == "application/dicom" for h, _ in collected.parts)


@settings(max_examples=300, deadline=None)
@given(
    fragments=st.lists(
        st.lists(
            st.sampled_from([b"\r", b"\n", b"-", b"--", b"\r\n--", b"ab", b"x" * 40]), max_size=30
        ),
        min_size=1,
        max_size=4,
    ),
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8),
)
def test_parts_full_of_near_delimiters_in_any_chunk_sizes(
    fragments: list[list[bytes]], sizes: list[int]
) -> None:
    """Bodies made of pieces of the delimiter itself, fed in small chunks of varying size:
    every split of a delimiter between chunks, and every false start, is met."""
    boundary = "ab"
    delimiter = f"\r\n--{boundary}".encode()
    parts = [b"".join(pieces) for pieces in fragments]
    parts = [part for part in parts if delimiter not in b"\r\n" + part + b"\r\n"]
    if not parts:
        return
    body = encode(parts, boundary)
    cuts, position, turn = [], 0, 0
    while position < len(body):
        position += sizes[turn % len(sizes)]
        turn += 1
        cuts.append(min(position, len(body)))
    collected = parse(body, boundary, cuts)
    assert [data for _, data in collected.parts] == parts


def test_large_parts_in_network_sized_chunks() -> None:
    """Parts larger than a chunk, chunks that end anywhere: the body bytes go through."""
    parts = [bytes([n]) * (300_000 + 977 * n) for n in range(1, 5)]
    body = encode(parts, "fedgate-boundary")
    for size in (1 << 16, (1 << 18) + 13, 7_919):
        collected = parse(body, "fedgate-boundary", list(range(size, len(body), size)))
        assert [data for _, data in collected.parts] == parts


def test_body_cut_short_is_an_error() -> None:
    body = encode([b"abc"], "b")
    with pytest.raises(MultipartError, match="without its close delimiter"):
        parse(body[:-15], "b", [])


def test_no_parts_is_an_error() -> None:
    with pytest.raises(MultipartError, match="no parts"):
        parse(b"--b--\r\n", "b", [])


def test_header_line_without_colon_is_an_error() -> None:
    with pytest.raises(MultipartError, match="Name: value"):
        parse(b"--b\r\nnot a header\r\n\r\ndata\r\n--b--", "b", [])


def test_media_type_parameters() -> None:
    media = MediaType('Multipart/Related; type="application/dicom"; boundary="a b;c"')
    assert media.mime == "multipart/related"
    assert media.params == {"type": "application/dicom", "boundary": "a b;c"}

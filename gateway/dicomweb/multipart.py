"""Incremental ``multipart/related`` parsing (RFC 2046 5.1, RFC 2387) for STOW-RS bodies.

The parser is push-based: feed it the body chunk by chunk as the network delivers it and it
calls a :class:`PartHandler` with each part's headers and body bytes, so a part can be written
to disk while it arrives and memory stays bounded by the chunk size, whatever the size of the
study (DESIGN.md, principle 2). Boundaries are found with ``bytes.find``, which runs at
gigabytes per second; only the last ``len(delimiter) - 1`` bytes of a chunk are held back in
case a delimiter straddles two chunks.
"""

from __future__ import annotations

import re
from typing import Protocol

_TOKEN_PARAM = re.compile(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')

MAX_HEADER_BYTES = 16 * 1024
MAX_BOUNDARY_LENGTH = 256
#: How much of a chunk goes into the buffer at a time outside part bodies: enough for the
#: largest headers allowed, so that a body following them in the chunk is not copied whole.
_SLICE = MAX_HEADER_BYTES + 4 + MAX_BOUNDARY_LENGTH


class MultipartError(ValueError):
    """The body is not well-formed multipart (a 400 Bad Request)."""


class MediaType:
    """A parsed ``Content-Type`` value: ``type/subtype`` plus lower-cased parameter names."""

    def __init__(self, value: str):
        main, _, rest = value.partition(";")
        self.mime = main.strip().lower()
        self.params: dict[str, str] = {}
        for name, raw in _TOKEN_PARAM.findall(";" + rest):
            if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            self.params[name.lower()] = raw

    def __repr__(self) -> str:
        return f"MediaType({self.mime!r}, {self.params!r})"


class PartHandler(Protocol):
    """Receives the parts of a multipart body as the parser finds them."""

    def part_begin(self, headers: dict[str, str]) -> None: ...

    def part_data(self, data: memoryview) -> None: ...

    def part_end(self) -> None: ...


class MultipartParser:
    """Feed with :meth:`feed`, close with :meth:`finish`; raises MultipartError on bad framing."""

    _PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _EPILOGUE = range(5)

    def __init__(self, boundary: str, handler: PartHandler):
        # RFC 2046 says at most 70 characters, but Orthanc's STOW client sends longer ones:
        # accept them, within a bound that keeps a hostile header harmless.
        if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH:
            raise MultipartError(
                f"the multipart boundary must be 1 to {MAX_BOUNDARY_LENGTH} characters"
            )
        self._handler = handler
        # Treat the body as if preceded by CRLF so the first delimiter needs no special case.
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._buffer = bytearray(b"\r\n")
        self._state = self._PREAMBLE
        self.parts = 0

    def feed(self, data: bytes) -> None:
        """Parse the next chunk of the body.

        Part bodies, nearly all of the bytes, are searched for the delimiter where they lie in
        ``data`` and handed on as views of it: no copy into a buffer. Only the little that must
        be seen whole (headers, the lines after a delimiter, a delimiter split between two
        chunks) goes through the buffer, taken from ``data`` a slice at a time.
        """
        position, end = 0, len(data)
        while True:
            if self._state == self._BODY and len(self._buffer) < len(self._delimiter):
                if end - position < len(self._delimiter):
                    # Too little to tell a split delimiter from body bytes: buffer it.
                    self._buffer += data[position:]
                    self._advance()
                    return
                position = self._scan_chunk(data, position)
                continue
            if position >= end:
                return
            taken = min(end, position + _SLICE)
            with memoryview(data) as view:
                self._buffer += view[position:taken]
            position = taken
            self._advance()

    def _advance(self) -> None:
        """Run the state machine over the buffer until it needs more bytes."""
        while True:
            if self._state == self._BODY:
                if not self._scan_body():
                    return
            elif self._state == self._PREAMBLE:
                index = self._buffer.find(self._delimiter)
                if index < 0:
                    # Keep only what could still be the start of the first delimiter.
                    del self._buffer[: max(0, len(self._buffer) - len(self._delimiter) + 1)]
                    return
                del self._buffer[: index + len(self._delimiter)]
                self._state = self._AFTER_DELIMITER
            elif self._state == self._AFTER_DELIMITER:
                if not self._after_delimiter():
                    return
            elif self._state == self._HEADERS:
                if not self._read_headers():
                    return
            else:  # epilogue: ignored, as RFC 2046 says
                self._buffer.clear()
                return

    def _scan_chunk(self, data: bytes, position: int) -> int:
        """In a part body, with fewer buffered bytes than a delimiter (the tail of the last
        chunk) and at least a delimiter's length of ``data`` left: hand on the body bytes up
        to the next delimiter or nearly the end of ``data``; returns the position reached."""
        length = len(self._delimiter)
        if self._buffer:
            # A delimiter starting in the buffered tail ends in the next length - 1 bytes.
            carried = len(self._buffer)
            joined = bytes(self._buffer) + data[position : position + length - 1]
            index = joined.find(self._delimiter)
            if index >= 0:
                self._buffer.clear()
                if index:
                    self._handler.part_data(memoryview(joined)[:index])
                self._end_part()
                return position + index + length - carried
            self._emit(len(self._buffer))
            self._buffer.clear()
        with memoryview(data) as view:
            index = data.find(self._delimiter, position)
            if index >= 0:
                if index > position:
                    self._handler.part_data(view[position:index])
                self._end_part()
                return index + length
            keep = len(data) - (length - 1)
            if keep > position:
                self._handler.part_data(view[position:keep])
            self._buffer += view[max(keep, position) :]
        return len(data)

    def _end_part(self) -> None:
        self._handler.part_end()
        self._state = self._AFTER_DELIMITER

    def finish(self) -> None:
        """The body ended: it must have ended with the close delimiter."""
        if self._state != self._EPILOGUE:
            where = "inside a part" if self._state in (self._BODY, self._HEADERS) else "early"
            raise MultipartError(f"the multipart body ended {where}, without its close delimiter")
        if self.parts == 0:
            raise MultipartError("the multipart body has no parts")

    @property
    def in_part(self) -> bool:
        return self._state in (self._HEADERS, self._BODY)

    def _after_delimiter(self) -> bool:
        # After a delimiter comes "--" (close delimiter) or optional whitespace and CRLF.
        if len(self._buffer) < 2:
            return False
        if self._buffer[:2] == b"--":
            self._state = self._EPILOGUE
            return True
        line_end = self._buffer.find(b"\r\n")
        if line_end < 0:
            if len(self._buffer) > 1024:
                raise MultipartError("garbage after a multipart boundary")
            return False
        if self._buffer[:line_end].strip(b" \t"):
            raise MultipartError("garbage after a multipart boundary")
        del self._buffer[: line_end + 2]
        self._state = self._HEADERS
        return True

    def _emit(self, length: int) -> None:
        """Hand the first ``length`` buffered bytes to the handler without copying them.

        The view is valid only during the call: a handler that keeps data must copy it.
        """
        with memoryview(self._buffer) as view, view[:length] as data:
            self._handler.part_data(data)

    def _read_headers(self) -> bool:
        if self._buffer[:2] == b"\r\n":
            raw_headers = b""
            del self._buffer[:2]
        else:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEADER_BYTES:
                    raise MultipartError("a part's headers exceed 16 KiB")
                return False
            raw_headers = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
        headers: dict[str, str] = {}
        for line in raw_headers.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or not name.strip():
                raise MultipartError("a part header line is not 'Name: value'")
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        self.parts += 1
        self._handler.part_begin(headers)
        self._state = self._BODY
        return True

    def _scan_body(self) -> bool:
        index = self._buffer.find(self._delimiter)
        if index < 0:
            keep = len(self._delimiter) - 1
            if len(self._buffer) > keep:
                cut = len(self._buffer) - keep
                self._emit(cut)
                del self._buffer[:cut]
            return False
        if index:
            self._emit(index)
        del self._buffer[: index + len(self._delimiter)]
        self._end_part()
        return True

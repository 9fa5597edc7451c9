"""Benchmark: our multipart/related parser against python-multipart (issue 13, item 11b).

    PYTHONPATH=.:/path/to/python-multipart .venv/bin/python -m bench.multipart [--rounds 5]

The body is bench.ingest's: 200 synthetic 512x512 16-bit CT instances in one
``multipart/related`` body (about 105 MB). Each parser is fed the body in 64 KiB chunks (what
uvicorn hands the app) and, in a second case, 1 MiB chunks; the handler either only counts
the bytes (the parser's own cost) or writes each part to its own temporary file as it
arrives (the STOW-RS shape, without the fsync). Median of the rounds, per parser and case.
Then the edge cases a STOW-RS server must answer with 400: how each parser reports them.

python-multipart is not a dependency of fedgate (nor of Starlette, which lists it as an
optional extra for form parsing): install it into a folder of its own to run this, e.g.
``.venv/bin/pip install --target /tmp/pm python-multipart``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.ingest import BOUNDARY, body, instances
from gateway.dicomweb.multipart import MultipartParser


class _Counting:
    def __init__(self, folder: str | None):
        self.folder = folder
        self.parts = 0
        self.bytes = 0
        self._file: Any = None

    def part_begin(self, headers: dict[str, str]) -> None:
        self.parts += 1
        if self.folder is not None:
            self._file = open(os.path.join(self.folder, f"{self.parts}.part"), "wb")  # noqa: SIM115

    def part_data(self, data: memoryview | bytes) -> None:
        self.bytes += len(data)
        if self._file is not None:
            self._file.write(data)

    def part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def ours(payload: bytes, chunk: int, handler: _Counting) -> None:
    parser = MultipartParser(BOUNDARY, handler)
    view = memoryview(payload)
    for start in range(0, len(payload), chunk):
        parser.feed(bytes(view[start : start + chunk]))
    parser.finish()


def theirs(payload: bytes, chunk: int, handler: _Counting) -> None:
    from python_multipart.multipart import MultipartParser as PythonMultipart
    from python_multipart.multipart import MultipartState

    parser = PythonMultipart(
        BOUNDARY,
        {
            "on_part_begin": lambda: handler.part_begin({}),
            "on_part_data": lambda data, start, end: handler.part_data(data[start:end]),
            "on_part_end": handler.part_end,
        },
    )
    view = memoryview(payload)
    for start in range(0, len(payload), chunk):
        parser.write(bytes(view[start : start + chunk]))
    parser.finalize()
    if parser.state != MultipartState.END:  # finalize() itself checks nothing (0.0.x)
        raise ValueError("the body ended before its close delimiter")


def timed(
    parse: Callable[[bytes, int, _Counting], None],
    payload: bytes,
    chunk: int,
    to_disk: bool,
    rounds: int,
) -> tuple[float, _Counting]:
    times = []
    handler = _Counting(None)
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as folder:
            handler = _Counting(folder if to_disk else None)
            started = time.perf_counter()
            parse(payload, chunk, handler)
            times.append(time.perf_counter() - started)
    return statistics.median(times), handler


EDGE_CASES = {
    "well-formed": lambda whole: whole,
    "cut short mid-part": lambda whole: whole[: len(whole) // 2],
    "no close delimiter": lambda whole: whole[: whole.rindex(b"--" + BOUNDARY.encode())],
    "garbage after a boundary": lambda whole: whole.replace(
        f"--{BOUNDARY}\r\n".encode(), f"--{BOUNDARY}xyz\r\n".encode(), 1
    ),
    "no parts": lambda whole: f"--{BOUNDARY}--\r\n".encode(),
    "a 20 KiB header line": lambda whole: whole.replace(
        b"Content-Type: application/dicom", b"X-Long: " + b"a" * 20480, 1
    ),
}


def edge_cases(parts: list[bytes]) -> None:
    whole = body(parts[:2])
    print("\nedge case                  | ours                       | python-multipart")
    for name, make in EDGE_CASES.items():
        payload = make(whole)
        results = []
        for parse in (ours, theirs):
            handler = _Counting(None)
            try:
                parse(payload, 65536, handler)
                results.append(f"accepted, {handler.parts} part(s)")
            except Exception as error:  # MultipartError, ValueError, theirs: any
                results.append(f"{type(error).__name__}")
        print(f"{name:26} | {results[0]:26} | {results[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    parts = instances(args.instances)
    payload = body(parts)
    print(f"body: {len(payload) / 1e6:.1f} MB, {len(parts)} parts")
    for chunk in (64 * 1024, 1024 * 1024):
        for to_disk in (False, True):
            line = []
            for name, parse in (("ours", ours), ("python-multipart", theirs)):
                seconds, handler = timed(parse, payload, chunk, to_disk, args.rounds)
                assert handler.parts == len(parts), (name, handler.parts)
                line.append(
                    f"{name} {seconds * 1000:7.1f} ms ({len(payload) / seconds / 1e9:.2f} GB/s)"
                )
            case = f"{chunk // 1024} KiB chunks, {'to disk' if to_disk else 'count only'}"
            print(f"{case:28}: " + " | ".join(line))
    edge_cases(parts)


if __name__ == "__main__":
    main()

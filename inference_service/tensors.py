"""Tensors on the wire: the Open Inference Protocol v2 JSON format and binary data extension.

The JSON form (KServe "V2 inference protocol", Triton's HTTP/REST API) carries a tensor as
``{"name", "shape", "datatype", "data"}`` with ``data`` flattened in row-major order (nested
lists are accepted too). The binary tensor data extension (Triton; KServe supports it too)
puts the raw little-endian bytes after the JSON header instead: the body is the JSON header
followed by each binary tensor in order, the header's length is given in the
``Inference-Header-Content-Length`` HTTP header and each tensor has
``"parameters": {"binary_data_size": N}``. 52 M voxels are 200 MB as bytes and about 1 GB as
JSON text, so the remote backend uses the binary form.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference_service.errors import BadRequestError

HEADER_LENGTH = "Inference-Header-Content-Length"
#: numpy's index type (intp) holds no dimension larger than this.
_MAX_DIMENSION = 2**63 - 1

#: OIP datatype -> numpy dtype (little-endian). BYTES (strings) is not supported.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def datatype_of(array: np.ndarray) -> str:
    for name, dtype in DATATYPES.items():
        if array.dtype == dtype:
            return name
    raise BadRequestError(f"tensors of dtype {array.dtype} cannot be sent")


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the OIP metadata describes it (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def check(self, array: np.ndarray) -> None:
        """Raise BadRequestError naming this input when ``array`` does not fit it."""
        expected = DATATYPES.get(self.datatype)
        if expected is not None and array.dtype != expected:
            raise BadRequestError(
                f"input {self.name!r}: datatype {datatype_of(array)} given, "
                f"{self.datatype} expected"
            )
        if len(array.shape) != len(self.shape) or any(
            want >= 0 and want != got for want, got in zip(self.shape, array.shape, strict=True)
        ):
            raise BadRequestError(
                f"input {self.name!r}: shape {list(array.shape)} given, {list(self.shape)} expected"
                " (-1: any size)"
            )


def decode_tensor(entry: Any, binary: memoryview | None) -> tuple[str, np.ndarray]:
    """One ``inputs``/``outputs`` entry (and its binary part, if any) -> (name, array)."""
    if not isinstance(entry, dict):
        raise BadRequestError("each tensor must be an object with name, shape, datatype, data")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequestError("tensor: 'name' must be a non-empty string")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_integer(d) and d >= 0 for d in shape):
        raise BadRequestError(f"tensor {name!r}: 'shape' must be a list of non-negative integers")
    datatype = entry.get("datatype")
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequestError(
            f"tensor {name!r}: datatype {datatype!r} is not one of {sorted(DATATYPES)}"
        )
    # In Python integers: numpy's int64 product of [10**20] overflows (an OverflowError, or a
    # wrapped count that a forged data length could match). A count this large matches no
    # data given and is refused below; a dimension numpy cannot index is refused here.
    if any(d > _MAX_DIMENSION for d in shape):
        raise BadRequestError(f"tensor {name!r}: shape {shape} has a dimension over 2**63 - 1")
    count = math.prod(shape)
    if binary is not None:
        if len(binary) != count * dtype.itemsize:
            raise BadRequestError(
                f"tensor {name!r}: {len(binary)} bytes of binary data for shape {shape} "
                f"of {datatype} ({count * dtype.itemsize} bytes expected)"
            )
        return name, _reshaped(name, np.frombuffer(binary, dtype=dtype), shape)
    if not isinstance(entry.get("data"), list):
        raise BadRequestError(f"tensor {name!r}: 'data' must be a list (row-major, or nested)")
    try:
        array = np.asarray(entry["data"], dtype=dtype)
    except (TypeError, ValueError, OverflowError) as error:  # 1e300 as UINT8: OverflowError
        raise BadRequestError(f"tensor {name!r}: data is not {datatype}: {error}") from None
    if array.size != count:
        raise BadRequestError(
            f"tensor {name!r}: {array.size} values given for shape {shape} ({count} expected)"
        )
    return name, _reshaped(name, array, shape)


def _reshaped(name: str, array: np.ndarray, shape: list[int]) -> np.ndarray:
    """``array`` in ``shape``; a 400 when numpy cannot make that shape (an empty tensor whose
    other dimensions multiply past what numpy indexes: "array is too big")."""
    try:
        return array.reshape(shape)
    except (ValueError, TypeError) as error:
        raise BadRequestError(f"tensor {name!r}: shape {shape}: {error}") from None


@dataclass(frozen=True)
class InferRequest:
    inputs: dict[str, np.ndarray]
    #: Requested outputs (None: all) and whether each should come back as binary data.
    outputs: dict[str, bool] | None
    request_id: str | None
    #: Triton's request-level ``"parameters": {"binary_data_output": true}``: every output binary.
    binary_outputs: bool = False


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an infer request body (JSON, or JSON + binary tensors)."""
    if header_length is not None:
        try:
            json_length = int(header_length)
        except ValueError:
            raise BadRequestError(f"{HEADER_LENGTH} must be an integer") from None
        if not 0 < json_length <= len(body):
            raise BadRequestError(f"{HEADER_LENGTH} {json_length} exceeds the body")
    else:
        json_length = len(body)
    try:
        header = json.loads(body[:json_length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequestError(f"request body is not valid JSON: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise BadRequestError("request must be an object with an 'inputs' list")
    # The request's own fields first (cheap, and a bad one is named whatever the tensors are):
    # each is of the type the protocol gives it, or absent; never silently ignored.
    request_id = header.get("id")
    if "id" in header and not isinstance(request_id, str):  # null too: OIP says a string
        raise BadRequestError("'id' must be a string")
    binary_outputs = _flag(_parameters(header, "request"), "binary_data_output")
    outputs = _requested_outputs(header)
    view = memoryview(body)
    offset = json_length
    inputs: dict[str, np.ndarray] = {}
    for entry in header["inputs"]:
        if not isinstance(entry, dict):
            raise BadRequestError("each tensor must be an object with name, shape, datatype, data")
        size = _parameters(entry, f"input {entry.get('name')!r}").get("binary_data_size")
        binary = None
        if size is not None:
            if not _is_integer(size) or size < 0 or offset + size > len(body):
                raise BadRequestError("binary_data_size does not fit the request body")
            binary = view[offset : offset + size]
            offset += size
        name, array = decode_tensor(entry, binary)
        if name in inputs:
            raise BadRequestError(f"input {name!r} given twice")
        inputs[name] = array
    return InferRequest(inputs, outputs, request_id, binary_outputs)


def _requested_outputs(header: dict[str, Any]) -> dict[str, bool] | None:
    """The outputs asked for (None: all) and whether each comes back binary."""
    if "outputs" not in header:
        return None
    if not isinstance(header["outputs"], list):
        raise BadRequestError("'outputs' must be a list")
    outputs = {}
    for entry in header["outputs"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BadRequestError("each requested output must be an object with a 'name'")
        parameters = _parameters(entry, f"output {entry['name']!r}")
        outputs[entry["name"]] = _flag(parameters, "binary_data")
    return outputs


def _parameters(entry: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequestError(f"{what}: 'parameters' must be an object")
    return parameters


def _flag(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise BadRequestError(f"parameter {name!r} must be true or false")
    return value


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def encode_tensors(
    header: dict[str, Any], tensors: dict[str, np.ndarray], binary: dict[str, bool], key: str
) -> tuple[bytes, int | None]:
    """Put ``tensors`` into ``header[key]``; returns (body, JSON header length or None)."""
    entries = []
    chunks: list[bytes] = []
    for name, array in tensors.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
        }
        if binary.get(name, False):
            raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    header[key] = entries
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return encoded, None
    return b"".join([encoded, *chunks]), len(encoded)

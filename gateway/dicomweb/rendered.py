"""WADO-RS rendered resources (PS3.18 10.4.1.1.3) and thumbnails (PS3.18 10.4.1.1.4).

Images the embedded store holds are rendered here as a viewer shows them: the Modality LUT
(Rescale Slope/Intercept, PS3.3 C.11.1), then the VOI window (PS3.3 C.11.2: the ``window``
query parameter, else the instance's first Window Center/Width, else the range of the
pixel values), MONOCHROME1 inverted, scaled to ``viewport`` (PS3.18 8.3.5.1.3) and encoded
as JPEG (the default) or PNG (PS3.18 Table 8.7.4-1). Colour images are shown as stored
(RGB after any YBR conversion), windowing applies to greyscale only.

A thumbnail is the rendered image of an instance fitted into ``THUMBNAIL_SIZE`` (or the
``viewport``); for a series it is that of a representative instance (the middle one that has
pixel data), for a study that of the first series that has one. With a PACS configured, the
routes follow the read rule of ``gateway/dicomweb/sources.py`` like every other read.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import anyio.to_thread
import numpy as np
import pydicom
import structlog
from PIL import Image
from pydicom.pixels import apply_rescale, pixel_array
from starlette.requests import Request
from starlette.responses import Response

from gateway.dicomweb.errors import DicomWebError
from gateway.dicomweb.negotiation import asked, media_ranges
from gateway.dicomweb.stores import store_of
from gateway.dicomweb.wado import held_records
from gateway.store import EmbeddedStore, InstanceRecord

log = structlog.get_logger(__name__)

#: A thumbnail fits into this square unless a viewport is given (OHIF shows them ~128 px).
THUMBNAIL_SIZE = 128
#: The largest viewport side rendered: a bigger one would cost memory for no display.
MAX_VIEWPORT = 4096
#: The media types a rendered resource is given in; the first is the default (PS3.18 8.7.4).
RENDERED_TYPES = ("image/jpeg", "image/png")
_PIL_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG"}


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): center, width, and the function applied."""

    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True)
class Rendering:
    """What a request asks for: the media type, the viewport, the window."""

    media_type: str
    viewport: tuple[int | None, int | None] | None
    window: Window | None


def choose_rendered_type(request: Request) -> str:
    """The first ``Accept`` range satisfiable as JPEG or PNG (JPEG for wildcards), else 406."""
    for media in media_ranges(request):
        if media.mime in RENDERED_TYPES:
            return media.mime
        if media.mime in ("*/*", "image/*"):
            return RENDERED_TYPES[0]
    raise DicomWebError(
        406,
        f"rendered images are available as {' or '.join(RENDERED_TYPES)} "
        f"(asked for: {asked(request)})",
    )


def _viewport(text: str | None) -> tuple[int | None, int | None] | None:
    """``viewport=vw,vh`` (PS3.18 8.3.5.1.3); either side may be empty (kept in proportion).
    The source-region form (``vw,vh,sx,sy,sw,sh``) is not supported: 400."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise DicomWebError(400, "viewport must be 'width,height' (pixels)")
    sides: list[int | None] = []
    for part in parts:
        if not part.strip():
            sides.append(None)
            continue
        try:
            side = int(part)
        except ValueError:
            raise DicomWebError(400, f"viewport side {part!r} is not a whole number") from None
        if not 1 <= side <= MAX_VIEWPORT:
            raise DicomWebError(400, f"viewport sides are from 1 to {MAX_VIEWPORT} pixels")
        sides.append(side)
    if sides == [None, None]:
        raise DicomWebError(400, "viewport needs a width or a height")
    return sides[0], sides[1]


def _window(text: str | None) -> Window | None:
    """``window=center,width,function`` (PS3.18 8.3.5.1.4); function linear or linear-exact."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise DicomWebError(400, "window must be 'center,width,function' (function: linear)")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise DicomWebError(400, "window center and width must be numbers") from None
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise DicomWebError(400, "window width must be a positive number")
    function = parts[2].upper().replace("-", "_")
    if function not in ("LINEAR", "LINEAR_EXACT"):
        raise DicomWebError(400, "window function must be linear or linear-exact")
    return Window(center, width, function)


def rendering_of(request: Request, thumbnail: bool) -> Rendering:
    params = request.query_params
    media_type = choose_rendered_type(request)
    viewport = _viewport(params.get("viewport"))
    if viewport is None and thumbnail:
        viewport = (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    return Rendering(media_type, viewport, _window(params.get("window")))


async def retrieve_rendered(request: Request) -> Response:
    """An instance, or one frame of it, rendered (PS3.18 10.4.1.1.3)."""
    rendering = rendering_of(request, thumbnail=False)
    frame = _frame_number(request)
    record = held_records(request)[0]
    return await _rendered_response(request, record, frame, rendering)


async def retrieve_thumbnail(request: Request) -> Response:
    """A thumbnail of an instance, a series or a study (PS3.18 10.4.1.1.4)."""
    rendering = rendering_of(request, thumbnail=True)
    frame = _frame_number(request)
    records = held_records(request)
    store = store_of(request)
    record = await anyio.to_thread.run_sync(_representative, store, records)
    return await _rendered_response(request, record, frame, rendering)


def _frame_number(request: Request) -> int:
    text = request.path_params.get("frame")
    if text is None:
        return 1
    try:
        number = int(text)
    except ValueError:
        raise DicomWebError(400, "a rendered frame is named by one frame number") from None
    if number < 1:
        raise DicomWebError(400, "frame numbers start at 1")
    return number


def _representative(store: EmbeddedStore, records: list[InstanceRecord]) -> InstanceRecord:
    """The instance shown for a set of instances: per series in order, the middle instance
    that has pixel data (an SR or a KOS in a study has none)."""
    by_series: dict[str, list[InstanceRecord]] = {}
    for record in records:
        by_series.setdefault(record.series_instance_uid, []).append(record)
    for series in by_series.values():
        # A series is usually all images or all not: its middle instance tells which.
        record = series[len(series) // 2]
        try:
            header = pydicom.dcmread(store.path_of(record.path), stop_before_pixels=True)
        except Exception as error:  # an unreadable file shows nothing: try the next series
            log.warning(
                "wado.thumbnail_unreadable",
                sop_instance_uid=record.sop_instance_uid,
                error=repr(error),
            )
            continue
        if "Rows" in header and "Columns" in header:
            return record
    if len(records) == 1:
        raise DicomWebError(404, "the instance has no pixel data to render")
    raise DicomWebError(404, "no instance here has pixel data to render")


async def _rendered_response(
    request: Request, record: InstanceRecord, frame: int, rendering: Rendering
) -> Response:
    store = store_of(request)
    body = await anyio.to_thread.run_sync(render, store, record, frame, rendering)
    return Response(body, media_type=rendering.media_type)


def render(store: EmbeddedStore, record: InstanceRecord, frame: int, rendering: Rendering) -> bytes:
    """The encoded image of one frame of a stored instance; 4xx for what cannot be shown."""
    try:
        return _render(store, record, frame, rendering)
    except DicomWebError:
        raise
    except Exception as error:
        # Pixel attributes the pixel handlers refuse (a Bits Allocated of 7, Rows of 0...):
        # the instance is stored as received, but it cannot be shown as an image.
        log.warning(
            "wado.cannot_render", sop_instance_uid=record.sop_instance_uid, error=repr(error)
        )
        raise DicomWebError(406, f"the instance cannot be rendered as an image: {error}") from None


def _render(
    store: EmbeddedStore, record: InstanceRecord, frame: int, rendering: Rendering
) -> bytes:
    dataset = pydicom.dcmread(store.path_of(record.path))
    if "PixelData" not in dataset or "Rows" not in dataset:
        raise DicomWebError(404, "the instance has no pixel data to render")
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    if frame > count:
        raise DicomWebError(404, f"frame {frame} does not exist (the instance has {count})")
    try:
        pixels = pixel_array(dataset, index=frame - 1)
    except Exception as error:  # a codec missing or failing: the image cannot be shown
        raise DicomWebError(
            406,
            f"the pixel data (transfer syntax {record.transfer_syntax_uid}) cannot be decoded "
            f"for rendering: {error}",
        ) from None
    image = _to_8_bit(dataset, pixels, rendering.window)
    picture = Image.fromarray(image)
    if rendering.viewport is not None:
        picture = picture.resize(
            _fitted(picture.size, rendering.viewport), Image.Resampling.LANCZOS
        )
    output = io.BytesIO()
    if rendering.media_type == "image/jpeg":
        picture.save(output, "JPEG", quality=90)
    else:
        picture.save(output, _PIL_FORMAT[rendering.media_type])
    return output.getvalue()


def _to_8_bit(dataset: pydicom.Dataset, pixels: np.ndarray, window: Window | None) -> np.ndarray:
    """Display values 0..255: Modality LUT, VOI window, polarity (PS3.3 C.11)."""
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if not photometric.startswith("MONOCHROME"):
        # Colour (pixel_array already converted YBR to RGB): scale stored bits to 8.
        if pixels.ndim != 3:
            raise DicomWebError(406, f"cannot render {photometric} pixel data")
        bits = int(dataset.get("BitsStored", 8) or 8)
        if bits > 8:
            pixels = pixels >> (bits - 8)
        return np.clip(pixels, 0, 255).astype(np.uint8)
    values = np.asarray(apply_rescale(pixels, dataset), dtype=np.float64)
    if window is None:
        window = _stored_window(dataset) or _range_window(values)
    if window.function == "LINEAR_EXACT":
        low = window.center - window.width / 2
        scaled = (values - low) / window.width
    else:
        # PS3.3 C.11.2.1.2.1: linear with the center and width offset by 0.5 and 1.
        low = window.center - 0.5 - (window.width - 1) / 2
        scaled = (values - low) / max(window.width - 1, 1e-9)
    display = np.clip(scaled, 0.0, 1.0) * 255.0
    if photometric == "MONOCHROME1":
        display = 255.0 - display
    return np.rint(display).astype(np.uint8)


def _stored_window(dataset: pydicom.Dataset) -> Window | None:
    """The instance's first Window Center/Width (PS3.3 C.11.2), if usable."""
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center_value = float(
            center[0] if isinstance(center, pydicom.multival.MultiValue) else center
        )
        width_value = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
    except (TypeError, ValueError, IndexError):
        return None
    if width_value <= 0:
        return None
    function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return Window(
        center_value, width_value, "LINEAR_EXACT" if function == "LINEAR_EXACT" else "LINEAR"
    )


def _range_window(values: np.ndarray) -> Window:
    """A window over the whole range of the values, for an image that names none."""
    low, high = float(values.min()), float(values.max())
    return Window((low + high) / 2, max(high - low, 1.0), "LINEAR_EXACT")


def _fitted(size: tuple[int, int], viewport: tuple[int | None, int | None]) -> tuple[int, int]:
    """The image's size scaled to fit in the viewport, its aspect ratio kept (PS3.18
    8.3.5.1.3: a missing side follows from the other)."""
    width, height = size
    wanted_width, wanted_height = viewport
    scales = []
    if wanted_width is not None:
        scales.append(wanted_width / width)
    if wanted_height is not None:
        scales.append(wanted_height / height)
    scale = min(scales)
    return max(1, round(width * scale)), max(1, round(height * scale))

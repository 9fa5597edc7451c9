"""Errors for bad input: each names the field at fault and the reason.

Every class is a :class:`ValueError`, so a caller that only wants "bad input" catches that. They
are raised before any DICOM is built. Constructing a model directly from bad data raises
pydantic's ``ValidationError`` (also a ``ValueError``, its ``loc`` names the field);
:meth:`sr_writer.Findings.parse` turns that into the classes below.
"""

from __future__ import annotations


class FindingsError(ValueError):
    """Bad findings: ``field`` is the dotted path of the field at fault (``findings.0.region``)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class MissingValueError(FindingsError):
    """A required value is absent (e.g. a measurement without a unit)."""


class NonFiniteValueError(FindingsError):
    """A numeric value is NaN or infinite."""


class ValueTooLongError(FindingsError):
    """A text value is longer than its DICOM value representation allows."""


class InvalidValueError(FindingsError):
    """Any other value that the model or the standard does not allow."""


class ReferenceNotInEvidenceError(FindingsError):
    """A finding refers to an image (or frame of reference) that is not in the evidence."""


class GraphicOutsideImageError(FindingsError):
    """A 2D graphic has a point outside the image it is drawn on."""


class EmptyMaskError(FindingsError):
    """A segmentation mask (or one of its segments) has no foreground pixel."""


class NotMeasurementReportError(ValueError):
    """The dataset is not a TID 1500 Measurement Report SR (so it cannot be read as findings)."""

"""The inference service: a model repository served over the Open Inference Protocol v2, and a
study-level analysis API that writes DICOM SR/SEG (see the README and DESIGN.md)."""

__version__ = "0.1.0"

"""Any TID 1500 Measurement Report SR -> :class:`sr_writer.Findings`."""

from __future__ import annotations

from pydicom.dataset import Dataset

from sr_writer.findings import Findings


def read_findings(dataset: Dataset) -> Findings:
    """The findings of a TID 1500 SR (ours or a third party's); optional items may be absent.

    Raises :class:`sr_writer.NotMeasurementReportError` for an SR that is not TID 1500.
    """
    raise NotImplementedError("read_findings: implementation follows")

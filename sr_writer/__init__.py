"""sr_writer: AI findings to DICOM SR (TID 1500) and SEG, and back. A library: no server."""

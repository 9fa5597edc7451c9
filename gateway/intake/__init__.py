"""Intake paths besides STOW-RS: a DIMSE C-STORE SCP, and polling of the upstream PACS.

Both land in the embedded store exactly as STOW-RS does (an IngestBatch each), so stability,
routing and the findings index see every instance whatever path it came by.
"""

"""The gateway: DICOMweb server, embedded store, pipeline, findings index and federated API."""

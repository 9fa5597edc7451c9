"""The inference service: a model repository served over the Open Inference Protocol,
and a study-level analysis API."""

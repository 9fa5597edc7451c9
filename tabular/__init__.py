"""A training plan's tabular features and the rows they are computed from.

A library shared by the site and the inference service (neither imports the other): the flat
rows the findings index keeps of a TID 1500 or clinical-information SR
(:mod:`tabular.records`), the demographics read from a header (:mod:`tabular.demographics`),
a plan's feature definitions (:mod:`tabular.features`) and how a feature's value is computed
from a unit's rows (:mod:`tabular.extraction`). The site's training table
(``gateway.learning.table``) and the inference service's tabular models
(``inference_service.tabular``) both compute features with it, so a model trained across sites
sees at inference exactly the inputs it was trained on.
"""

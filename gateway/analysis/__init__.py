"""Federated analysis, the site's side: a consortium's model run over a cohort here.

A hub sends an analysis (a model bundle, identified by its sha256, and a cohort definition);
it waits at the site until the site's admin approves the bundle (:mod:`gateway.approvals`, the
mechanism federated learning's plans use too) or the site trusts the hub's signing key to
approve on its behalf. Once approved, the site installs the model into its own inference
service under a version of its own, selects the cohort's studies, and runs them as research
jobs that never delay clinical work; an unvalidated model's results stay out of the clinical
PACS. The hub sees progress as counts and results as aggregates through the privacy layer.
"""

"""Federated learning, the site's side: training plans, their approval, and the site's table.

A training plan (:mod:`gateway.learning.plan`) says what to learn from which cohort; a site's
admin approves it by its sha256 (:mod:`gateway.learning.approvals`) before the site's Flower
SuperNode runs it; the site builds its training table from its own findings index
(:mod:`gateway.learning.table`). Only model parameters and aggregate metrics leave the site.
The hub's side (the Flower ServerApp, strategies, pooled evaluation, export) lives in
:mod:`hub.learning`.
"""

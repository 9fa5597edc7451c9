"""Federated learning, the hub's side (issue 16): the Flower ServerApp and its strategies
(:mod:`hub.learning.server`), the pooled evaluation (:mod:`hub.learning.pooling`), the export of
the final model (:mod:`hub.learning.export`) and the SuperLink side of ``fedgate learn run``
(:mod:`hub.learning.runner`).

The hub never sees a row: it sends a plan and global parameters to the sites' SuperNodes and
receives parameters, row counts and aggregate metrics. It imports no site internals; the plan
and the model families (:mod:`gateway.learning.plan`, :mod:`gateway.learning.models`) are the
language both sides speak.
"""

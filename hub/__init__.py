"""The federation hub: the consortium's side of fedgate (``fedgate hub``).

The hub asks many sites one question and merges their answers (:mod:`hub.app`); it serves the
cohort dashboard against the combined answers. It is a room of its own, with an HTTP boundary to
the sites' side (``gateway.federated``: answering, disclosure control), as the two are separate
processes at run time, usually in separate institutions: the hub imports no site internals
(store, index, queue, PACS client), only the languages both sides speak (the cohort language, the
signed assertions of the analyst, the credentials).
"""

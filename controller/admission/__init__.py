"""Admission: from an AdmissionReview to an answer.

``server`` (HTTPS, probes, metrics) → ``webhook`` (kopf registration, the fast path, the
indexes) → ``pinning`` (the engine: what to pin, keep, skip, warn or deny), which reads
:mod:`controller.policy`, :mod:`controller.sites` and the resolver through Protocols.
"""
